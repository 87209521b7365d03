// The OCR chain (PP-OCR det → cls → rec on the engine) reads real and rendered text.
#include "pipeline/ocr_chain.h"

#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <opencv2/freetype.hpp>
#include <opencv2/imgproc.hpp>

#include "tests/test_util.h"
#include "vision/blob.h"

namespace loom::pipeline {
namespace {

using testing::ModelPath;

class Ocr : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto e = Engine::Create({{.name = "det", .path = ModelPath(testing::kOcrDet)},
                             {.name = "cls", .path = ModelPath(testing::kOcrCls)},
                             {.name = "rec", .path = ModelPath(testing::kOcrRec)}},
                            EngineOptions{.hint = PlanHint::kLatency});
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    OcrOptions options;
    options.keys_path = ModelPath("ppocr_keys_v1.txt");
    auto chain = OcrChain::Create(engine_.get(), options);
    ASSERT_TRUE(chain.ok()) << chain.status();
    chain_ = std::move(*chain);
  }
  static void TearDownTestSuite() {
    chain_.reset();
    engine_.reset();
  }
  static std::string ReadAll(const cv::Mat& image) {
    auto lines = chain_->Run(image);
    EXPECT_TRUE(lines.ok()) << lines.status();
    std::string text;
    for (const OcrLine& l : lines.ok() ? *lines : std::vector<OcrLine>{}) text += l.text + "\n";
    return text;
  }
  static inline std::unique_ptr<Engine> engine_;
  static inline std::unique_ptr<OcrChain> chain_;
};

TEST_F(Ocr, ReadsThePrintedParagraphExactly) {
  auto image = vision::ReadImage(testing::DataPath("imageTextN.png"));
  ASSERT_TRUE(image.ok());
  // What PP-OCR v4 reads in opencv-doc's imageTextN.png (checked by eye against the image).
  EXPECT_EQ(ReadAll(*image),
            "technical details are too complex to cover in the book itself.\n"
            "In teaching our courses, we have found it useful for the students to attempt a number of\n"
            "small implementation projects, which often build on one another, in order to get them used to\n"
            "working with real-world images and the challenges that these present. The students are then\n"
            "asked to choose an individual topic for each of their small-group, final projects. (Sometimes\n"
            "these projects even turn into conference papers!) The exercises at the end of each chapter\n"
            "contain numerous suggestions for smaller mid-term projects, as well as more open-ended\n"
            "problems whose solutions are still active research topics. Wherever possible, I encourage\n"
            "students to try their algorithms on their own personal photographs, since this better motivates\n"
            "them, often leads to creative variants on the problems, and better acquaints them with the\n"
            "variety and complexity of real-world imagery.\n"
            "In formulating and solving computer vision problems, I have often found it useful to draw\n"
            "inspiration from three high-level approaches:\n");
}

TEST_F(Ocr, ReadsTheRotatedParagraph) {
  auto image = vision::ReadImage(testing::DataPath("imageTextR.png"));
  ASSERT_TRUE(image.ok());
  const std::string text = ReadAll(*image);
  // The same paragraph photographed at an angle: every line found, in order.
  for (const char* line : {"technical details are too complex to cover in the book itself.",
                           "In teaching our courses, we have found it useful for the students to attempt a number of",
                           "variety and complexity of real-world imagery."}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n--- read:\n" << text;
  }
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 13);
}

// Words and short lines rendered with TrueType fonts at several sizes; at least 90% of the words
// must come back exactly.
TEST_F(Ocr, ReadsRenderedTextInSeveralFontsAndSizes) {
  const std::vector<std::string> phrases = {
      "Loom runs many models", "invoice 2026", "hello world", "Debian bookworm",
      "ONNX Runtime", "throughput", "latency", "batch size 8", "four cores", "video frame 42",
      "parallel threads", "shared pool", "Deadline exceeded", "quick brown fox", "jumps over",
      "the lazy dog", "Monday morning", "street 17", "green light", "open source",
      "river bank", "coffee", "November 22", "last line"};
  const char* fonts[] = {"DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
                         "DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf"};
  const int sizes[] = {22, 28, 34, 40};
  const int line_height = 64;
  cv::Mat page(static_cast<int>(phrases.size()) * line_height + 40, 760, CV_8UC3, cv::Scalar(255, 255, 255));
  std::map<std::string, cv::Ptr<cv::freetype::FreeType2>> loaded;
  for (size_t i = 0; i < phrases.size(); ++i) {
    const std::string font = std::string("/usr/share/fonts/truetype/dejavu/") + fonts[i % 5];
    if (!loaded.count(font)) {
      loaded[font] = cv::freetype::createFreeType2();
      loaded[font]->loadFontData(font, 0);
    }
    loaded[font]->putText(page, phrases[i], cv::Point(30 + static_cast<int>(i % 3) * 40, 20 + static_cast<int>(i) * line_height),
                          sizes[i % 4], cv::Scalar(0, 0, 0), -1, cv::LINE_AA, false);
  }
  auto lines = chain_->Run(page);
  ASSERT_TRUE(lines.ok()) << lines.status();
  std::multiset<std::string> read;
  std::string all;
  for (const OcrLine& l : *lines) {
    all += l.text + "\n";
    std::istringstream words(l.text);
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
  EXPECT_GE(found * 10, total * 9) << found << "/" << total << " words; missed:" << missed
                                   << "\n--- read:\n" << all;
  std::cerr << "rendered text: " << found << "/" << total << " words read exactly\n";
}

}  // namespace
}  // namespace loom::pipeline
