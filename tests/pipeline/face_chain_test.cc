// The face chain (pipelines/face-chain.yaml): a crop per detection, landmarks mapped back through
// each crop, a class per detection — node by node on synthetic frames where the answer is known,
// then the whole chain on Megamind.avi with the real detector and the seeded torch models, checked
// against the same models run by hand on the same crops.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <set>

#include "loom/pipeline.h"
#include "loom/session.h"
#include "pipeline/node.h"
#include "pipeline/services.h"
#include "tests/test_util.h"
#include "vision/blob.h"

namespace loom::pipeline {
namespace {

constexpr const char* kLandmarks = "seeded_landmarks_gdconv.onnx";
constexpr const char* kFrown = "seeded_frown_mnv3small.onnx";

// Answers nothing: the nodes under test here read ready values only.
class NoModels final : public NodeContext {
 public:
  PendingOutputs Submit(const std::string&, NamedTensors) override { return {}; }
  const ModelInfo* FindModel(const std::string&) const override { return nullptr; }
  int RowsPerRequest(const std::string&, const Shape&) override { return 1; }
  absl::StatusOr<NamedTensors> Await(const PendingOutputs& outputs) override {
    return outputs.get();
  }
};

// A model's answer, already there.
Value Answered(NamedTensors outputs) {
  std::promise<absl::StatusOr<NamedTensors>> p;
  p.set_value(std::move(outputs));
  Value v;
  v.type = ValueType::kOutputs;
  v.outputs = p.get_future().share();
  return v;
}

vision::Detection Box(float x1, float y1, float x2, float y2) {
  vision::Detection d;
  d.x_min = x1, d.y_min = y1, d.x_max = x2, d.y_max = y2, d.score = 0.9f;
  return d;
}

// A frame of `w` x `h` pixels whose every pixel holds its own coordinates (B = x, G = y), and
// detections under "faces".
Frame FrameWith(int w, int h, std::vector<vision::Detection> detections) {
  Frame frame;
  cv::Mat image(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x)
      image.at<cv::Vec3b>(y, x) = {static_cast<uint8_t>(x), static_cast<uint8_t>(y), 0};
  }
  frame.values["image"].image = image;
  Value faces;
  faces.type = ValueType::kDetections;
  faces.detections = std::move(detections);
  frame.values["faces"] = std::move(faces);
  return frame;
}

// Builds one node of `type` from its YAML `params`, with "faces" declared as detections.
struct Built {
  std::unique_ptr<InferenceService> models;
  std::unique_ptr<BuildContext> context;
  std::vector<std::unique_ptr<Node>> nodes;
  absl::Status Add(const std::string& name, const std::string& type, const std::string& params) {
    LOOM_ASSIGN_OR_RETURN(auto node, (*FindNodeType(type))(name, YAML::Load(params), *context));
    nodes.push_back(std::move(node));
    return absl::OkStatus();
  }
  absl::Status Run(Frame& frame) {
    NoModels none;
    for (const auto& n : nodes) LOOM_RETURN_IF_ERROR(n->Process(frame, none));
    return absl::OkStatus();
  }
};

Built NewGraph() {
  Built b;
  auto models = MakeModelInfoService({});
  EXPECT_TRUE(models.ok()) << models.status();
  b.models = std::move(*models);
  b.context = std::make_unique<BuildContext>("test.yaml", ".", b.models.get());
  b.context->Declare("image", {ValueType::kImage, std::nullopt, "image"});
  b.context->Declare("faces", {ValueType::kDetections, std::nullopt, "faces"});
  return b;
}

cv::Rect CropRect(const Frame& frame, const std::string& node, size_t i) {
  const Value& v = frame.values.at(node);
  const cv::Mat& crop = v.crops.at(i);
  // The crop is a view of the frame: its first pixel holds its own frame coordinates.
  const cv::Vec3b first = crop.at<cv::Vec3b>(0, 0);
  EXPECT_EQ(v.row_to_image[i].ToImage({0, 0}), cv::Point2f(first[0], first[1]));
  return {first[0], first[1], crop.cols, crop.rows};
}

TEST(BoxCrop, MakesTheBoxSquareGrowsItAndClampsItToTheFrame) {
  Built g = NewGraph();
  ASSERT_TRUE(g.Add("crops", "box_crop", "{detections: faces, square: true, scale: 1.5}").ok());
  // A 40x20 box at (10,20): square 40, grown to 60 about its centre (30,30) -> (0,0)-(60,60).
  // One near the corner: (80,60)-(100,80) in a 100x80 frame, 30x30 about (90,70) -> clamped.
  Frame frame = FrameWith(100, 80, {Box(10, 20, 50, 40), Box(80, 60, 100, 80)});
  ASSERT_TRUE(g.Run(frame).ok());
  ASSERT_EQ(frame.values.at("crops").crops.size(), 2u);
  EXPECT_EQ(CropRect(frame, "crops", 0), cv::Rect(0, 0, 60, 60));
  EXPECT_EQ(CropRect(frame, "crops", 1), cv::Rect(75, 55, 25, 25));
  EXPECT_EQ(frame.values.at("crops").detections.size(), 2u) << "each crop keeps its detection";
}

TEST(BoxCrop, PlacesTheRegionOnLandmarksInsideTheBox) {
  Built g = NewGraph();
  ASSERT_TRUE(g.Add("brows", "box_crop",
                    "{detections: faces, points: [1, 2], scale: [1.0, 3.0], within_box: true}")
                  .ok());
  vision::Detection face = Box(20, 20, 80, 70);
  face.landmarks = {{0, 0}, {30, 30}, {50, 34}, {99, 99}};  // points 1 and 2: (30,30)-(50,34)
  Frame frame = FrameWith(100, 80, {face});
  ASSERT_TRUE(g.Run(frame).ok());
  // 20x4 about (40,32), height x3 -> (30,26)-(50,38); inside the face box, so unchanged.
  EXPECT_EQ(CropRect(frame, "brows", 0), cv::Rect(30, 26, 20, 12));

  face.landmarks = {{0, 0}, {10, 10}, {50, 12}, {0, 0}};  // above the face: clipped to its top
  frame = FrameWith(100, 80, {face});
  ASSERT_TRUE(g.Run(frame).ok());
  EXPECT_EQ(CropRect(frame, "brows", 0), cv::Rect(20, 20, 30, 8))
      << "clipped to the face's top, grown into it to 8 px";
}

TEST(BoxCrop, EveryDetectionGetsACropAndAMissingLandmarkIsNamed) {
  Built g = NewGraph();
  ASSERT_TRUE(g.Add("crops", "box_crop", "{detections: faces}").ok());
  Frame frame =
      FrameWith(64, 48, {Box(-50, -50, -40, -40), Box(200, 200, 300, 300), Box(1, 1, 1, 1)});
  ASSERT_TRUE(g.Run(frame).ok());
  const Value& crops = frame.values.at("crops");
  ASSERT_EQ(crops.crops.size(), 3u) << "off the frame or empty, a detection still has its crop";
  for (const cv::Mat& c : crops.crops) EXPECT_FALSE(c.empty());

  Built h = NewGraph();
  ASSERT_TRUE(h.Add("brows", "box_crop", "{detections: faces, points: [17, 26]}").ok());
  Frame no_landmarks = FrameWith(64, 48, {Box(0, 0, 10, 10)});
  EXPECT_EQ(h.Run(no_landmarks).message(),
            "box_crop: landmark 17 asked for, but the detection has 0 landmarks");
}

TEST(Landmarks, MapsEachRowBackThroughItsResizeAndItsCrop) {
  Built g = NewGraph();
  ASSERT_TRUE(g.Add("crops", "box_crop", "{detections: faces}").ok());
  ASSERT_TRUE(g.Add("lm_in", "preprocess", "{input: crops, size: [32, 16], layout: NCHW}").ok());
  g.context->Declare("lm", {ValueType::kOutputs, std::nullopt, "lm"});
  ASSERT_TRUE(g.Add("points", "landmarks", "{input: lm, preprocess: lm_in, points: 2}").ok());
  Frame frame = FrameWith(100, 80, {Box(10, 20, 50, 40), Box(60, 10, 70, 50)});
  // Point 0 at the input's centre, point 1 at its top-left corner, for both rows.
  Tensor out = Tensor::Allocate(DType::kFloat32, {2, 4});
  const float xy[] = {0.5f, 0.5f, 0.0f, 0.0f, 0.5f, 0.5f, 0.0f, 0.0f};
  std::copy(xy, xy + 8, out.data_as<float>());
  frame.values["lm"] = Answered({{"out", out}});
  ASSERT_TRUE(g.Run(frame).ok());
  const std::vector<vision::Detection>& d = frame.values.at("points").detections;
  ASSERT_EQ(d.size(), 2u);
  ASSERT_EQ(d[0].landmarks.size(), 2u);
  EXPECT_NEAR(d[0].landmarks[0].x, 30, 1e-4);  // the centre of (10,20)-(50,40)
  EXPECT_NEAR(d[0].landmarks[0].y, 30, 1e-4);
  EXPECT_NEAR(d[0].landmarks[1].x, 10, 1e-4);
  EXPECT_NEAR(d[0].landmarks[1].y, 20, 1e-4);
  EXPECT_NEAR(d[1].landmarks[0].x, 65, 1e-4);  // the centre of (60,10)-(70,50)
  EXPECT_NEAR(d[1].landmarks[0].y, 30, 1e-4);
  EXPECT_EQ(frame.record["points"][1]["landmarks"],
            nlohmann::json::parse("[[65.0,30.0],[60.0,10.0]]"));

  out = Tensor::Allocate(DType::kFloat32, {2, 3});
  frame.values["lm"] = Answered({{"out", out}});
  EXPECT_EQ(
      g.Run(frame).message(),
      "landmarks: output 'out' is [2,3] f32; expected [2,4] f32 (2 points for each of 2 crops)");
}

TEST(Classify, LabelsEachDetectionWithItsMostLikelyClass) {
  Built g = NewGraph();
  ASSERT_TRUE(g.Add("crops", "box_crop", "{detections: faces}").ok());
  ASSERT_TRUE(g.Add("cls_in", "preprocess", "{input: crops, size: [8, 8], filter: sobel}").ok());
  g.context->Declare("cls", {ValueType::kOutputs, std::nullopt, "cls"});
  ASSERT_TRUE(
      g.Add("faces_out", "classify", "{input: cls, preprocess: cls_in, labels: [normal, frown]}")
          .ok());
  Frame frame = FrameWith(100, 80, {Box(10, 20, 50, 40), Box(60, 10, 70, 50)});
  Tensor logits = Tensor::Allocate(DType::kFloat32, {2, 2});
  const float v[] = {2.0f, 0.0f, -1.0f, 1.0f};
  std::copy(v, v + 4, logits.data_as<float>());
  frame.values["cls"] = Answered({{"logits", logits}});
  ASSERT_TRUE(g.Run(frame).ok());
  const std::vector<vision::Detection>& d = frame.values.at("faces_out").detections;
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].label_name, "normal");
  EXPECT_NEAR(d[0].label_score, 1 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_EQ(d[1].label_name, "frown");
  EXPECT_NEAR(d[1].label_score, 1 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_EQ(frame.record["faces_out"][1]["label"], "frown");

  Tensor three = Tensor::Allocate(DType::kFloat32, {2, 3});
  frame.values["cls"] = Answered({{"logits", three}});
  EXPECT_EQ(g.Run(frame).message(), "classify: the model gives 3 classes, but 2 labels were named");
}

TEST(Preprocess, SobelGivesTheEdgeMapInEveryChannel) {
  cv::Mat image(16, 16, CV_8UC3, cv::Scalar::all(0));
  image.colRange(8, 16).setTo(cv::Scalar::all(200));  // a vertical edge at x = 8
  vision::BlobOptions options;
  options.width = options.height = 16;
  options.scale = 1;
  options.filter = vision::BlobOptions::Filter::kSobel;
  auto t = vision::BlobFromImage(image, options);
  ASSERT_TRUE(t.ok()) << t.status();
  const float* p = t->data_as<float>();
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(p[c * 256 + 5 * 16 + 2], 0) << "flat: no gradient";
    EXPECT_EQ(p[c * 256 + 5 * 16 + 8], 255) << "the edge: 4 x 200, saturated";
  }
}

// ------------------------------------------------------------------------------------------------
// The whole chain on real frames.

std::string ChainPath() { return testing::SourcePath("pipelines/face-chain.yaml"); }

absl::StatusOr<std::vector<nlohmann::json>> ChainRecords(PipelineOptions options) {
  std::vector<nlohmann::json> records;
  options.sinks = false;
  options.on_record = [&](const PipelineRecord& r) {
    nlohmann::json j = nlohmann::json::parse(r.json);
    j.erase("timings_ms");
    records.push_back(j);
  };
  LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(ChainPath(), options));
  LOOM_RETURN_IF_ERROR(p->Run().status());
  return records;
}

TEST(FaceChain, EveryFaceGetsSixtyEightLandmarksAndALabel) {
  auto records = ChainRecords({.limit = 12});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 12u);
  int faces = 0;
  for (const nlohmann::json& r : *records) {
    ASSERT_FALSE(r.contains("error")) << r.dump();
    for (const nlohmann::json& f : r["faces"]) {
      ++faces;
      ASSERT_EQ(f["landmarks"].size(), 68u);
      ASSERT_EQ(f["keypoints"].size(), 6u);
      EXPECT_TRUE(f["label"] == "normal" || f["label"] == "frown") << f["label"];
      EXPECT_GE(f["label_score"].get<double>(), 0.5);
      EXPECT_LE(f["label_score"].get<double>(), 1.0);
    }
  }
  EXPECT_GE(faces, 12) << "Megamind's first frames show a face in nearly every frame";
}

TEST(FaceChain, OutputDoesNotDependOnFramesInFlightOrOnThePlan) {
  auto one = ChainRecords({.in_flight = 1, .limit = 10, .cores = 1});
  auto four = ChainRecords({.in_flight = 4, .limit = 10});
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(*one, *four);
}

// The chain's answers for one face against the same models run by hand: the crop and resize
// written out here, the session called directly. The record's box is rounded to 0.1 px and the
// seeded model moves its points by pixels when its crop moves by one, so every crop the rounded
// box allows is tried: one must give the chain's points.
TEST(FaceChain, AgreesWithTheLandmarkModelRunByHandOnTheSameCrop) {
  auto records = ChainRecords({.limit = 4});
  ASSERT_TRUE(records.ok()) << records.status();
  size_t k = 0;
  while (k < records->size() && (*records)[k]["faces"].empty()) ++k;
  ASSERT_LT(k, records->size()) << "no face in the first frames";
  cv::VideoCapture video(testing::DataPath("Megamind.avi"), cv::CAP_FFMPEG);
  cv::Mat frame;
  for (size_t i = 0; i <= k; ++i) ASSERT_TRUE(video.read(frame));
  const nlohmann::json& face = (*records)[k]["faces"][0];
  const std::vector<double> box = face["box"];
  // Square, x1.2 about the box's centre, in whole pixels inside the frame; each edge's pixel for
  // the box at +-0.05 px.
  const double side = std::max(box[2] - box[0], box[3] - box[1]) * 1.2;
  const double cx = (box[0] + box[2]) / 2, cy = (box[1] + box[3]) / 2;
  auto edges = [](double v, bool low, int limit) {
    std::set<int> out;
    for (double e : {v - 0.1, v + 0.1})
      out.insert(std::clamp(static_cast<int>(low ? std::floor(e) : std::ceil(e)), 0, limit));
    return out;
  };
  SessionOptions one_thread;
  one_thread.intra_op_threads = 1;
  auto session = CreateSession(testing::ModelPath(kLandmarks), one_thread);
  ASSERT_TRUE(session.ok()) << session.status();
  vision::BlobOptions options;
  options.width = options.height = 224;
  options.scale = 1 / 255.0;
  options.mean = {0.485 * 255, 0.456 * 255, 0.406 * 255, 0};
  options.std = {0.229, 0.224, 0.225, 1};
  double best = INFINITY;
  for (int x0 : edges(cx - side / 2, true, frame.cols - 1)) {
    for (int y0 : edges(cy - side / 2, true, frame.rows - 1)) {
      for (int x1 : edges(cx + side / 2, false, frame.cols)) {
        for (int y1 : edges(cy + side / 2, false, frame.rows)) {
          const cv::Mat crop = frame(cv::Rect(x0, y0, x1 - x0, y1 - y0));
          auto input = vision::BlobFromImage(crop, options);
          ASSERT_TRUE(input.ok()) << input.status();
          auto out = (*session)->Run({{"input", *input}});
          ASSERT_TRUE(out.ok()) << out.status();
          const float* xy = (*out)[0].tensor.data_as<float>();
          double worst = 0;  // px, over the 68 points
          for (int p = 0; p < 68; ++p) {
            worst = std::max(worst, std::fabs(face["landmarks"][p][0].get<double>() -
                                              (x0 + xy[2 * p] * crop.cols)));
            worst = std::max(worst, std::fabs(face["landmarks"][p][1].get<double>() -
                                              (y0 + xy[2 * p + 1] * crop.rows)));
          }
          best = std::min(best, worst);
        }
      }
    }
  }
  EXPECT_LE(best, 0.051)
      << "px: the chain's landmarks vs the model by hand (records round to 0.1 px)";
}

TEST(FaceChain, AModelFileCanBeReplacedByNameAndAnUnknownNameIsRefused) {
  auto replaced =
      ChainRecords({.model_paths = {{"frown", testing::ModelPath(kFrown)}}, .limit = 2});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  auto unknown = Pipeline::Load(
      ChainPath(), {.model_paths = {{"smile", testing::ModelPath(kFrown)}}, .sinks = false});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find(
                "has no model 'smile' to replace (its models: face, landmarks, frown)"),
            std::string::npos)
      << unknown.status();
}

}  // namespace
}  // namespace loom::pipeline
