// How a fan-out's rows become requests: text lines as rows at their own width bucket, sent alone
// or together as the measured decision says, joined back in row order; the engine's service
// measures that decision once per row shape; the CTC node reads a poor line again only where it
// was turned over or ran padded. A scripted NodeContext stands in for the engine where
// the test needs exact control; the measurement runs on the real recogniser.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <opencv2/imgproc.hpp>

#include "loom/engine.h"
#include "pipeline/node.h"
#include "pipeline/services.h"
#include "tests/test_util.h"
#include "vision/ocr.h"

namespace loom::pipeline {
namespace {

// Answers every request at once with [rows, width/8 (or fixed_steps), 4] f32 where every value
// of row k is the request's row k's first pixel (so the join's order can be checked), and says
// rows go `rows_per_request` at a time.
class ScriptedContext final : public NodeContext {
 public:
  ScriptedContext(const InferenceService& models, int rows_per_request, int64_t fixed_steps = 0)
      : models_(models), rows_per_request_(rows_per_request), fixed_steps_(fixed_steps) {}

  PendingOutputs Submit(const std::string& model, NamedTensors inputs) override {
    submitted.push_back({model, inputs[0].tensor.shape()});
    const Tensor& in = inputs[0].tensor;
    const int64_t rows = in.dim(0);
    const int64_t steps =
        fixed_steps_ > 0 ? fixed_steps_ : std::max<int64_t>(in.dim(in.rank() - 1) / 8, 1);
    Tensor out = Tensor::Allocate(DType::kFloat32, {rows, steps, 4});
    const int64_t row_in = in.element_count() / std::max<int64_t>(rows, 1);
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(out.data_as<float>() + r * steps * 4, out.data_as<float>() + (r + 1) * steps * 4,
                in.data_as<float>()[r * row_in]);
    }
    std::promise<absl::StatusOr<NamedTensors>> p;
    p.set_value(NamedTensors{{"out", out}});
    return p.get_future().share();
  }
  const ModelInfo* FindModel(const std::string& model) const override {
    return models_.FindModel(model);
  }
  int RowsPerRequest(const std::string& model, const Shape& row_shape) override {
    asked.push_back({model, row_shape});
    return rows_per_request_;
  }
  absl::StatusOr<NamedTensors> Await(const PendingOutputs& outputs) override {
    return outputs.get();
  }

  std::vector<std::pair<std::string, Shape>> submitted, asked;

 private:
  const InferenceService& models_;
  int rows_per_request_;
  int64_t fixed_steps_;
};

struct TwoNodes {
  std::unique_ptr<InferenceService> models;
  std::unique_ptr<Node> batch, infer;
  std::map<std::string, std::vector<Shape>> row_classes;
};

TwoNodes TextRowsIntoTheRecogniser() {
  TwoNodes t;
  auto models = MakeModelInfoService(
      {{.name = "rec", .path = testing::ModelPath("ch_PP-OCRv4_rec_infer.onnx")}});
  EXPECT_TRUE(models.ok()) << models.status();
  t.models = std::move(*models);
  BuildContext context("test.yaml", ".", t.models.get());
  context.Declare("crops", {ValueType::kCrops, std::nullopt, "crops"});
  auto batch = (*FindNodeType("text_batch"))(
      "rec_in", YAML::Load("{input: crops, height: 48, max_width: 1280}"), context);
  EXPECT_TRUE(batch.ok()) << batch.status();
  auto infer = (*FindNodeType("infer"))("rec", YAML::Load("{model: rec, input: rec_in}"), context);
  EXPECT_TRUE(infer.ok()) << infer.status();
  t.batch = std::move(*batch);
  t.infer = std::move(*infer);
  t.row_classes = context.row_classes();
  return t;
}

// Crops 48 px high whose width at that height is `width`, filled with `value` (the first pixel
// of the row after normalisation is (value / 255 - 0.5) / 0.5).
cv::Mat Crop(int width, uchar value) { return cv::Mat(48, width, CV_8UC3, cv::Scalar::all(value)); }

Frame FrameOfCrops(const std::vector<cv::Mat>& crops) {
  Frame frame;
  Value v;
  v.type = ValueType::kCrops;
  v.crops = crops;
  v.rotated.assign(crops.size(), false);
  frame.values["crops"] = v;
  return frame;
}

float Normalised(uchar value) { return (static_cast<float>(value) / 255.0f - 0.5f) / 0.5f; }

TEST(RowBatching, TextLinesGoAloneAtTheirOwnWidthBucketWhenBatchingDoesNotPay) {
  TwoNodes t = TextRowsIntoTheRecogniser();
  // The recogniser's width classes are declared for measurement at load.
  ASSERT_EQ(t.row_classes.count("rec"), 1u);
  EXPECT_EQ(t.row_classes["rec"],
            (std::vector<Shape>{{3, 48, 160}, {3, 48, 320}, {3, 48, 640}, {3, 48, 1280}}));

  ScriptedContext context(*t.models, /*rows_per_request=*/1);
  Frame frame = FrameOfCrops({Crop(100, 10), Crop(1000, 20), Crop(90, 30), Crop(2000, 40)});
  ASSERT_TRUE(t.batch->Process(frame, context).ok());
  ASSERT_TRUE(t.infer->Process(frame, context).ok());
  // Every row alone, each at its width rounded up to 32 (capped at 1280): no row pays for another.
  // The widest go first, so that the last rows to run are short ones.
  ASSERT_EQ(context.submitted.size(), 4u);
  EXPECT_EQ(context.submitted[0].second, (Shape{1, 3, 48, 1280}));
  EXPECT_EQ(context.submitted[1].second, (Shape{1, 3, 48, 1024}));
  EXPECT_EQ(context.submitted[2].second, (Shape{1, 3, 48, 128}));
  EXPECT_EQ(context.submitted[3].second, (Shape{1, 3, 48, 96}));
  // The decision is asked once per shape group with more than one row: none here.
  EXPECT_TRUE(context.asked.empty());
  const Value& out = frame.values.at("rec");
  ASSERT_EQ(out.parts.size(), 4u);
  EXPECT_EQ(out.parts[0].rows, (std::vector<int64_t>{3}));
  EXPECT_EQ(out.parts[2].rows, (std::vector<int64_t>{0}));
  EXPECT_NEAR(out.parts[2].padding[0], 1.0f - 100.0f / 128.0f, 1e-6);
  EXPECT_NEAR(out.parts[0].padding[0], 0.0f, 1e-6);
  // Outputs of different lengths are not joined: asking for one tensor is a clear error.
  auto joined = context.Await(out.outputs);
  ASSERT_FALSE(joined.ok());
  EXPECT_NE(joined.status().message().find("cannot join rows"), std::string::npos)
      << joined.status();
}

TEST(RowBatching, RowsOfOneBucketShareRequestsWhenTheDecisionSaysSoAndComeBackInOrder) {
  TwoNodes t = TextRowsIntoTheRecogniser();
  ScriptedContext context(*t.models, /*rows_per_request=*/2);
  // Rows 0, 2, 3 fall in the 128 bucket (widths 100, 110, 128), row 1 in 1024.
  Frame frame = FrameOfCrops({Crop(100, 10), Crop(1000, 20), Crop(110, 30), Crop(128, 40)});
  ASSERT_TRUE(t.batch->Process(frame, context).ok());
  ASSERT_TRUE(t.infer->Process(frame, context).ok());
  // The decision is asked for the bucket's class (the 160 class holds the 128 bucket).
  ASSERT_EQ(context.asked.size(), 1u);
  EXPECT_EQ(context.asked[0].second, (Shape{3, 48, 160}));
  ASSERT_EQ(context.submitted.size(), 3u);
  EXPECT_EQ(context.submitted[0].second, (Shape{1, 3, 48, 1024}));  // row 1, the widest first
  EXPECT_EQ(context.submitted[1].second, (Shape{2, 3, 48, 128}));   // rows 0 and 2
  EXPECT_EQ(context.submitted[2].second, (Shape{1, 3, 48, 128}));   // row 3
  const Value& out = frame.values.at("rec");
  ASSERT_EQ(out.parts.size(), 3u);
  EXPECT_EQ(out.parts[1].rows, (std::vector<int64_t>{0, 2}));
  EXPECT_NEAR(out.parts[1].padding[1], 1.0f - 110.0f / 128.0f, 1e-6);
  // Each part's rows carry their own pixels back.
  auto first = context.Await(out.parts[1].outputs);
  ASSERT_TRUE(first.ok());
  EXPECT_FLOAT_EQ((*first)[0].tensor.data_as<float>()[0], Normalised(10));
  EXPECT_FLOAT_EQ((*first)[0].tensor.data_as<float>()[16 * 4], Normalised(30));

  // Outputs of one length (a classifier's, say): the parts join into one tensor, every row back
  // at its place in the input, though the requests took them out of order.
  ScriptedContext fixed(*t.models, 2, /*fixed_steps=*/3);
  Frame again = FrameOfCrops({Crop(100, 10), Crop(1000, 20), Crop(110, 30), Crop(128, 40)});
  ASSERT_TRUE(t.batch->Process(again, fixed).ok());
  ASSERT_TRUE(t.infer->Process(again, fixed).ok());
  auto all = fixed.Await(again.values.at("rec").outputs);
  ASSERT_TRUE(all.ok()) << all.status();
  const Tensor& joined = (*all)[0].tensor;
  ASSERT_EQ(joined.shape(), (Shape{4, 3, 4}));
  const uchar values[] = {10, 20, 30, 40};
  for (int r = 0; r < 4; ++r)
    EXPECT_FLOAT_EQ(joined.data_as<float>()[r * 3 * 4], Normalised(values[r])) << r;
}

TEST(RowBatching, TheLargestRequestGoesFirstRowsTimesWidthNotTheWidestRow) {
  TwoNodes t = TextRowsIntoTheRecogniser();
  ScriptedContext context(*t.models, /*rows_per_request=*/2);
  // Row 0 alone at 320; rows 1 and 2 share a request at 224: 448 columns of work, sent first.
  Frame frame = FrameOfCrops({Crop(300, 10), Crop(200, 20), Crop(210, 30)});
  ASSERT_TRUE(t.batch->Process(frame, context).ok());
  ASSERT_TRUE(t.infer->Process(frame, context).ok());
  ASSERT_EQ(context.submitted.size(), 2u);
  EXPECT_EQ(context.submitted[0].second, (Shape{2, 3, 48, 224}));
  EXPECT_EQ(context.submitted[1].second, (Shape{1, 3, 48, 320}));
  const Value& out = frame.values.at("rec");
  ASSERT_EQ(out.parts.size(), 2u);
  EXPECT_EQ(out.parts[0].rows, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(out.parts[1].rows, (std::vector<int64_t>{0}));
}

TEST(RowBatching, TheEngineMeasuresEachRowShapeOnceAndDecidesFromItsOwnNumbers) {
  auto engine = Engine::Create({{.name = "rec",
                                 .path = testing::ModelPath("ch_PP-OCRv4_rec_infer.onnx"),
                                 .max_batch_size = 1,
                                 .max_request_rows = 64}},
                               {.cores = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::unique_ptr<InferenceService> service = MakeEngineService(std::move(*engine));
  const Shape narrow = {3, 48, 64};
  EXPECT_FALSE(service->KnownRowsPerRequest("rec", narrow).has_value());
  const int rows = service->RowsPerRequest("rec", narrow);
  EXPECT_EQ(service->KnownRowsPerRequest("rec", narrow), rows);
  EXPECT_EQ(service->RowsPerRequest("rec", narrow), rows);  // cached: measured once
  const std::vector<RowBatching> decisions = service->RowBatchings();
  ASSERT_EQ(decisions.size(), 1u);
  const RowBatching& d = decisions[0];
  EXPECT_EQ(d.model, "rec");
  EXPECT_EQ(d.row_shape, narrow);
  EXPECT_EQ(d.probe_rows, 4);
  EXPECT_GT(d.ms_per_row_alone, 0);
  EXPECT_GT(d.ms_per_row_batched, 0);
  EXPECT_TRUE(d.note.empty()) << d.note;
  // The service applies the rule (tested below with given costs) to the numbers it measured.
  EXPECT_EQ(rows, DecideRowsPerRequest(d));
}

TEST(RowBatching, RowsShareARequestWhenARowCostsAtMostFourFifthsOfItsCostAlone) {
  auto decide = [](int probe_rows, double alone, double batched) {
    RowBatching measured;
    measured.probe_rows = probe_rows;
    measured.ms_per_row_alone = alone;
    measured.ms_per_row_batched = batched;
    return DecideRowsPerRequest(measured);
  };
  EXPECT_EQ(decide(4, 10.0, 2.5), 4);   // a convolution that fills the cores better together
  EXPECT_EQ(decide(4, 10.0, 8.0), 4);   // exactly 0.8
  EXPECT_EQ(decide(4, 10.0, 8.01), 1);  // just over
  EXPECT_EQ(decide(4, 10.0, 10.0), 1);  // no gain
  EXPECT_EQ(decide(4, 10.0, 25.0), 1);  // rows slow each other down
  EXPECT_EQ(decide(8, 10.0, 1.0), 8);   // as many as were probed
  EXPECT_EQ(decide(0, 0.0, 0.0), 1);    // not measured
}

}  // namespace
}  // namespace loom::pipeline

namespace loom::pipeline {
namespace {

// Answers every request (the CTC node's rechecks) with one line that reads charset[7] at 0.95.
class Rechecks final : public NodeContext {
 public:
  explicit Rechecks(const InferenceService& models) : models_(models) {}
  PendingOutputs Submit(const std::string&, NamedTensors inputs) override {
    widths.push_back(inputs[0].tensor.dim(3));
    return Answer(Line(7, 0.95f));
  }
  const ModelInfo* FindModel(const std::string& model) const override {
    return models_.FindModel(model);
  }
  int RowsPerRequest(const std::string&, const Shape&) override { return 1; }
  absl::StatusOr<NamedTensors> Await(const PendingOutputs& outputs) override {
    return outputs.get();
  }

  static constexpr int64_t kClasses = 6625;  // ppocr_keys_v1.txt + blank + space
  // [1,2,kClasses]: `label` at probability p, then a blank.
  static Tensor Line(int64_t label, float p) {
    Tensor t = Tensor::Allocate(DType::kFloat32, {1, 2, kClasses});
    t.data_as<float>()[label] = p;
    t.data_as<float>()[kClasses] = 1.0f;
    return t;
  }
  static PendingOutputs Answer(Tensor t) {
    std::promise<absl::StatusOr<NamedTensors>> p;
    p.set_value(NamedTensors{{"out", std::move(t)}});
    return p.get_future().share();
  }
  std::vector<int64_t> widths;

 private:
  const InferenceService& models_;
};

TEST(CtcRecheck, OnlyPoorReadsThatWereTurnedOverOrRanPaddedAreReadAgain) {
  auto models = MakeModelInfoService(
      {{.name = "rec", .path = testing::ModelPath("ch_PP-OCRv4_rec_infer.onnx")}});
  ASSERT_TRUE(models.ok()) << models.status();
  BuildContext build("test.yaml", ".", models->get());
  build.Declare("rec", {ValueType::kOutputs, std::nullopt, "rec"});
  build.Declare("boxes", {ValueType::kTextBoxes, std::nullopt, "boxes"});
  build.Declare("upright", {ValueType::kCrops, std::nullopt, "upright"});
  YAML::Node params = YAML::Load(
      "{input: rec, boxes: boxes, crops: upright, recheck_model: rec, recheck_below: 0.6}");
  params["keys"] = testing::ModelPath("ppocr_keys_v1.txt");
  auto ctc = (*FindNodeType("ctc"))("text", params, build);
  ASSERT_TRUE(ctc.ok()) << ctc.status();

  Frame frame;
  Value boxes;
  boxes.type = ValueType::kTextBoxes;
  boxes.boxes.resize(5);
  frame.values["boxes"] = boxes;
  Value crops;
  crops.type = ValueType::kCrops;
  for (int i = 0; i < 5; ++i)
    crops.crops.push_back(cv::Mat(48, 100 + 10 * i, CV_8UC3, cv::Scalar::all(200)));
  crops.rotated = {true, false, false, false, true};
  frame.values["upright"] = crops;
  Value rec;
  rec.type = ValueType::kOutputs;
  // Row: its read's score, the share of its run that was padding.
  const std::vector<std::pair<float, float>> rows = {{0.3f, 0.0f},   // poor, turned over: again
                                                     {0.3f, 0.5f},   // poor, padded: again
                                                     {0.3f, 0.1f},   // poor, hardly padded: kept
                                                     {0.9f, 0.5f},   // padded but read well: kept
                                                     {0.7f, 0.0f}};  // turned over, read well: kept
  for (size_t i = 0; i < rows.size(); ++i) {
    rec.parts.push_back({{static_cast<int64_t>(i)},
                         Rechecks::Answer(Rechecks::Line(3, rows[i].first)),
                         {rows[i].second}});
  }
  frame.values["rec"] = rec;

  Rechecks context(**models);
  ASSERT_TRUE((*ctc)->Process(frame, context).ok());
  // Rows 0 and 1 were read again, each alone at its exact width (100 and 110 px at 48 high).
  EXPECT_EQ(context.widths, (std::vector<int64_t>{100, 110}));
  const std::vector<vision::RecognizedText>& texts = frame.values.at("text").texts;
  ASSERT_EQ(texts.size(), 5u);
  EXPECT_FLOAT_EQ(texts[0].score, 0.95f);  // the better read wins
  EXPECT_FLOAT_EQ(texts[1].score, 0.95f);
  EXPECT_FLOAT_EQ(texts[2].score, 0.3f);
  EXPECT_FLOAT_EQ(texts[3].score, 0.9f);
  EXPECT_FLOAT_EQ(texts[4].score, 0.7f);
  EXPECT_NE(texts[0].text, texts[2].text);
  ASSERT_EQ(frame.record["text"].size(), 5u);
}

}  // namespace
}  // namespace loom::pipeline
