#include "vision/mlsd.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace loom::vision {

float LineSegment::length() const { return std::hypot(x2 - x1, y2 - y1); }

absl::StatusOr<std::vector<LineSegment>> DecodeMlsd(const Tensor& scores, const Tensor& offsets,
                                                    const MlsdOptions& options) {
  if (scores.dtype() != DType::kFloat32 || scores.rank() != 4 || scores.dim(0) != 1 ||
      scores.dim(3) != 1 || scores.dim(1) != scores.dim(2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("M-LSD scores: expected [1,G,G,1] f32, got ", scores.Describe()));
  }
  const int64_t g = scores.dim(1);
  if (offsets.dtype() != DType::kFloat32 || offsets.shape() != Shape{1, g, g, 4}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "M-LSD offsets: expected ", ShapeToString({1, g, g, 4}), " f32, got ", offsets.Describe()));
  }
  const float* s = scores.data_as<float>();
  const float* o = offsets.data_as<float>();
  const float input = 2.0f * static_cast<float>(g);  // the model's input side, in pixels
  const float sx = options.image_width > 0 ? options.image_width / input : 1.0f;
  const float sy = options.image_height > 0 ? options.image_height / input : 1.0f;
  std::vector<LineSegment> lines;
  for (int64_t y = 0; y < g; ++y) {
    for (int64_t x = 0; x < g; ++x) {
      const float score = s[y * g + x];
      if (score < options.score_threshold) continue;
      bool peak = true;
      for (int64_t dy = -1; dy <= 1 && peak; ++dy) {
        for (int64_t dx = -1; dx <= 1 && peak; ++dx) {
          const int64_t ny = y + dy, nx = x + dx;
          if ((dy || dx) && ny >= 0 && nx >= 0 && ny < g && nx < g) peak = s[ny * g + nx] <= score;
        }
      }
      if (!peak) continue;
      const float* d = o + (y * g + x) * 4;
      LineSegment line{(static_cast<float>(x) + d[0]) * 2, (static_cast<float>(y) + d[1]) * 2,
                       (static_cast<float>(x) + d[2]) * 2, (static_cast<float>(y) + d[3]) * 2,
                       score};
      if (line.length() < options.min_length) continue;
      line.x1 *= sx;
      line.x2 *= sx;
      line.y1 *= sy;
      line.y2 *= sy;
      lines.push_back(line);
    }
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const LineSegment& a, const LineSegment& b) { return a.score > b.score; });
  return lines;
}

}  // namespace loom::vision
