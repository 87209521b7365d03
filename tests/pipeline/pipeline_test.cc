// The shipped pipelines (pipelines/*.yaml) on real images and video: what they find, that their
// output does not depend on the in-flight window or the plan, and how they fail.
#include "loom/pipeline.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <set>
#include <sstream>

#include "absl/strings/str_split.h"
#include "bench/text_pages.h"
#include "tests/test_util.h"

namespace loom {
namespace {

using testing::ScratchDir;

std::string PipelinePath(const std::string& file) {
  return testing::SourcePath("pipelines/" + file);
}

// Runs `file` with its sinks writing into `dir` (empty: no sinks); returns the records.
absl::StatusOr<std::vector<nlohmann::json>> RecordsWithSinks(const std::string& file,
                                                             PipelineOptions options,
                                                             const std::string& dir) {
  std::vector<nlohmann::json> records;
  options.sinks = !dir.empty();
  if (!dir.empty()) options.output_dir = dir;
  options.on_record = [&](const PipelineRecord& r) {
    records.push_back(nlohmann::json::parse(r.json));
  };
  LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(file, options));
  LOOM_RETURN_IF_ERROR(p->Run().status());
  return records;
}

absl::StatusOr<std::vector<nlohmann::json>> Records(const std::string& file,
                                                    PipelineOptions options) {
  return RecordsWithSinks(file, std::move(options), "");
}

std::vector<std::string> Texts(const nlohmann::json& record) {
  std::vector<std::string> out;
  for (const auto& t : record["text"]) out.push_back(t["text"]);
  return out;
}

TEST(OcrPipeline, ReadsThePrintedParagraphExactly) {
  auto records = Records(PipelinePath("ocr.yaml"), {});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 1u);
  // What PP-OCR v4 reads in opencv-doc's imageTextN.png (checked by eye against the image).
  EXPECT_EQ(
      Texts((*records)[0]),
      (std::vector<std::string>{
          "technical details are too complex to cover in the book itself.",
          "In teaching our courses, we have found it useful for the students to attempt a number "
          "of",
          "small implementation projects, which often build on one another, in order to get them "
          "used to",
          "working with real-world images and the challenges that these present. The students are "
          "then",
          "asked to choose an individual topic for each of their small-group, final projects. "
          "(Sometimes",
          "these projects even turn into conference papers!) The exercises at the end of each "
          "chapter",
          "contain numerous suggestions for smaller mid-term projects, as well as more open-ended",
          "problems whose solutions are still active research topics. Wherever possible, I "
          "encourage",
          "students to try their algorithms on their own personal photographs, since this better "
          "motivates",
          "them, often leads to creative variants on the problems, and better acquaints them with "
          "the",
          "variety and complexity of real-world imagery.",
          "In formulating and solving computer vision problems, I have often found it useful to "
          "draw",
          "inspiration from three high-level approaches:"}));
}

TEST(OcrPipeline, ReadsTheRotatedParagraph) {
  auto records = Records(PipelinePath("ocr.yaml"), {.input = testing::DataPath("imageTextR.png")});
  ASSERT_TRUE(records.ok()) << records.status();
  const std::vector<std::string> lines = Texts((*records)[0]);
  ASSERT_EQ(lines.size(), 13u);
  EXPECT_EQ(lines[0], "technical details are too complex to cover in the book itself.");
  EXPECT_EQ(
      lines[1],
      "In teaching our courses, we have found it useful for the students to attempt a number of");
  EXPECT_EQ(lines[10], "variety and complexity of real-world imagery.");
  // Every word of the paragraph, separated as on the straight page (before the space-aware CTC
  // decoding: "projectswhich oftenbuild", "inorder to getthem"). Punctuation aside: the warped
  // crops lose two commas.
  auto straight = Records(PipelinePath("ocr.yaml"), {.input = testing::DataPath("imageTextN.png")});
  ASSERT_TRUE(straight.ok()) << straight.status();
  const std::vector<std::string> expected = Texts((*straight)[0]);
  ASSERT_EQ(expected.size(), lines.size());
  auto words = [](const std::string& line) {
    std::string letters;
    for (char c : line) letters += (c == ',' ? ' ' : c);
    std::vector<std::string> out = absl::StrSplit(letters, ' ', absl::SkipEmpty());
    return out;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::vector<std::string> got = words(lines[i]), want = words(expected[i]);
    EXPECT_EQ(got, want) << "line " << i << ": " << lines[i];
  }
}

// The annotated page carries what was read: a panel beside the page with each line written where
// its box is, legibly enough that the same OCR pipeline reads it back.
TEST(Annotate, TheOcrPanelReadsBackAsThePage) {
  testing::ScratchDir dir;
  auto records = RecordsWithSinks(PipelinePath("ocr.yaml"), {}, dir.Path("out"));
  ASSERT_TRUE(records.ok()) << records.status();
  const cv::Mat page = cv::imread(testing::DataPath("imageTextN.png"));
  const cv::Mat annotated = cv::imread(dir.Path("out/ocr/frame_000000.jpg"));
  ASSERT_FALSE(annotated.empty());
  ASSERT_EQ(annotated.cols, 2 * page.cols) << "the page, then the panel";
  ASSERT_TRUE(cv::imwrite(dir.Path("panel.png"), annotated.colRange(page.cols, annotated.cols)));
  auto read_back = Records(PipelinePath("ocr.yaml"), {.input = dir.Path("panel.png")});
  ASSERT_TRUE(read_back.ok()) << read_back.status();
  const std::vector<std::string> written = Texts((*records)[0]), read = Texts((*read_back)[0]);
  ASSERT_EQ(read.size(), written.size());
  std::set<std::string> words_written, words_read;
  for (const auto& line : written)
    for (auto w : absl::StrSplit(line, ' ', absl::SkipEmpty()))
      words_written.insert(std::string(w));
  for (const auto& line : read)
    for (auto w : absl::StrSplit(line, ' ', absl::SkipEmpty())) words_read.insert(std::string(w));
  int found = 0;
  for (const auto& w : words_written) found += words_read.count(w) > 0;
  EXPECT_GE(found, static_cast<int>(words_written.size() * 9 / 10))
      << found << " of " << words_written.size();
}

// A face gets its box, its landmarks and a label with its score above the box.
TEST(Annotate, AFaceShowsItsScoreAndLandmarks) {
  testing::ScratchDir dir;
  auto records = RecordsWithSinks(PipelinePath("faces.yaml"), {}, dir.Path("out"));
  ASSERT_TRUE(records.ok()) << records.status();
  const nlohmann::json& face = (*records)[0]["faces"][0];
  const cv::Mat annotated = cv::imread(dir.Path("out/faces/frame_000000.jpg"));
  ASSERT_FALSE(annotated.empty());
  const int x = face["box"][0].get<int>(), y = face["box"][1].get<int>();
  // The label: a green band just above the box's top-left corner with dark text in it.
  const cv::Rect band(x + 2, std::max(0, y - 14), 40, 10);
  int green = 0, dark = 0;
  for (int r = band.y; r < band.y + band.height; ++r) {
    for (int c = band.x; c < band.x + band.width; ++c) {
      const cv::Vec3b p = annotated.at<cv::Vec3b>(r, c);
      green += p[1] > 150 && p[0] < 100 && p[2] < 100;
      dark += p[0] < 80 && p[1] < 80 && p[2] < 80;
    }
  }
  EXPECT_GT(green, band.area() / 4) << "the label's background";
  EXPECT_GT(dark, 10) << "the label's text";
  // Each landmark: a red dot (its centre pixel, rounded; JPEG blurs the edges).
  for (const auto& k : face["keypoints"]) {
    const cv::Point c(static_cast<int>(std::lround(k[0].get<double>())),
                      static_cast<int>(std::lround(k[1].get<double>())));
    const cv::Vec3b p = annotated.at<cv::Vec3b>(c);
    EXPECT_GT(p[2], 150) << c;
    EXPECT_LT(p[1], 100) << c;
  }
}

// Words and short lines rendered with TrueType fonts (Debian's fonts-dejavu-core) at several
// sizes; at least 90% of the words come back exactly.
TEST(OcrPipeline, ReadsRenderedTextInSeveralFontsAndSizes) {
  const std::vector<std::string>& phrases = bench::SamplePhrases();
  auto page = bench::RenderTextPage(phrases);
  ASSERT_TRUE(page.ok()) << page.status();
  ScratchDir dir;
  ASSERT_TRUE(cv::imwrite(dir.Path("page.png"), *page));
  auto records = Records(PipelinePath("ocr.yaml"), {.input = dir.Path("page.png")});
  ASSERT_TRUE(records.ok()) << records.status();
  std::multiset<std::string> read;
  std::string all;
  for (const std::string& line : Texts((*records)[0])) {
    all += line + "\n";
    std::istringstream words(line);
    for (std::string w; words >> w;) read.insert(w);
  }
  int total = 0, found = 0;
  std::string missed;
  for (const std::string& phrase : phrases) {
    std::istringstream words(phrase);
    for (std::string w; words >> w; ++total) {
      auto it = read.find(w);
      if (it != read.end()) {
        read.erase(it);
        ++found;
      } else {
        missed += " " + w;
      }
    }
  }
  EXPECT_GE(found * 10, total * 9)
      << found << "/" << total << " words; missed:" << missed << "\n--- read:\n"
      << all;
  std::cerr << "rendered text: " << found << "/" << total << " words read exactly\n";
}

TEST(OcrPipeline, RenderingWithoutTheFontsNamesTheMissingFile) {
  auto page = bench::RenderTextPage(bench::SamplePhrases(), 0, "/nonexistent/fonts");
  ASSERT_FALSE(page.ok());
  EXPECT_EQ(page.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(page.status().message().find("/nonexistent/fonts/DejaVuSans.ttf"), std::string::npos)
      << page.status();
}

TEST(FacesPipeline, FindsTheFaceInMessi5InsideItsRegion) {
  auto records = Records(PipelinePath("faces.yaml"), {});
  ASSERT_TRUE(records.ok()) << records.status();
  const auto& faces = (*records)[0]["faces"];
  ASSERT_EQ(faces.size(), 1u) << faces.dump();
  // The face in messi5.jpg (548x342) lies within x 205..275, y 85..140 (determined by eye on the
  // annotated image).
  const auto box = faces[0]["box"].get<std::vector<double>>();
  EXPECT_GE(box[0], 205);
  EXPECT_GE(box[1], 85);
  EXPECT_LE(box[2], 275);
  EXPECT_LE(box[3], 140);
  EXPECT_GT(faces[0]["score"].get<double>(), 0.8);
  ASSERT_EQ(faces[0]["keypoints"].size(), 6u);
  for (const auto& k : faces[0]["keypoints"]) {
    EXPECT_GE(k[0].get<double>(), 205);
    EXPECT_LE(k[0].get<double>(), 275);
  }
}

TEST(FacesPipeline, FindsNoFaceInAPageOfText) {
  auto records =
      Records(PipelinePath("faces.yaml"), {.input = testing::DataPath("imageTextN.png")});
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ((*records)[0]["faces"].size(), 0u) << (*records)[0].dump();
}

TEST(FacesPipeline, FindsTheFaceInMostFramesOfMegamindInOrder) {
  auto records = Records(PipelinePath("faces.yaml"),
                         {.input = testing::DataPath("Megamind.avi"), .limit = 30});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 30u);
  int with_face = 0;
  for (size_t i = 0; i < records->size(); ++i) {
    EXPECT_EQ((*records)[i]["frame"], i) << "in frame order";
    EXPECT_EQ((*records)[i]["source"], "Megamind.avi#" + std::to_string(i));
    with_face += (*records)[i]["faces"].empty() ? 0 : 1;
  }
  EXPECT_GE(with_face, 27);
}

// The annotated video runs at its source's frame rate (the sink's `fps` is left at 0).
TEST(FacesPipeline, TheAnnotatedVideoKeepsTheSourcesFrameRate) {
  testing::ScratchDir dir;
  const std::string input = testing::DataPath("Megamind.avi");
  auto records =
      RecordsWithSinks(PipelinePath("faces.yaml"), {.input = input, .limit = 5}, dir.Path("out"));
  ASSERT_TRUE(records.ok()) << records.status();
  cv::VideoCapture source(input, cv::CAP_FFMPEG),
      written(dir.Path("out/faces.avi"), cv::CAP_FFMPEG);
  ASSERT_TRUE(source.isOpened() && written.isOpened());
  const double fps = source.get(cv::CAP_PROP_FPS);
  ASSERT_GT(fps, 0);
  ASSERT_NE(fps, 25) << "the source's rate must differ from the fallback for this test to tell";
  EXPECT_NEAR(written.get(cv::CAP_PROP_FPS), fps, 0.01);
  EXPECT_EQ(written.get(cv::CAP_PROP_FRAME_COUNT), 5);
}

// The same records whatever the in-flight window and the engine's plan (timings aside).
TEST(VideoMultiPipeline, OutputDoesNotDependOnInFlightOrInstances) {
  auto strip = [](std::vector<nlohmann::json> records) {
    for (auto& r : records) r.erase("timings_ms");
    return records;
  };
  auto one = Records(PipelinePath("video-multi.yaml"), {.in_flight = 1, .limit = 6, .cores = 1});
  auto eight = Records(PipelinePath("video-multi.yaml"), {.in_flight = 8, .limit = 6});
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(eight.ok()) << eight.status();
  ASSERT_EQ(one->size(), 6u);
  EXPECT_EQ(strip(*one), strip(*eight));
  const auto& first = (*one)[0];
  EXPECT_TRUE(first.contains("faces") && first.contains("lines") && first.contains("text_boxes"))
      << first.dump();
  EXPECT_GT(first["lines"].size(), 5u) << "vtest.avi's first frame has plenty of straight edges";
  EXPECT_TRUE(first["timings_ms"].contains("lines"));
}

// ---------------------------------------------------------------------------------------------
// Bad input: errors at load name the file, line, column and the culprit.

absl::Status LoadError(const std::string& yaml) {
  ScratchDir dir;
  const std::string path = dir.Write("p.yaml", yaml);
  auto p = Pipeline::Load(path, {.sinks = false});
  return p.ok() ? absl::OkStatus() : p.status();
}

std::string Models() {
  return "models:\n  - {name: face, path: " + testing::ModelPath(testing::kBlazeFaceBack) +
         "}\nsource: {path: " + testing::DataPath("messi5.jpg") + "}\n";
}

TEST(PipelineErrors, YamlSyntaxGivesLineAndColumn) {
  const absl::Status s = LoadError(Models() + "nodes:\n  - {name: a, type: [preprocess\n");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("p.yaml:6:"), std::string::npos) << s;
}

TEST(PipelineErrors, UnknownNodeTypeListsTheKnownOnes) {
  const absl::Status s = LoadError(Models() + "nodes:\n  - {name: a, type: resize}\n");
  EXPECT_NE(s.message().find(
                "p.yaml:5:21: node 'a': unknown node type 'resize' (known: angle, blazeface, "
                "box_crop, classify, crop, ctc, db, infer, landmarks, letterbox, mlsd, preprocess, "
                "text_batch, topk, yolo)"),
            std::string::npos)
      << s;
}

TEST(PipelineErrors, UnknownModelPortAndTypeAreNamed) {
  absl::Status s = LoadError(Models() + "nodes:\n  - {name: f, type: preprocess, model: faces}\n");
  EXPECT_NE(s.message().find("node 'f': unknown model 'faces'"), std::string::npos) << s;
  s = LoadError(Models() + "nodes:\n  - {name: f, type: infer, model: face, input: face_in}\n");
  EXPECT_NE(s.message().find("p.yaml:5:48: node 'f': 'face_in' is not an earlier node"),
            std::string::npos)
      << s;
  s = LoadError(Models() +
                "nodes:\n  - {name: f, type: preprocess, model: face}\n"
                "  - {name: d, type: blazeface, input: f, model: face}\n");
  EXPECT_NE(s.message().find(
                "node 'd': input 'input' expects model outputs, but node 'f' produces tensor"),
            std::string::npos)
      << s;
}

TEST(PipelineErrors, ShapeMismatchIsFoundAtLoadNamingBothShapes) {
  const absl::Status s =
      LoadError(Models() +
                "nodes:\n  - {name: small, type: preprocess, size: [128, 128], layout: NHWC}\n"
                "  - {name: f, type: infer, model: face, input: small}\n");
  EXPECT_NE(
      s.message().find("node 'f': node 'small' produces [1,128,128,3] f32 but model 'face' input "
                       "'input:0' expects [1,256,256,3] f32"),
      std::string::npos)
      << s;
}

TEST(PipelineErrors, UnknownKeysAndBadSourcesAreNamed) {
  absl::Status s = LoadError("modles: []\n");
  EXPECT_NE(s.message().find("unknown key 'modles'"), std::string::npos) << s;
  // A bad source is found at load, before any model is loaded and measured.
  ScratchDir dir;
  const std::string fake = dir.Write("clip.avi", "not a video");
  auto p = Pipeline::Load(PipelinePath("faces.yaml"), {.input = fake, .sinks = false});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            "video '" + fake + "' cannot be opened (not a video OpenCV reads, or corrupt)");
  p = Pipeline::Load(PipelinePath("faces.yaml"), {.input = dir.Path("none/*.jpg"), .sinks = false});
  EXPECT_EQ(p.status().message(), "source '" + dir.Path("none/*.jpg") + "' matches no image");
}

TEST(PipelineErrors, AnUnreadableImageGetsItsErrorRecordAndTheOthersComplete) {
  ScratchDir dir;
  std::filesystem::copy_file(testing::DataPath("messi5.jpg"), dir.Path("a.jpg"));
  dir.Write("b.jpg", "this is not a JPEG");
  std::filesystem::copy_file(testing::DataPath("messi5.jpg"), dir.Path("c.jpg"));
  std::vector<nlohmann::json> records;
  PipelineOptions options{.input = dir.Path(""), .sinks = false};
  options.on_record = [&](const PipelineRecord& r) {
    records.push_back(nlohmann::json::parse(r.json));
  };
  auto p = Pipeline::Load(PipelinePath("faces.yaml"), options);
  ASSERT_TRUE(p.ok()) << p.status();
  auto summary = (*p)->Run();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->frames, 3);
  EXPECT_EQ(summary->failed, 1);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0]["faces"].size(), 1u);
  EXPECT_EQ(records[1]["error"], "image file '" + dir.Path("b.jpg") +
                                     "' cannot be decoded (not an image OpenCV reads, or corrupt)");
  EXPECT_FALSE(records[1].contains("faces"));
  EXPECT_EQ(records[2]["faces"].size(), 1u);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

TEST(FacesPipeline, LetterboxedInputMapsFacesBackToTheImage) {
  ScratchDir dir;
  const std::string yaml = dir.Write(
      "letterbox.yaml",
      "models:\n  - {name: face, path: " + testing::ModelPath(testing::kBlazeFaceBack) +
          "}\n"
          "source: {path: " +
          testing::DataPath("messi5.jpg") +
          "}\n"
          "nodes:\n"
          "  - {name: face_in, type: preprocess, model: face, letterbox: true, pad: 127.5, scale: "
          "0.0078431, mean: 127.5}\n"
          "  - {name: face, type: infer, model: face, input: face_in}\n"
          "  - {name: faces, type: blazeface, input: face, model: face, preprocess: face_in}\n");
  auto records = Records(yaml, {});
  ASSERT_TRUE(records.ok()) << records.status();
  const auto& faces = (*records)[0]["faces"];
  ASSERT_EQ(faces.size(), 1u) << faces.dump();
  const auto box = faces[0]["box"].get<std::vector<double>>();  // the same region as unpadded
  EXPECT_GE(box[0], 205);
  EXPECT_GE(box[1], 85);
  EXPECT_LE(box[2], 275);
  EXPECT_LE(box[3], 140);
}

}  // namespace
}  // namespace loom
