#include "core/tensor_rows.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

Tensor Rows(int64_t rows, int64_t width, float first) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = first + static_cast<float>(i);
  return t;
}

TEST(TensorRows, ConcatThenSplitGivesEachPartItsOwnRows) {
  NamedTensors a = {{"x", Rows(1, 3, 0)}}, b = {{"x", Rows(2, 3, 100)}},
               c = {{"x", Rows(3, 3, 200)}};
  auto batch = ConcatRows({&a, &b, &c});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ((*batch)[0].tensor.Describe(), "[6,3] f32");
  EXPECT_EQ((*batch)[0].tensor.data_as<float>()[3], 100.0f);
  EXPECT_EQ((*batch)[0].tensor.data_as<float>()[9], 200.0f);
  auto parts = SplitRows("m", *batch, {1, 2, 3});
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[1][0].tensor.Describe(), "[2,3] f32");
  EXPECT_EQ((*parts)[1][0].tensor.data_as<float>()[5], 105.0f);
  EXPECT_EQ((*parts)[2][0].tensor.data_as<float>()[0], 200.0f);
}

TEST(TensorRows, SinglePartIsPassedThroughWithoutCopy) {
  NamedTensors a = {{"x", Rows(2, 3, 0)}};
  auto batch = ConcatRows({&a});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ((*batch)[0].tensor.data(), a[0].tensor.data());
}

// Parts from separate runs may disagree: every mismatch is an error before any byte is copied.
TEST(TensorRows, ConcatRefusesPartsThatDisagree) {
  NamedTensors a = {{"x", Rows(1, 3, 0)}};
  NamedTensors wider = {{"x", Rows(1, 4, 0)}};
  auto bad = ConcatRows({&a, &wider});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "cannot join rows: part 1 tensor 'x' is [1,4] f32, part 0 tensor 'x' is [1,3] f32 "
            "(names, dtypes and every dim after the first must agree)");
  NamedTensors other_dtype = {{"x", Tensor::Allocate(DType::kInt32, {1, 3})}};
  EXPECT_FALSE(ConcatRows({&a, &other_dtype}).ok());
  NamedTensors renamed = {{"y", Rows(1, 3, 0)}};
  EXPECT_FALSE(ConcatRows({&a, &renamed}).ok());
  NamedTensors two = {{"x", Rows(1, 3, 0)}, {"z", Rows(1, 3, 0)}};
  EXPECT_FALSE(ConcatRows({&a, &two}).ok());
  NamedTensors rank3 = {{"x", Tensor::Allocate(DType::kFloat32, {1, 3, 1})}};
  EXPECT_FALSE(ConcatRows({&a, &rank3}).ok());
  NamedTensors scalar = {{"x", Tensor::Allocate(DType::kFloat32, {})}};
  EXPECT_FALSE(ConcatRows({&scalar, &scalar}).ok());
  EXPECT_FALSE(ConcatRows({}).ok());
}

TEST(TensorRows, ConcatChecksTheJoinedSizeAgainstTheLimits) {
  NamedTensors a = {{"x", Rows(3, 4, 0)}};
  TensorLimits small;
  small.max_elements = 20;
  auto joined = ConcatRows({&a, &a}, small);
  ASSERT_FALSE(joined.ok());
  EXPECT_EQ(joined.status().message(),
            "tensor [6,4] f32 has 24 elements, over the limit of 20 per tensor (max_elements)");
}

TEST(TensorRows, SplitRefusesOutputsWhoseDimZeroIsNotTheBatch) {
  NamedTensors outputs = {{"y", Rows(1, 3, 0)}};
  auto parts = SplitRows("pooled", outputs, {2, 1});
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(
      parts.status().message(),
      "model 'pooled' output 'y' is [1,3] f32 for a batch of 3 rows: its dim 0 does not follow "
      "the batch, so the batch cannot be split (set max_batch_size: 1 for this model)");
  EXPECT_FALSE(SplitRows("m", outputs, {-1, 2}).ok());
}

}  // namespace
}  // namespace loom
