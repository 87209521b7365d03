// The decoders behind the post-processing nodes, on synthetic outputs whose answer is known
// exactly (the pipelines' tests cover them on real models).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <opencv2/imgproc.hpp>

#include "vision/blazeface.h"
#include "vision/detection.h"
#include "vision/mlsd.h"
#include "vision/ocr.h"

namespace loom::vision {
namespace {

NamedTensors EmptyBlazeFaceOutputs() {
  NamedTensors out = {{"s512", Tensor::Allocate(DType::kFloat32, {1, 512, 1})},
                      {"s384", Tensor::Allocate(DType::kFloat32, {1, 384, 1})},
                      {"b512", Tensor::Allocate(DType::kFloat32, {1, 512, 16})},
                      {"b384", Tensor::Allocate(DType::kFloat32, {1, 384, 16})}};
  for (int i = 0; i < 2; ++i) {
    float* s = out[static_cast<size_t>(i)].tensor.data_as<float>();
    std::fill(s, s + out[static_cast<size_t>(i)].tensor.element_count(), -10.0f);  // sigmoid ~ 0
  }
  return out;
}

TEST(BlazeFaceDecoder, DecodesOneAnchorExactly) {
  NamedTensors out = EmptyBlazeFaceOutputs();
  // Cell (x 3, y 5) of the 16x16 grid, its second anchor: index (5 * 16 + 3) * 2 + 1.
  const int index = (5 * 16 + 3) * 2 + 1;
  out[0].tensor.data_as<float>()[index] = 2.0f;  // sigmoid 0.8808
  float* r = out[2].tensor.data_as<float>() + index * 16;
  r[0] = 8;   // dx in input pixels (input 256)
  r[1] = -4;  // dy
  r[2] = 32;  // w
  r[3] = 64;  // h
  for (int k = 0; k < 6; ++k) r[4 + 2 * k] = static_cast<float>(k), r[5 + 2 * k] = 0;
  auto faces = DecodeBlazeFace(out, 256, {.image_width = 512, .image_height = 256});
  ASSERT_TRUE(faces.ok()) << faces.status();
  ASSERT_EQ(faces->size(), 1u);
  const Detection& d = (*faces)[0];
  const float cx = (3.5f / 16 + 8.0f / 256) * 512, cy = (5.5f / 16 - 4.0f / 256) * 256;
  EXPECT_NEAR(d.x_min, cx - 32.0f / 256 * 512 / 2, 1e-3);
  EXPECT_NEAR(d.x_max, cx + 32.0f / 256 * 512 / 2, 1e-3);
  EXPECT_NEAR(d.y_min, cy - 64.0f / 256 * 256 / 2, 1e-3);
  EXPECT_NEAR(d.score, 1 / (1 + std::exp(-2.0f)), 1e-6);
  ASSERT_EQ(d.keypoints.size(), 6u);
  EXPECT_NEAR(d.keypoints[5].x, (3.5f / 16 + 5.0f / 256) * 512, 1e-3);
}

TEST(BlazeFaceDecoder, RejectsOutputsOfAnotherShape) {
  NamedTensors out = EmptyBlazeFaceOutputs();
  out[3].tensor = Tensor::Allocate(DType::kFloat32, {1, 384, 4});
  EXPECT_EQ(DecodeBlazeFace(out, 128, {}).status().message(),
            "BlazeFace output 'b384': expected [1,384,16] f32, got [1,384,4] f32");
}

TEST(WeightedNms, BlendsOverlapsByScoreAndKeepsTheRest) {
  auto box = [](float x1, float y1, float x2, float y2, float score, Point keypoint) {
    Detection d;
    d.x_min = x1, d.y_min = y1, d.x_max = x2, d.y_max = y2, d.score = score;
    d.keypoints = {keypoint};
    return d;
  };
  std::vector<Detection> in = {box(0, 0, 10, 10, 0.9f, {1, 1}), box(1, 0, 11, 10, 0.3f, {3, 1}),
                               box(50, 50, 60, 60, 0.5f, {55, 55})};
  auto out = WeightedNms(in, 0.3f);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FLOAT_EQ(out[0].score, 0.9f);
  EXPECT_NEAR(out[0].x_min, (0 * 0.9 + 1 * 0.3) / 1.2, 1e-5);
  EXPECT_NEAR(out[0].keypoints[0].x, (1 * 0.9 + 3 * 0.3) / 1.2, 1e-5);
  EXPECT_FLOAT_EQ(out[1].x_min, 50);
}

TEST(MlsdDecoder, KeepsPeaksAboveThresholdAsSegments) {
  Tensor scores = Tensor::Allocate(DType::kFloat32, {1, 8, 8, 1});
  Tensor offsets = Tensor::Allocate(DType::kFloat32, {1, 8, 8, 4});
  scores.data_as<float>()[2 * 8 + 3] = 0.9f;   // peak at (x 3, y 2)
  scores.data_as<float>()[2 * 8 + 4] = 0.5f;   // its neighbour: not a peak
  scores.data_as<float>()[6 * 8 + 6] = 0.05f;  // below threshold
  float* d = offsets.data_as<float>() + (2 * 8 + 3) * 4;
  d[0] = -3, d[1] = 0, d[2] = 4, d[3] = 1;
  auto lines = DecodeMlsd(scores, offsets, {.score_threshold = 0.1f, .min_length = 2});
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_FLOAT_EQ((*lines)[0].x1, 0);   // (3 - 3) * 2
  EXPECT_FLOAT_EQ((*lines)[0].x2, 14);  // (3 + 4) * 2
  EXPECT_FLOAT_EQ((*lines)[0].y2, 6);   // (2 + 1) * 2
  EXPECT_EQ(
      DecodeMlsd(scores, Tensor::Allocate(DType::kFloat32, {1, 8, 8, 2}), {}).status().message(),
      "M-LSD offsets: expected [1,8,8,4] f32, got [1,8,8,2] f32");
}

TEST(DbDecoder, FindsARectangleGrownBackAndMappedToTheImage) {
  Tensor prob = Tensor::Allocate(DType::kFloat32, {1, 1, 64, 128});
  cv::Mat map(64, 128, CV_32F, prob.data());
  cv::rectangle(map, cv::Rect(20, 20, 80, 10), cv::Scalar(0.95), cv::FILLED);  // a text line
  auto boxes = DecodeDb(prob, cv::Size(256, 128), {});
  ASSERT_TRUE(boxes.ok()) << boxes.status();
  ASSERT_EQ(boxes->size(), 1u);
  const TextBox& b = (*boxes)[0];
  EXPECT_NEAR(b.score, 0.95, 1e-3);
  // Grown by area * 1.5 / perimeter on each side, then scaled x2 to the 256x128 image.
  EXPECT_LT(b.quad[0].x, 40);
  EXPECT_GT(b.quad[1].x, 2 * 99);
  EXPECT_LT(b.quad[0].y, 40);
  EXPECT_GT(b.quad[3].y, 2 * 29);
  EXPECT_LT(b.quad[0].x, b.quad[1].x);  // top-left first, clockwise
  EXPECT_LT(b.quad[1].y, b.quad[2].y);
}

TEST(CtcDecoder, CollapsesRepeatsAndDropsBlanks) {
  const std::vector<std::string> charset = {"", "a", "b", " "};
  Tensor p = Tensor::Allocate(DType::kFloat32, {1, 6, 4});
  const int best[] = {1, 1, 0, 1, 2, 3};  // a a _ a b ' ' -> "aab" (a trailing space is dropped)
  for (int t = 0; t < 6; ++t) p.data_as<float>()[t * 4 + best[t]] = 0.9f;
  auto texts = DecodeCtc(p, charset);
  ASSERT_TRUE(texts.ok());
  EXPECT_EQ((*texts)[0].text, "aab");
  EXPECT_NEAR((*texts)[0].score, 0.9, 1e-6);
  // A blank step with a fair chance of a space (>= 0.2) between two letters is a space; a weaker
  // one is not; none leads the text.
  Tensor q = Tensor::Allocate(DType::kFloat32, {3, 3, 4});
  const float rows[3][3][4] = {
      {{0.7f, 0, 0, 0.3f}, {0, 0.9f, 0, 0}, {0.9f, 0, 0, 0}},   // _ a _  -> "a"
      {{0, 0.9f, 0, 0}, {0.7f, 0, 0, 0.3f}, {0, 0, 0.9f, 0}},   // a _' b -> "a b"
      {{0, 0.9f, 0, 0}, {0.9f, 0, 0, 0.1f}, {0, 0, 0.9f, 0}}};  // a _ b  -> "ab"
  std::memcpy(q.data(), rows, sizeof(rows));
  auto spaced = DecodeCtc(q, charset);
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ((*spaced)[0].text, "a");
  EXPECT_EQ((*spaced)[1].text, "a b");
  EXPECT_EQ((*spaced)[2].text, "ab");
  EXPECT_NEAR((*spaced)[1].score, 0.9, 1e-6) << "an inferred space is not scored";
  EXPECT_EQ(DecodeCtc(Tensor::Allocate(DType::kFloat32, {1, 6, 5}), charset).status().message(),
            "CTC decoding expects [N,T,4] f32, got [1,6,5] f32");
}

TEST(CtcDecoder, TakesTheFirstOfEqualMaximaAndReadsARowOfNanAsBlank) {
  // 40 classes (past a vector's width): at step 0 classes 6 and 33 tie (in different lanes of a
  // 4-, 8- or 16-wide vector), at step 1 a later class wins, step 2 is NaN throughout (a broken
  // output must not index outside the charset).
  std::vector<std::string> charset(40);
  for (size_t c = 1; c < charset.size(); ++c)
    charset[c] = std::string(1, static_cast<char>('A' + c % 26));
  charset.back() = " ";
  Tensor p = Tensor::Allocate(DType::kFloat32, {1, 3, 40});
  float* d = p.data_as<float>();
  d[6] = d[33] = 0.5f;
  d[40 + 2] = 0.3f;
  d[40 + 35] = 0.6f;
  for (int c = 0; c < 40; ++c) d[80 + c] = std::nanf("");
  auto texts = DecodeCtc(p, charset);
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ((*texts)[0].text, charset[6] + charset[35]);
}

TEST(TextBatch, PadsEveryCropToTheWidestAtTheGivenHeight) {
  std::vector<cv::Mat> crops = {cv::Mat(24, 48, CV_8UC3, cv::Scalar(255, 255, 255)),
                                cv::Mat(10, 100, CV_8UC3, cv::Scalar(0, 0, 0))};
  Tensor batch = TextBatch(crops, 48, 1000);
  EXPECT_EQ(batch.Describe(), "[2,3,48,480] f32");               // 48 * 100 / 10 = 480
  EXPECT_FLOAT_EQ(batch.data_as<float>()[0], 1.0f);              // white -> +1
  EXPECT_FLOAT_EQ(batch.data_as<float>()[95], 1.0f);             // last pixel of the 96-wide crop
  EXPECT_FLOAT_EQ(batch.data_as<float>()[96], 0.0f);             // padding
  EXPECT_FLOAT_EQ(batch.data_as<float>()[3 * 48 * 480], -1.0f);  // black -> -1
  EXPECT_EQ(TextBatch(crops, 48, 1000, 192).Describe(), "[2,3,48,192] f32");
}

TEST(CropText, WarpsAQuadUprightAndTurnsVerticalText) {
  cv::Mat image(100, 200, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::rectangle(image, cv::Rect(50, 40, 60, 20), cv::Scalar(255, 255, 255), cv::FILLED);
  TextBox box{
      {cv::Point2f(50, 40), cv::Point2f(110, 40), cv::Point2f(110, 60), cv::Point2f(50, 60)}, 1};
  cv::Mat crop = CropText(image, box);
  EXPECT_EQ(crop.size(), cv::Size(60, 20));
  EXPECT_GT(cv::mean(crop)[0], 200);
  TextBox tall{{cv::Point2f(10, 10), cv::Point2f(20, 10), cv::Point2f(20, 50), cv::Point2f(10, 50)},
               1};
  EXPECT_EQ(CropText(image, tall).size(), cv::Size(40, 10));
}

}  // namespace
}  // namespace loom::vision
