// The PaddleOCR chain on an Engine: text detection (DB) → a perspective crop per box → angle
// classifier (turns 180°-rotated crops upright) → recogniser (CTC), the crops of one image batched
// into one request per model.
//
// Thread safety: Run may be called from several threads at once (the engine serialises nothing
// but its own sessions). The engine must outlive the chain.
#ifndef LOOM_PIPELINE_OCR_CHAIN_H_
#define LOOM_PIPELINE_OCR_CHAIN_H_

#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "loom/engine.h"
#include "vision/ocr.h"

namespace loom::pipeline {

struct OcrOptions {
  std::string det_model = "det";  // engine model names
  std::string cls_model = "cls";  // empty: no angle classification
  std::string rec_model = "rec";
  std::string keys_path;          // ppocr_keys_v1.txt
  int det_max_side = 960;         // the image is scaled down to this, then to multiples of 32
  vision::DbOptions db;
  float cls_threshold = 0.9f;     // probability of "180°" needed to rotate a crop
  // A crop the classifier turned and the recogniser then read below this mean character
  // probability is read again upright; the better read wins (costs one more batched run, only
  // for such lines).
  float recheck_below_score = 0.6f;
  int rec_max_width = 1280;
};

struct OcrLine {
  vision::TextBox box;
  std::string text;
  float score = 0;
  bool rotated = false;  // the angle classifier turned it 180°
};

class OcrChain {
 public:
  // Checks that the engine has the three models with the expected inputs; loads the charset.
  static absl::StatusOr<std::unique_ptr<OcrChain>> Create(Engine* engine, OcrOptions options);

  // Lines of `image` (8-bit BGR) in reading order.
  absl::StatusOr<std::vector<OcrLine>> Run(const cv::Mat& image) const;

 private:
  OcrChain(Engine* engine, OcrOptions options, std::vector<std::string> charset)
      : engine_(engine), options_(std::move(options)), charset_(std::move(charset)) {}

  // One recogniser request for all `crops` (height 48, padded to the widest), CTC-decoded.
  absl::StatusOr<std::vector<vision::RecognizedText>> Recognize(const std::vector<cv::Mat>& crops) const;

  Engine* engine_;
  OcrOptions options_;
  std::vector<std::string> charset_;
};

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_OCR_CHAIN_H_
