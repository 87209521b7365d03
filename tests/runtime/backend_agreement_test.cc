// ONNX Runtime and OpenCV DNN agree on every real model OpenCV 4.6 can load; the models it cannot
// load are listed here with OpenCV's reason, and the test fails if that list changes.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "core/tensor_util.h"
#include "loom/session.h"
#include "tests/test_util.h"
#include "vision/model_inputs.h"

namespace loom {
namespace {

// Model file -> a distinctive part of OpenCV 4.6's reason for refusing it.
const std::map<std::string, std::string> kOpenCvCannotLoad = {
    {"ch_PP-OCRv4_det_infer.onnx",
     "(expected: 'node_proto.input_size() == 1')"},  // Clip with min/max inputs
    {"ch_PP-OCRv4_rec_infer.onnx", "!isDynamicShape in function 'parseShape'"},
    {"ch_ppocr_mobile_v2.0_cls_infer.onnx", "!isDynamicShape in function 'parseShape'"},
    {"mlsd_320x320_large.onnx", "inputs.size() == 1 in function 'getMemoryShapes'"},  // Split
    {"mlsd_320x320_tiny.onnx", "inputs.size() == 1 in function 'getMemoryShapes'"},
    {"mlsd_512x512_large.onnx", "inputs.size() == 1 in function 'getMemoryShapes'"},
    {"mlsd_512x512_tiny.onnx", "inputs.size() == 1 in function 'getMemoryShapes'"},
};

// Relative error bound between the backends: |ort - cv| / max(|cv|, 1e-3 × max|cv|).
constexpr double kMaxRelativeError = 1e-3;

std::vector<std::string> AllModels() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(testing::SourcePath("models"))) {
    const std::string name = entry.path().filename().string();
    // The seeded models (made by scripts/seed_models from PyTorch) are checked against torch
    // by python/tests/test_torch.py; this test covers the fetched ones.
    if (entry.path().extension() == ".onnx" && name.rfind("seeded_", 0) != 0) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(BackendAgreement, EveryRealModelAgreesOrIsAKnownOpenCvFailure) {
  const std::vector<std::string> models = AllModels();
  ASSERT_EQ(models.size(), 9u) << "scripts/setup fetches 9 ONNX models";
  std::map<std::string, std::string> refused;
  int compared = 0;
  for (const std::string& file : models) {
    SCOPED_TRACE(file);
    SessionOptions ort_options;
    ort_options.intra_op_threads = 1;
    auto ort = CreateSession(testing::ModelPath(file), ort_options);
    ASSERT_TRUE(ort.ok()) << ort.status();

    SessionOptions cv_options;
    cv_options.backend = Backend::kOpenCv;
    cv_options.intra_op_threads = 1;
    auto cv = CreateSession(testing::ModelPath(file), cv_options);
    if (!cv.ok()) {
      EXPECT_EQ(cv.status().code(), absl::StatusCode::kUnimplemented);
      refused[file] = std::string(cv.status().message());
      continue;
    }
    vision::InputSpec spec;  // random input, fixed seed; dynamic dims -> 1 x 320 x 320
    spec.seed = 7;
    auto inputs = vision::MakeInputs((*ort)->info(), spec);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    auto a = (*ort)->Run(*inputs);
    auto b = (*cv)->Run(*inputs);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
      SCOPED_TRACE((*a)[i].name);
      auto diff = Compare((*a)[i].tensor, (*b)[i].tensor);
      ASSERT_TRUE(diff.ok()) << diff.status();
      EXPECT_LE(diff->max_rel, kMaxRelativeError) << "worst element " << diff->worst_index;
    }
    ++compared;
  }
  EXPECT_EQ(compared, 2) << "both BlazeFace models load in OpenCV 4.6 and must agree";
  // The list of refusals is exactly the expected one, each for the recorded reason.
  std::vector<std::string> got, want;
  for (const auto& [file, reason] : refused) got.push_back(file);
  for (const auto& [file, reason] : kOpenCvCannotLoad) want.push_back(file);
  EXPECT_EQ(got, want);
  for (const auto& [file, reason] : refused) {
    auto it = kOpenCvCannotLoad.find(file);
    if (it == kOpenCvCannotLoad.end()) continue;
    EXPECT_NE(reason.find(it->second), std::string::npos) << file << ": " << reason;
    EXPECT_NE(reason.find("model '" + std::filesystem::path(file).stem().string() +
                          "': OpenCV DNN cannot load it: "),
              std::string::npos)
        << reason;
  }
}

}  // namespace
}  // namespace loom
