// Paths to the real models and media that scripts/setup fetches, and scratch files for tests.
#ifndef LOOM_TESTS_TEST_UTIL_H_
#define LOOM_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

namespace loom::testing {

inline std::string SourcePath(const std::string& relative) {
  return std::string(LOOM_SOURCE_DIR) + "/" + relative;
}
inline std::string ModelPath(const std::string& file) { return SourcePath("models/" + file); }
inline std::string DataPath(const std::string& file) { return SourcePath("data/" + file); }

// Model files scripts/setup fetches.
inline constexpr const char* kBlazeFaceBack = "face_detection_back_256x256_barracuda.onnx";
inline constexpr const char* kBlazeFaceFront = "face_detection_front_128x128_barracuda.onnx";
inline constexpr const char* kMlsdTiny320 = "mlsd_320x320_tiny.onnx";
inline constexpr const char* kOcrDet = "ch_PP-OCRv4_det_infer.onnx";
inline constexpr const char* kOcrCls = "ch_ppocr_mobile_v2.0_cls_infer.onnx";
inline constexpr const char* kOcrRec = "ch_PP-OCRv4_rec_infer.onnx";

// A fresh directory under the system temp dir, removed when the object goes.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("loom_test_" + std::string(info ? info->name() : "x") + "_" +
             std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Path(const std::string& name) const { return (path_ / name).string(); }
  std::string Write(const std::string& name, const std::string& bytes) const {
    std::ofstream(Path(name), std::ios::binary) << bytes;
    return Path(name);
  }

 private:
  std::filesystem::path path_;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace loom::testing

#endif  // LOOM_TESTS_TEST_UTIL_H_
