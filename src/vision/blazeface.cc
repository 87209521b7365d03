#include "vision/blazeface.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace loom::vision {
namespace {

struct Layer {
  int cells;    // grid cells per row
  int anchors;  // anchors per cell
};
constexpr Layer kLayers[] = {{16, 2}, {8, 6}};
constexpr int kRegressors = 16;

absl::Status CheckShape(const NamedTensor& t, const Shape& want) {
  if (t.tensor.dtype() != DType::kFloat32 || t.tensor.shape() != want) {
    return absl::InvalidArgumentError(absl::StrCat("BlazeFace output '", t.name, "': expected ",
                                                   ShapeToString(want), " f32, got ",
                                                   t.tensor.Describe()));
  }
  return absl::OkStatus();
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-std::clamp(x, -100.0f, 100.0f))); }

}  // namespace

absl::StatusOr<std::vector<Detection>> DecodeBlazeFace(const NamedTensors& outputs, int input_size,
                                                       const BlazeFaceOptions& options) {
  if (outputs.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("BlazeFace: expected 4 outputs, got ", outputs.size()));
  }
  std::vector<Detection> candidates;
  const float scale = 1.0f / static_cast<float>(input_size);
  for (int l = 0; l < 2; ++l) {
    const Layer& layer = kLayers[l];
    const int64_t count = static_cast<int64_t>(layer.cells) * layer.cells * layer.anchors;
    LOOM_RETURN_IF_ERROR(CheckShape(outputs[static_cast<size_t>(l)], {1, count, 1}));
    LOOM_RETURN_IF_ERROR(CheckShape(outputs[static_cast<size_t>(l + 2)], {1, count, kRegressors}));
    const float* scores = outputs[static_cast<size_t>(l)].tensor.data_as<float>();
    const float* boxes = outputs[static_cast<size_t>(l + 2)].tensor.data_as<float>();
    for (int64_t i = 0; i < count; ++i) {
      const float score = Sigmoid(scores[i]);
      if (score < options.score_threshold) continue;
      const int64_t cell = i / layer.anchors;
      const float ax =
          (static_cast<float>(cell % layer.cells) + 0.5f) / static_cast<float>(layer.cells);
      const float ay =
          (static_cast<float>(cell / layer.cells) + 0.5f) / static_cast<float>(layer.cells);
      const float* r = boxes + i * kRegressors;
      const float cx = ax + r[0] * scale, cy = ay + r[1] * scale;
      const float w = r[2] * scale, h = r[3] * scale;
      Detection d;
      d.score = score;
      d.x_min = (cx - w / 2) * options.image_width;
      d.x_max = (cx + w / 2) * options.image_width;
      d.y_min = (cy - h / 2) * options.image_height;
      d.y_max = (cy + h / 2) * options.image_height;
      for (int k = 0; k < 6; ++k) {
        d.keypoints.push_back({(ax + r[4 + 2 * k] * scale) * options.image_width,
                               (ay + r[5 + 2 * k] * scale) * options.image_height});
      }
      candidates.push_back(std::move(d));
    }
  }
  return WeightedNms(std::move(candidates), options.iou_threshold);
}

}  // namespace loom::vision
