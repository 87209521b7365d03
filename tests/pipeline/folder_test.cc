// Folder jobs: YOLO decoding and its letterbox on synthetic tensors whose answer is known, then
// folders of real photos through pipelines/faces-folder.yaml and detect-folder.yaml — one record
// per image, bad images as error records, annotated copies by name, and --resume recording every
// image exactly once.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "loom/pipeline.h"
#include "pipeline/node.h"
#include "pipeline/services.h"
#include "tests/test_util.h"
#include "vision/yolo.h"

namespace loom {
namespace {

using testing::ScratchDir;
namespace fs = std::filesystem;

float Logit(float p) { return std::log(p / (1 - p)); }

// A raw YOLO map [1, A*(5+C), H, W] with every objectness at 0.001 (nothing passes).
Tensor EmptyMap(int anchors, int classes, int h, int w) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {1, anchors * (5 + classes), h, w});
  float* v = t.data_as<float>();
  std::fill(v, v + t.element_count(), Logit(0.001f));
  return t;
}
// Sets anchor `a` of cell (y, x): box offsets from sigmoids (sx, sy, sw, sh), objectness, and one
// class's probability.
void Put(Tensor& t, int classes, int a, int y, int x, float sx, float sy, float sw, float sh,
         float obj, int cls, float p) {
  const int64_t h = t.dim(2), w = t.dim(3), cells = h * w, cell = y * w + x;
  float* base = t.data_as<float>() + a * (5 + classes) * cells;
  const float values[] = {Logit(sx), Logit(sy), Logit(sw), Logit(sh), Logit(obj)};
  for (int k = 0; k < 5; ++k) base[k * cells + cell] = values[k];
  base[(5 + cls) * cells + cell] = Logit(p);
}

vision::YoloOptions TwoStrides() {
  vision::YoloOptions o;
  o.strides = {8, 16};
  o.anchors = {{10, 20, 30, 40}, {50, 60, 70, 80}};  // two anchors per stride
  return o;
}

TEST(YoloDecode, DecodesARawHeadAsYolov5Does) {
  Tensor p3 = EmptyMap(2, 3, 4, 4), p4 = EmptyMap(2, 3, 2, 2);
  // Stride 8, anchor 1 (30x40), cell (y=2, x=1): centre ((0.5*2 - 0.5 + 1) * 8, (0.75*2 - 0.5 + 2)
  // * 8) = (12, 24); size ((0.5*2)^2 * 30, (0.25*2)^2 * 40) = (30, 10). Score 0.9 * 0.8.
  Put(p3, 3, 1, 2, 1, 0.5f, 0.75f, 0.5f, 0.25f, 0.9f, 2, 0.8f);
  auto boxes = vision::DecodeYolo({{"p3", p3}, {"p4", p4}}, TwoStrides());
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 1u);
  const vision::Detection& d = (*boxes)[0];
  EXPECT_EQ(d.class_id, 2);
  EXPECT_NEAR(d.score, 0.72f, 1e-5);
  EXPECT_NEAR(d.x_min, 12 - 15, 1e-4);
  EXPECT_NEAR(d.x_max, 12 + 15, 1e-4);
  EXPECT_NEAR(d.y_min, 24 - 5, 1e-4);
  EXPECT_NEAR(d.y_max, 24 + 5, 1e-4);
}

TEST(YoloDecode, NmsIsPerClassAndScoresBelowTheThresholdGo) {
  Tensor p3 = EmptyMap(2, 3, 4, 4), p4 = EmptyMap(2, 3, 2, 2);
  Put(p3, 3, 0, 1, 1, 0.5f, 0.5f, 0.5f, 0.5f, 0.95f, 0, 0.9f);  // a box of class 0...
  Put(p3, 3, 1, 1, 1, 0.5f, 0.5f, 0.49f, 0.49f, 0.90f, 0,
      0.9f);  // ...nearly the same box, class 0: suppressed
  Put(p4, 3, 0, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, 0.9f, 1, 0.9f);  // elsewhere, class 1
  Put(p4, 3, 1, 1, 1, 0.5f, 0.5f, 0.5f, 0.5f, 0.9f, 1, 0.2f);  // 0.9 x 0.2 = 0.18 < 0.25: dropped
  vision::YoloOptions o = TwoStrides();
  o.anchors = {{10, 10, 10, 10}, {50, 60, 70, 80}};  // the two class-0 boxes overlap fully
  auto boxes = vision::DecodeYolo({{"p3", p3}, {"p4", p4}}, o);
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 2u);
  EXPECT_EQ((*boxes)[0].class_id, 0);
  EXPECT_NEAR((*boxes)[0].score, 0.95f * 0.9f, 1e-5);
  EXPECT_EQ((*boxes)[1].class_id, 1);

  // The same two overlapping boxes in different classes are both kept.
  std::vector<vision::Detection> two(2);
  for (vision::Detection& d : two) d.x_max = d.y_max = 10;
  two[0].score = 0.9f;
  two[1].score = 0.8f;
  two[0].class_id = 0;
  two[1].class_id = 1;
  EXPECT_EQ(vision::ClassNms(two, 0.45f, 300).size(), 2u);
  two[1].class_id = 0;
  EXPECT_EQ(vision::ClassNms(two, 0.45f, 300).size(), 1u);
  EXPECT_EQ(vision::ClassNms(two, 0.45f, 300)[0].score, 0.9f);
}

TEST(YoloDecode, DecodedOutputsAndShapeErrorsNameTheOutput) {
  Tensor decoded = Tensor::Allocate(DType::kFloat32, {1, 2, 7});  // 2 boxes, 2 classes
  const float rows[] = {50, 40, 20, 10, 0.9f, 0.1f, 0.8f, 5, 5, 4, 4, 0.1f, 0.9f, 0.9f};
  std::copy(rows, rows + 14, decoded.data_as<float>());
  vision::YoloOptions o;
  o.raw = false;
  auto boxes = vision::DecodeYolo({{"output0", decoded}}, o);
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 1u);
  EXPECT_EQ((*boxes)[0].class_id, 1);
  EXPECT_NEAR((*boxes)[0].x_min, 40, 1e-5);
  EXPECT_NEAR((*boxes)[0].y_max, 45, 1e-5);

  auto wrong = vision::DecodeYolo({{"p3", EmptyMap(2, 3, 4, 4)}}, TwoStrides());
  EXPECT_EQ(wrong.status().message(),
            "YOLO: the model gives 1 outputs, but 2 strides and 2 anchor sets were given "
            "(one each per output)");
  auto bad = vision::DecodeYolo({{"p3", EmptyMap(2, 3, 4, 4)}, {"p4", EmptyMap(2, 4, 2, 2)}},
                                TwoStrides());
  EXPECT_EQ(bad.status().message(),
            "YOLO output 'p4' is [1,18,2,2] f32; expected [1,16,H,W] f32 (2 anchors x (5 + 3 "
            "classes))");
}

// Answers nothing: the letterbox node needs no model.
class NoModels final : public pipeline::NodeContext {
 public:
  pipeline::PendingOutputs Submit(const std::string&, NamedTensors) override { return {}; }
  const ModelInfo* FindModel(const std::string&) const override { return nullptr; }
  int RowsPerRequest(const std::string&, const Shape&) override { return 1; }
  absl::StatusOr<NamedTensors> Await(const pipeline::PendingOutputs& outputs) override {
    return outputs.get();
  }
};

// The letterbox node on a frame: the padded size, and boxes mapped back through it.
TEST(Letterbox, ScalesTheLongerSidePadsToTheStrideAndMapsBack) {
  auto models = pipeline::MakeModelInfoService({});
  ASSERT_TRUE(models.ok());
  pipeline::BuildContext context("t.yaml", ".", models->get());
  context.Declare("image", {pipeline::ValueType::kImage, std::nullopt, "image"});
  auto node =
      (*pipeline::FindNodeType("letterbox"))("lb", YAML::Load("{size: 640, stride: 32}"), context);
  ASSERT_TRUE(node.ok()) << node.status();
  for (auto [w, h, tw, th] :
       {std::array<int, 4>{1920, 1080, 640, 384}, {1080, 1920, 384, 640}, {100, 50, 640, 320}}) {
    pipeline::Frame frame;
    frame.values["image"].image = cv::Mat(h, w, CV_8UC3, cv::Scalar(10, 20, 30));
    NoModels none;
    ASSERT_TRUE((*node)->Process(frame, none).ok());
    const pipeline::Value& v = frame.values.at("lb");
    EXPECT_EQ(v.tensor.shape(), (Shape{1, 3, th, tw})) << w << "x" << h;
    const cv::Point2f corner = v.to_image.ToImage({static_cast<float>(tw - v.to_image.offset_x),
                                                   static_cast<float>(th - v.to_image.offset_y)});
    EXPECT_NEAR(corner.x, w, 1.0) << "the far corner of the image maps back to the image's";
    EXPECT_NEAR(corner.y, h, 1.0);
  }
  auto odd =
      (*pipeline::FindNodeType("letterbox"))("lb2", YAML::Load("{size: 650, stride: 32}"), context);
  EXPECT_NE(odd.status().message().find("'size' (650) must be a multiple of 'stride' (32)"),
            std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Folders of real photos.

std::string PipelinePath(const std::string& file) {
  return testing::SourcePath("pipelines/" + file);
}

// A folder of real photos: copies of messi5.jpg and licenseplate_motion.jpg, a JPEG cut short and
// a text file named .jpg.
void MakeFolder(const ScratchDir& dir, int good) {
  const std::string photos[] = {testing::DataPath("messi5.jpg"),
                                testing::DataPath("licenseplate_motion.jpg")};
  fs::create_directories(dir.Path("in"));
  for (int i = 0; i < good; ++i)
    fs::copy_file(photos[i % 2], dir.Path("in/p" + std::to_string(i) + ".jpg"));
  const std::string jpeg = testing::ReadFile(photos[0]);
  dir.Write("in/cut.jpg", jpeg.substr(0, jpeg.size() / 3));
  dir.Write("in/text.jpg", "not an image");
}

std::vector<nlohmann::json> ReadRecords(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

absl::StatusOr<PipelineSummary> RunFolder(const std::string& file, const ScratchDir& dir,
                                          PipelineOptions o) {
  o.input = dir.Path("in/*.jpg");
  o.output_dir = dir.Path("out");
  LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(file, o));
  return p->Run();
}

TEST(FolderJob, OneRecordPerImageErrorsIncludedAndAnAnnotatedCopyEach) {
  ScratchDir dir;
  MakeFolder(dir, 4);
  auto summary = RunFolder(PipelinePath("faces-folder.yaml"), dir, {});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->frames, 6);
  EXPECT_EQ(summary->failed, 2);
  const auto records = ReadRecords(dir.Path("out/faces.jsonl"));
  ASSERT_EQ(records.size(), 6u);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& r : records)
    by_name[fs::path(r["source"].get<std::string>()).filename().string()] = r;
  EXPECT_NE(by_name["cut.jpg"]["error"].get<std::string>().find("is a truncated JPEG"),
            std::string::npos);
  EXPECT_NE(by_name["text.jpg"]["error"].get<std::string>().find("cannot be decoded"),
            std::string::npos);
  ASSERT_EQ(by_name["p0.jpg"]["faces"].size(), 1u) << "messi5.jpg: one face";
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(fs::exists(dir.Path("out/annotated/p" + std::to_string(i) + ".jpg"))) << i;
  }
  EXPECT_FALSE(fs::exists(dir.Path("out/annotated/cut.jpg"))) << "no copy of an image that failed";
}

TEST(FolderJob, ResumeRecordsEveryImageExactlyOnce) {
  ScratchDir dir;
  MakeFolder(dir, 5);
  // A first run stopped after 3 images (cut.jpg, p0, p1: sorted), its last line cut by a crash.
  ASSERT_TRUE(RunFolder(PipelinePath("faces-folder.yaml"), dir, {.limit = 3}).ok());
  std::string jsonl = testing::ReadFile(dir.Path("out/faces.jsonl"));
  jsonl.resize(jsonl.size() - 20);
  dir.Write("out/faces.jsonl", jsonl);
  // Resumed: cut.jpg (an error) and p1 (a cut line) run again with the images never recorded.
  auto resumed = RunFolder(PipelinePath("faces-folder.yaml"), dir, {.resume = true});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->skipped, 1) << "p0 was recorded";
  EXPECT_EQ(resumed->frames, 6);
  std::map<std::string, int> seen;
  for (const auto& r : ReadRecords(dir.Path("out/faces.jsonl")))
    ++seen[r["source"].get<std::string>()];
  ASSERT_EQ(seen.size(), 7u);
  for (const auto& [source, count] : seen) EXPECT_EQ(count, 1) << source;
  // Resuming a finished run runs only its failures again, and records nothing twice.
  auto again = RunFolder(PipelinePath("faces-folder.yaml"), dir, {.resume = true});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->skipped, 5);
  EXPECT_EQ(again->frames, 2);
  EXPECT_EQ(ReadRecords(dir.Path("out/faces.jsonl")).size(), 7u);
}

TEST(FolderJob, ResumeNeedsARecordFile) {
  ScratchDir dir;
  MakeFolder(dir, 1);
  auto p = Pipeline::Load(PipelinePath("faces.yaml"), {.input = dir.Path("in/*.jpg"),
                                                       .output_dir = dir.Path("out"),
                                                       .sinks = false,
                                                       .resume = true});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE((*p)->Run().status().message().find("resuming needs the records of a jsonl sink"),
            std::string::npos);
}

TEST(FolderJob, DetectsWithASeededYoloAtAnotherSizeSetFromOutside) {
  ScratchDir dir;
  MakeFolder(dir, 2);
  auto summary = RunFolder(PipelinePath("detect-folder.yaml"), dir,
                           {.model_paths = {{"det", testing::ModelPath("seeded_yolov5n.onnx")}},
                            .overrides = {{"det_in.size", "320"}}});
  ASSERT_TRUE(summary.ok()) << summary.status();
  const auto records = ReadRecords(dir.Path("out/detections.jsonl"));
  ASSERT_EQ(records.size(), 4u);
  for (const auto& r : records) {
    if (r.contains("error")) continue;
    ASSERT_TRUE(r["objects"].is_array()) << r.dump();
    for (const auto& o : r["objects"]) {
      EXPECT_GE(o["box"][0].get<double>(), 0);
      EXPECT_GE(o["class"].get<int>(), 0);
    }
  }
  auto bad =
      Pipeline::Load(PipelinePath("detect-folder.yaml"), {.overrides = {{"detect.size", "320"}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("has no node 'detect' (its nodes: det_in, det, objects)"),
            std::string::npos)
      << bad.status();
  auto wrong =
      Pipeline::Load(PipelinePath("detect-folder.yaml"), {.overrides = {{"det_in.size", "650"}}});
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("must be a multiple of 'stride'"), std::string::npos)
      << wrong.status();
}

}  // namespace
}  // namespace loom
