#include "bench/text_pages.h"

#include <filesystem>
#include <map>
#include <opencv2/freetype.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace loom::bench {

const std::vector<std::string>& SamplePhrases() {
  static const auto* phrases = new std::vector<std::string>{"Loom runs many models",
                                                            "invoice 2026",
                                                            "hello world",
                                                            "Debian bookworm",
                                                            "ONNX Runtime",
                                                            "throughput",
                                                            "latency",
                                                            "batch size 8",
                                                            "four cores",
                                                            "video frame 42",
                                                            "parallel threads",
                                                            "shared pool",
                                                            "Deadline exceeded",
                                                            "quick brown fox",
                                                            "jumps over",
                                                            "the lazy dog",
                                                            "Monday morning",
                                                            "street 17",
                                                            "green light",
                                                            "open source",
                                                            "river bank",
                                                            "coffee",
                                                            "November 22",
                                                            "last line"};
  return *phrases;
}

absl::StatusOr<cv::Mat> RenderTextPage(const std::vector<std::string>& phrases, int variant,
                                       const std::string& font_dir) {
  static constexpr const char* kFaces[] = {"DejaVuSans.ttf", "DejaVuSerif.ttf",
                                           "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
                                           "DejaVuSerif-Bold.ttf"};
  static constexpr int kSizes[] = {22, 28, 34, 40};
  constexpr int kLineHeight = 64, kMargin = 20, kWidth = 760;
  if (variant < 0) variant = 0;
  cv::Mat page(static_cast<int>(phrases.size()) * kLineHeight + 2 * kMargin, kWidth, CV_8UC3,
               cv::Scalar(255, 255, 255));
  std::map<std::string, cv::Ptr<cv::freetype::FreeType2>> loaded;
  for (size_t i = 0; i < phrases.size(); ++i) {
    const size_t k = i + static_cast<size_t>(variant);
    const std::string font = (std::filesystem::path(font_dir) / kFaces[k % 5]).string();
    auto& face = loaded[font];
    try {
      if (!face) {
        if (!std::filesystem::is_regular_file(font)) {
          return absl::NotFoundError(
              absl::StrCat(font, ": no such font (install fonts-dejavu-core)"));
        }
        face = cv::freetype::createFreeType2();
        face->loadFontData(font, 0);
      }
      face->putText(
          page, phrases[i],
          cv::Point(30 + static_cast<int>(k % 3) * 40, kMargin + static_cast<int>(i) * kLineHeight),
          kSizes[k % 4], cv::Scalar(0, 0, 0), -1, cv::LINE_AA, false);
    } catch (const cv::Exception& e) {
      return absl::InternalError(absl::StrCat(font, ": cannot render with it: ", e.what()));
    }
  }
  return page;
}

}  // namespace loom::bench
