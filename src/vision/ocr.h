// PaddleOCR post- and pre-processing: DB text-detection decoding into quadrilaterals, perspective
// crops of them, the inputs of the angle classifier and the recogniser, and CTC greedy decoding.
#ifndef LOOM_VISION_OCR_H_
#define LOOM_VISION_OCR_H_

#include <array>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "loom/tensor.h"

namespace loom::vision {

struct TextBox {
  std::array<cv::Point2f, 4> quad;  // top-left, top-right, bottom-right, bottom-left (pixels)
  float score = 0;                  // mean probability inside the detected region
};

struct DbOptions {
  float threshold = 0.3f;      // probability → text pixel
  float box_threshold = 0.6f;  // mean probability a region needs to count
  float unclip_ratio = 1.5f;  // grows each region by area × ratio / perimeter (DB's shrink undone)
  float min_side = 3;         // pixels, before and after growing
  int max_candidates = 1000;
};

// Decodes the DB probability map [1,1,H,W] f32 of a detector whose input was the image resized to
// W×H, into boxes in the original image's pixels (`original` size), ordered top to bottom, then
// left to right.
absl::StatusOr<std::vector<TextBox>> DecodeDb(const Tensor& probability, cv::Size original,
                                              const DbOptions& options);

// The text under `box`, warped upright: width = the longer pair of edges, height = the other;
// a crop at least 1.5× taller than wide is turned 90° (vertical text).
cv::Mat CropText(const cv::Mat& image, const TextBox& box);

// [N,3,height,W] f32 for the recogniser / angle classifier: each crop resized to `height` keeping
// its aspect (width capped at `max_width`), (x/255 - 0.5) / 0.5 in BGR order, zero-padded on the
// right to the widest crop (`fixed_width` > 0: to exactly that width, as the classifier needs).
Tensor TextBatch(const std::vector<cv::Mat>& crops, int height, int max_width, int fixed_width = 0);

// One crop as a [1,3,height,W] row, normalised as TextBatch: W is its own width (aspect kept,
// capped at `max_width`) rounded up to a multiple of `quantum`, so that lines of similar length
// share a shape. `content_width` receives the width before the padding.
Tensor TextRow(const cv::Mat& crop, int height, int max_width, int quantum, int64_t* content_width);

// PaddleOCR's recogniser alphabet: index 0 is the CTC blank, then the key file's lines, then " ".
absl::StatusOr<std::vector<std::string>> LoadCharset(const std::string& keys_path);

struct RecognizedText {
  std::string text;
  float score = 0;  // mean of the kept characters' probabilities (0 for an empty string)
};

// Greedy CTC over [N,T,C] probabilities: argmax per step, repeats collapsed, blanks dropped; a
// blank step with a space probability of 0.2 or more is a space between words (never leading,
// trailing or doubled).
// INVALID_ARGUMENT when C differs from the charset's size.
absl::StatusOr<std::vector<RecognizedText>> DecodeCtc(const Tensor& probabilities,
                                                      const std::vector<std::string>& charset);

}  // namespace loom::vision

#endif  // LOOM_VISION_OCR_H_
