// BlobFromImage against OpenCV's own cv::dnn::blobFromImage (the reference users know).
#include "vision/blob.h"

#include <gtest/gtest.h>

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include "core/tensor_util.h"
#include "tests/test_util.h"

namespace loom::vision {
namespace {

cv::Mat Photo() {
  auto image = ReadImage(testing::DataPath("messi5.jpg"));
  EXPECT_TRUE(image.ok()) << image.status();
  return *image;
}

Tensor FromBlob(const cv::Mat& blob) {
  Shape shape(blob.size.p, blob.size.p + blob.dims);
  return Tensor::Borrow(DType::kFloat32, shape, const_cast<uchar*>(blob.data));
}

TEST(BlobFromImage, MatchesOpenCvBlobFromImageNchw) {
  const cv::Mat image = Photo();
  BlobOptions options;
  options.width = 224;
  options.height = 160;
  options.channels = ChannelOrder::kRGB;
  options.scale = 1 / 127.5;
  options.mean = {127.5, 127.5, 127.5, 0};
  auto ours = BlobFromImage(image, options);
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_EQ(ours->Describe(), "[1,3,160,224] f32");
  const cv::Mat reference = cv::dnn::blobFromImage(image, 1 / 127.5, cv::Size(224, 160),
                                                   cv::Scalar(127.5, 127.5, 127.5), /*swapRB=*/true,
                                                   /*crop=*/false);
  auto diff = Compare(*ours, FromBlob(reference));
  ASSERT_TRUE(diff.ok());
  EXPECT_LE(diff->max_abs, 1e-5);
}

TEST(BlobFromImage, CenterCropMatchesOpenCv) {
  const cv::Mat image = Photo();
  BlobOptions options;
  options.width = 128;
  options.height = 128;
  options.channels = ChannelOrder::kBGR;
  options.scale = 1.0;
  options.center_crop = true;
  auto ours = BlobFromImage(image, options);
  ASSERT_TRUE(ours.ok());
  const cv::Mat reference = cv::dnn::blobFromImage(image, 1.0, cv::Size(128, 128), cv::Scalar(),
                                                   /*swapRB=*/false, /*crop=*/true);
  EXPECT_LE(Compare(*ours, FromBlob(reference))->max_abs, 1e-4);
}

TEST(BlobFromImage, NhwcIsTheTransposeOfNchwAndStdDivides) {
  const cv::Mat image = Photo();
  BlobOptions options;
  options.width = 64;
  options.height = 48;
  options.mean = {123.675, 116.28, 103.53, 0};
  options.std = {0.229, 0.224, 0.225, 1};
  auto nchw = BlobFromImage(image, options);
  options.layout = ImageLayout::kNHWC;
  auto nhwc = BlobFromImage(image, options);
  ASSERT_TRUE(nchw.ok() && nhwc.ok());
  EXPECT_EQ(nhwc->Describe(), "[1,48,64,3] f32");
  const float* a = nchw->data_as<float>();
  const float* b = nhwc->data_as<float>();
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 48; ++y) {
      for (int x = 0; x < 64; ++x) {
        ASSERT_FLOAT_EQ(a[(c * 48 + y) * 64 + x], b[(y * 64 + x) * 3 + c]);
      }
    }
  }
  // Pixel (0,0) channel R by hand: (R - mean_R) / 255 / std_R.
  cv::Mat small;
  cv::resize(image, small, cv::Size(64, 48), 0, 0, cv::INTER_LINEAR);
  const double r = small.at<cv::Vec3b>(0, 0)[2];
  EXPECT_NEAR(a[0], (r - 123.675) / 255.0 / 0.229, 1e-4);
}

TEST(BlobFromImage, AddsAnOpaqueAlphaChannelForRgbaModels) {
  const cv::Mat image = Photo();
  TensorInfo input{
      "input_image_with_alpha:0", DType::kFloat32, {{1, ""}, {32, ""}, {32, ""}, {4, ""}}};
  auto options = BlobOptionsFor(input, {0, 0});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->layout, ImageLayout::kNHWC);
  EXPECT_EQ(options->channels, ChannelOrder::kRGBA);
  auto blob = BlobFromImage(image, *options);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->Describe(), "[1,32,32,4] f32");
  for (int i = 0; i < 32 * 32; ++i) ASSERT_FLOAT_EQ(blob->data_as<float>()[i * 4 + 3], 1.0f);
}

TEST(BlobOptionsFor, DynamicSizeNeedsAFallback) {
  TensorInfo input{"x", DType::kFloat32, {{-1, "n"}, {3, ""}, {-1, "h"}, {-1, "w"}}};
  auto none = BlobOptionsFor(input, {0, 0});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(),
            "input 'x' [n,3,h,w] f32: height/width are dynamic; give a size");
  auto sized = BlobOptionsFor(input, {640, 480});
  ASSERT_TRUE(sized.ok());
  EXPECT_EQ(sized->width, 640);
  EXPECT_EQ(sized->height, 480);
  EXPECT_EQ(sized->layout, ImageLayout::kNCHW);
}

}  // namespace
}  // namespace loom::vision

namespace loom::vision {
namespace {

TEST(BlobFromImage, LetterboxKeepsTheAspectPadsAndMapsBack) {
  cv::Mat image(100, 200, CV_8UC3, cv::Scalar(200, 200, 200));  // 2:1
  BlobOptions options;
  options.width = 64;
  options.height = 64;
  options.channels = ChannelOrder::kBGR;
  options.scale = 1.0;
  options.letterbox = true;
  options.pad_value = 10;
  const ImageTransform t = TransformFor(image.size(), options);
  EXPECT_DOUBLE_EQ(t.scale_x, 0.32);  // 64 / 200
  EXPECT_DOUBLE_EQ(t.offset_y, 16);   // (64 - 32) / 2
  auto blob = BlobFromImage(image, options);
  ASSERT_TRUE(blob.ok());
  const float* p = blob->data_as<float>();
  EXPECT_FLOAT_EQ(p[0], 10);         // row 0: padding
  EXPECT_FLOAT_EQ(p[16 * 64], 200);  // row 16: the image
  EXPECT_FLOAT_EQ(p[47 * 64 + 63], 200);
  EXPECT_FLOAT_EQ(p[48 * 64], 10);  // row 48: padding again
  const cv::Point2f corner = t.ToImage({64, 48});
  EXPECT_NEAR(corner.x, 200, 1e-3);
  EXPECT_NEAR(corner.y, 100, 1e-3);
  const ImageTransform crop =
      TransformFor(image.size(), {.width = 64, .height = 64, .center_crop = true});
  EXPECT_NEAR(crop.ToImage({0, 0}).x, 50, 1e-3);  // the centre 100x100 of the image
}

}  // namespace
}  // namespace loom::vision
