#include "loom/tensor.h"

#include <gtest/gtest.h>

#include "core/tensor_util.h"

namespace loom {
namespace {

TEST(Tensor, AllocateIsZeroedAlignedAndOwned) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {2, 3, 4});
  EXPECT_EQ(t.element_count(), 24);
  EXPECT_EQ(t.byte_size(), 96u);
  EXPECT_TRUE(t.owns_data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(t.data_as<float>()[i], 0.0f);
  EXPECT_EQ(t.Describe(), "[2,3,4] f32");
}

TEST(Tensor, BorrowSharesCallerMemoryWithoutOwning) {
  std::vector<int64_t> values = {1, 2, 3, 4};
  Tensor t = Tensor::Borrow(DType::kInt64, {4}, values.data());
  EXPECT_FALSE(t.owns_data());
  values[2] = 30;
  EXPECT_EQ(t.data_as<int64_t>()[2], 30);
}

TEST(Tensor, CopiesShareTheBufferAndCloneDoesNot) {
  Tensor a = Tensor::Allocate(DType::kFloat32, {4});
  Tensor b = a;
  Tensor c = a.Clone();
  a.data_as<float>()[0] = 7;
  EXPECT_EQ(b.data_as<float>()[0], 7);
  EXPECT_EQ(c.data_as<float>()[0], 0);
}

TEST(Tensor, SliceRowsIsAViewThatKeepsTheBufferAlive) {
  Tensor rows;
  {
    Tensor t = Tensor::Allocate(DType::kInt32, {4, 2});
    for (int i = 0; i < 8; ++i) t.data_as<int32_t>()[i] = i;
    rows = t.SliceRows(1, 3);
  }
  ASSERT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.data_as<int32_t>()[0], 2);
  EXPECT_EQ(rows.data_as<int32_t>()[3], 5);
}

TEST(Tensor, ReshapeChecksElementCount) {
  Tensor t = Tensor::Allocate(DType::kUInt8, {2, 6});
  ASSERT_TRUE(t.Reshape({3, 4}).ok());
  auto bad = t.Reshape({5, 2});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "cannot reshape [2,6] u8 to [5,2]: element counts differ");
}

TEST(TensorLimits, HostileShapesAreRefusedBeforeAnyProductIsFormed) {
  EXPECT_TRUE(CheckShape(DType::kFloat32, {1, 3, 224, 224}).ok());
  EXPECT_EQ(CheckShape(DType::kFloat32, {1, 3, 99999, 99999}).message(),
            "tensor [1,3,99999,99999] f32 has 3e+10 elements, over the limit of 2147483648 per "
            "tensor (max_elements)");
  EXPECT_EQ(
      CheckShape(DType::kFloat32, {1, 3, 16384, 16384}).message(),
      "tensor [1,3,16384,16384] f32 needs 3.2 GB, over the limit of 2.1 GB per tensor (max_bytes)");
  // Products that wrap int64 (2^32 * 2^32 * 4): refused, not wrapped past the check.
  EXPECT_EQ(CheckShape(DType::kFloat32, {int64_t{1} << 32, int64_t{1} << 32, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckShape(DType::kFloat32, {INT64_MAX, 2}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckShape(DType::kFloat32, {2, -1}).message(), "tensor [2,-1] f32 has a negative dim");
  EXPECT_EQ(CheckShape(DType::kUInt8, Shape(9, 1)).message(),
            "tensor [1,1,1,1,1,1,1,1,1] u8 has rank 9, over the limit of 8 (max_rank)");
  // A dim of 0 makes an empty tensor, whatever the others are.
  EXPECT_EQ(*CheckedElementCount(DType::kFloat64, {0, INT64_MAX}), 0);
  TensorLimits tight{.max_rank = 2, .max_elements = 10, .max_bytes = 16};
  EXPECT_EQ(CheckShape(DType::kFloat32, {2, 3}, tight).message(),
            "tensor [2,3] f32 needs 24 bytes, over the limit of 16 bytes per tensor (max_bytes)");
}

TEST(TensorLimits, TryAllocateChecksFirstAndReportsMemoryItCannotHave) {
  auto huge = Tensor::TryAllocate(DType::kFloat32, {1, 3, 99999, 99999});
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  auto fine = Tensor::TryAllocate(DType::kInt64, {2, 2});
  ASSERT_TRUE(fine.ok());
  EXPECT_EQ(fine->byte_size(), 32u);
  EXPECT_FALSE(Tensor::TryAllocate(DType::kUnknown, {2}).ok());
}

TEST(DType, ParsesNamesAndAliases) {
  EXPECT_EQ(*ParseDType("f32"), DType::kFloat32);
  EXPECT_EQ(*ParseDType("FLOAT32"), DType::kFloat32);
  EXPECT_EQ(*ParseDType("int64"), DType::kInt64);
  EXPECT_EQ(ParseDType("complex").status().message(), "unknown dtype 'complex'");
  EXPECT_EQ(DTypeSize(DType::kFloat16), 2u);
}

TEST(TensorUtil, CompareFindsTheWorstElement) {
  Tensor a = Tensor::Allocate(DType::kFloat32, {3});
  Tensor b = Tensor::Allocate(DType::kFloat32, {3});
  float* pa = a.data_as<float>();
  float* pb = b.data_as<float>();
  pa[0] = 1;
  pb[0] = 1;
  pa[1] = 2;
  pb[1] = 2.5f;
  pa[2] = 10;
  pb[2] = 10.01f;
  auto d = Compare(a, b);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->worst_index, 1);
  EXPECT_NEAR(d->max_rel, 0.2, 1e-6);
  EXPECT_NEAR(d->max_abs, 0.5, 1e-6);
}

TEST(TensorUtil, FillRandomIsDeterministicAndTopKOrders) {
  Tensor a = Tensor::Allocate(DType::kFloat32, {1, 100});
  Tensor b = Tensor::Allocate(DType::kFloat32, {1, 100});
  FillRandom(a, 42);
  FillRandom(b, 42);
  EXPECT_EQ(Compare(a, b)->max_abs, 0.0);
  auto top = TopK(a, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_GE(top[0].second, top[1].second);
  EXPECT_GE(top[1].second, top[2].second);
  EXPECT_TRUE(IsVectorLike(a));
  EXPECT_FALSE(IsVectorLike(Tensor::Allocate(DType::kFloat32, {2, 3})));
}

}  // namespace
}  // namespace loom
