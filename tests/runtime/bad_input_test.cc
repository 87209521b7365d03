// Bad input gets a clear error naming the culprit, and loses nothing else: the session stays
// usable.
#include <gtest/gtest.h>

#include "loom/session.h"
#include "onnx/onnx_pb.h"
#include "runtime/synthetic_models.h"
#include "tests/test_util.h"
#include "vision/blob.h"

namespace loom {
namespace {

using testing::ModelPath;
using testing::ScratchDir;

std::string LoadError(const std::string& path, Backend backend = Backend::kOnnxRuntime) {
  SessionOptions options;
  options.backend = backend;
  options.intra_op_threads = 1;
  auto session = CreateSession(path, options);
  EXPECT_FALSE(session.ok()) << path << " loaded";
  return session.ok() ? "" : std::string(session.status().message());
}

TEST(BadModelFile, MissingFileIsNamed) {
  for (Backend backend : {Backend::kOnnxRuntime, Backend::kOpenCv}) {
    EXPECT_EQ(LoadError("/nonexistent/m.onnx", backend),
              "model file '/nonexistent/m.onnx' does not exist");
  }
  EXPECT_EQ(ReadModelInfo("/nonexistent/m.onnx").status().code(), absl::StatusCode::kNotFound);
}

TEST(BadModelFile, EmptyFileIsNamed) {
  ScratchDir dir;
  const std::string path = dir.Write("empty.onnx", "");
  EXPECT_EQ(LoadError(path), "model file '" + path + "' is empty (0 bytes)");
}

TEST(BadModelFile, TruncatedOnnxIsReportedAsSuch) {
  ScratchDir dir;
  const std::string bytes = testing::ReadFile(ModelPath(testing::kMlsdTiny320));
  ASSERT_GT(bytes.size(), 1000u);
  const std::string half = bytes.substr(0, bytes.size() / 2);
  const std::string path = dir.Write("truncated.onnx", half);
  for (Backend backend : {Backend::kOnnxRuntime, Backend::kOpenCv}) {
    EXPECT_EQ(LoadError(path, backend),
              "model file '" + path + "' is not a valid ONNX model: its protobuf does not parse (" +
                  std::to_string(half.size()) + " bytes; truncated, or not ONNX)");
  }
}

TEST(BadModelFile, JpegRenamedOnnxIsRecognised) {
  ScratchDir dir;
  const std::string path =
      dir.Write("photo.onnx", testing::ReadFile(testing::DataPath("messi5.jpg")));
  EXPECT_EQ(LoadError(path),
            "model file '" + path + "' is not an ONNX model: it looks like a JPEG image");
}

// A file whose protobuf parses but whose graph is broken: OpenCV DNN's refusal is reported as a
// broken model (INVALID_ARGUMENT, with ONNX's checker's reason), not as an unsupported one.
TEST(BadModelFile, CorruptGraphIsInvalidArgumentForOpenCv) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(testing::ReadFile(dir.Path("add.onnx"))));
  model.mutable_graph()->mutable_node(0)->set_op_type("NoSuchOperator");
  const std::string path = dir.Write("corrupt.onnx", model.SerializeAsString());
  SessionOptions options;
  options.backend = Backend::kOpenCv;
  auto session = CreateSession(path, options);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument) << session.status();
  EXPECT_NE(session.status().message().find("is not a valid ONNX model: "), std::string::npos)
      << session.status();
  EXPECT_NE(session.status().message().find("NoSuchOperator"), std::string::npos)
      << session.status();
  // A valid model OpenCV cannot run stays UNIMPLEMENTED.
  auto unsupported = CreateSession(ModelPath(testing::kMlsdTiny320), options);
  EXPECT_EQ(unsupported.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(BadModelFile, DirectoryIsNamed) {
  ScratchDir dir;
  EXPECT_EQ(LoadError(dir.Path("")), "model file '" + dir.Path("") + "' is a directory");
}

class BadInputs : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    SessionOptions options;
    options.backend = GetParam();
    options.intra_op_threads = 1;
    // BlazeFace loads in both backends.
    auto session = CreateSession(ModelPath(testing::kBlazeFaceFront), options);
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = std::move(*session);
  }

  std::string RunError(const NamedTensors& inputs) {
    auto result = session_->Run(inputs);
    EXPECT_FALSE(result.ok());
    if (result.ok()) return "";
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    // The session is still usable after the bad request.
    auto good = session_->Run({{"input:0", Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3})}});
    EXPECT_TRUE(good.ok()) << good.status();
    return std::string(result.status().message());
  }

  std::unique_ptr<Session> session_;
};

TEST_P(BadInputs, UnknownInputNameListsTheRealOnes) {
  EXPECT_EQ(RunError({{"image", Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3})}}),
            "model 'face_detection_front_128x128_barracuda' has no input 'image'; its inputs are "
            "'input:0'");
}

TEST_P(BadInputs, WrongRank) {
  EXPECT_EQ(RunError({{"input:0", Tensor::Allocate(DType::kFloat32, {128, 128, 3})}}),
            "model 'face_detection_front_128x128_barracuda' input 'input:0': expected "
            "[1,128,128,3] f32, got [128,128,3] f32 (wrong rank)");
}

TEST_P(BadInputs, WrongShape) {
  EXPECT_EQ(RunError({{"input:0", Tensor::Allocate(DType::kFloat32, {1, 3, 128, 128})}}),
            "model 'face_detection_front_128x128_barracuda' input 'input:0': expected "
            "[1,128,128,3] f32, got [1,3,128,128] f32 (wrong shape)");
}

TEST_P(BadInputs, WrongDtype) {
  EXPECT_EQ(RunError({{"input:0", Tensor::Allocate(DType::kUInt8, {1, 128, 128, 3})}}),
            "model 'face_detection_front_128x128_barracuda' input 'input:0': expected "
            "[1,128,128,3] f32, got [1,128,128,3] u8 (wrong dtype)");
}

TEST_P(BadInputs, MissingInput) {
  EXPECT_EQ(RunError({}),
            "model 'face_detection_front_128x128_barracuda' input 'input:0' ([1,128,128,3] f32) is "
            "missing");
}

INSTANTIATE_TEST_SUITE_P(Backends, BadInputs,
                         ::testing::Values(Backend::kOnnxRuntime, Backend::kOpenCv),
                         [](const auto& info) { return std::string(BackendName(info.param)); });

TEST(BadImage, UnreadableImageIsNamed) {
  ScratchDir dir;
  const std::string path = dir.Write("notes.jpg", "this is not a JPEG");
  auto image = vision::ReadImage(path);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message(), "image file '" + path +
                                          "' cannot be decoded (not an image OpenCV reads, or "
                                          "corrupt)");
  EXPECT_EQ(vision::ReadImage(dir.Path("missing.png")).status().message(),
            "image file '" + dir.Path("missing.png") + "' does not exist");
}

}  // namespace
}  // namespace loom
