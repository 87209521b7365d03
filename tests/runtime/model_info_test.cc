// ModelInfo of every real model scripts/setup fetches.
#include "loom/model_info.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace loom {
namespace {

using testing::ModelPath;

ModelInfo Read(const char* file) {
  auto info = ReadModelInfo(ModelPath(file));
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? *info : ModelInfo{};
}

TEST(ModelInfo, BlazeFaceIsNhwcWithBatchFixedToOne) {
  for (const char* file : {testing::kBlazeFaceBack, testing::kBlazeFaceFront}) {
    SCOPED_TRACE(file);
    const ModelInfo info = Read(file);
    const int size = std::string(file).find("256") != std::string::npos ? 256 : 128;
    ASSERT_EQ(info.inputs.size(), 1u);
    EXPECT_EQ(info.inputs[0].name, "input:0");
    EXPECT_EQ(info.inputs[0].Describe(),
              "[1," + std::to_string(size) + "," + std::to_string(size) + ",3] f32");
    EXPECT_EQ(info.inputs[0].image_layout(), ImageLayout::kNHWC);
    EXPECT_FALSE(info.dynamic_batch);
    EXPECT_EQ(info.opset, 12);
    EXPECT_EQ(info.producer_name, "tf2onnx");
    // 896 anchors: 512 + 384 scores and 16 box/keypoint values.
    ASSERT_EQ(info.outputs.size(), 4u);
    EXPECT_EQ(info.outputs[0].Describe(), "[1,512,1] f32");
    EXPECT_EQ(info.outputs[1].Describe(), "[1,384,1] f32");
    EXPECT_EQ(info.outputs[2].Describe(), "[1,512,16] f32");
    EXPECT_EQ(info.outputs[3].Describe(), "[1,384,16] f32");
  }
}

TEST(ModelInfo, MlsdIsNhwcRgbaWithBatchFixedToOne) {
  for (int size : {320, 512}) {
    for (const char* variant : {"tiny", "large"}) {
      const std::string file =
          "mlsd_" + std::to_string(size) + "x" + std::to_string(size) + "_" + variant + ".onnx";
      SCOPED_TRACE(file);
      const ModelInfo info = Read(file.c_str());
      ASSERT_EQ(info.inputs.size(), 1u);
      EXPECT_EQ(info.inputs[0].name, "input_image_with_alpha:0");
      EXPECT_EQ(info.inputs[0].Describe(),
                "[1," + std::to_string(size) + "," + std::to_string(size) + ",4] f32");
      EXPECT_EQ(info.inputs[0].image_layout(), ImageLayout::kNHWC);
      EXPECT_FALSE(info.dynamic_batch);
      EXPECT_EQ(info.opset, 11);
      ASSERT_EQ(info.outputs.size(), 2u);
      const std::string half = std::to_string(size / 2);
      EXPECT_EQ(info.outputs[0].name, "offsets");
      EXPECT_EQ(info.outputs[0].Describe(), "[1," + half + "," + half + ",4] f32");
      EXPECT_EQ(info.outputs[1].name, "scores");
      EXPECT_EQ(info.outputs[1].Describe(), "[1," + half + "," + half + ",1] f32");
    }
  }
}

TEST(ModelInfo, PaddleOcrModelsAreNchwWithDynamicBatchAndSize) {
  const ModelInfo det = Read(testing::kOcrDet);
  ASSERT_EQ(det.inputs.size(), 1u);
  EXPECT_EQ(det.inputs[0].name, "x");
  EXPECT_EQ(det.inputs[0].ShapeString(),
            "[p2o.DynamicDimension.0,3,p2o.DynamicDimension.1,p2o.DynamicDimension.2]");
  EXPECT_EQ(det.inputs[0].image_layout(), ImageLayout::kNCHW);
  EXPECT_TRUE(det.dynamic_batch);
  EXPECT_EQ(det.opset, 11);
  ASSERT_EQ(det.outputs.size(), 1u);
  EXPECT_EQ(det.outputs[0].shape.size(), 4u);
  EXPECT_EQ(det.outputs[0].shape[1].value, 1);

  const ModelInfo cls = Read(testing::kOcrCls);
  EXPECT_TRUE(cls.dynamic_batch);
  EXPECT_EQ(cls.inputs[0].image_layout(), ImageLayout::kNCHW);
  ASSERT_EQ(cls.outputs.size(), 1u);
  EXPECT_EQ(cls.outputs[0].shape.size(), 2u);
  EXPECT_EQ(cls.outputs[0].shape[1].value, 2);  // 0° / 180°

  const ModelInfo rec = Read(testing::kOcrRec);
  EXPECT_TRUE(rec.dynamic_batch);
  EXPECT_EQ(rec.inputs[0].ShapeString(), "[p2o.DynamicDimension.0,3,48,p2o.DynamicDimension.1]");
  ASSERT_EQ(rec.outputs.size(), 1u);
  EXPECT_EQ(rec.outputs[0].shape[2].value, 6625);  // 6623 keys + blank + space
}

TEST(ModelInfo, FormatsReadably) {
  const std::string text = FormatModelInfo(Read(testing::kMlsdTiny320));
  EXPECT_NE(text.find("input_image_with_alpha:0  [1,320,320,4] f32  (image, NHWC)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("fixed: parallel instances instead of batching"), std::string::npos);
  EXPECT_NE(text.find("opset 11"), std::string::npos);
}

}  // namespace
}  // namespace loom
