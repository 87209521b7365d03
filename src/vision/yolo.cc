#include "vision/yolo.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace loom::vision {
namespace {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Keeps the `limit` highest-scoring candidates.
void Trim(std::vector<Detection>& candidates, int limit) {
  if (static_cast<int>(candidates.size()) <= limit) return;
  std::nth_element(candidates.begin(), candidates.begin() + limit, candidates.end(),
                   [](const Detection& a, const Detection& b) { return a.score > b.score; });
  candidates.resize(static_cast<size_t>(limit));
}

absl::Status DecodeRawLevel(const NamedTensor& out, const std::vector<float>& anchors, int stride,
                            int64_t classes, const YoloOptions& o,
                            std::vector<Detection>& candidates) {
  const Tensor& t = out.tensor;
  const int64_t per_anchor = 5 + classes;
  const int64_t na = static_cast<int64_t>(anchors.size() / 2);
  if (t.dtype() != DType::kFloat32 || t.rank() != 4 || t.dim(0) != 1 ||
      t.dim(1) != na * per_anchor) {
    return absl::InvalidArgumentError(absl::StrCat("YOLO output '", out.name, "' is ", t.Describe(),
                                                   "; expected [1,", na * per_anchor, ",H,W] f32 (",
                                                   na, " anchors x (5 + ", classes, " classes))"));
  }
  const int64_t h = t.dim(2), w = t.dim(3), cells = h * w;
  const float* v = t.data_as<float>();
  for (int64_t a = 0; a < na; ++a) {
    const float* base = v + a * per_anchor * cells;  // [5 + C, H, W] of this anchor
    for (int64_t cell = 0; cell < cells; ++cell) {
      const float objectness = Sigmoid(base[4 * cells + cell]);
      if (objectness <= o.score_threshold) continue;
      int best = 0;
      float best_logit = -INFINITY;
      for (int64_t c = 0; c < classes; ++c) {
        const float logit = base[(5 + c) * cells + cell];
        if (logit > best_logit) best_logit = logit, best = static_cast<int>(c);
      }
      const float score = objectness * (classes > 0 ? Sigmoid(best_logit) : 1.0f);
      if (score <= o.score_threshold) continue;
      const float x = static_cast<float>(cell % w), y = static_cast<float>(cell / w);
      const float cx = (Sigmoid(base[cell]) * 2 - 0.5f + x) * static_cast<float>(stride);
      const float cy = (Sigmoid(base[cells + cell]) * 2 - 0.5f + y) * static_cast<float>(stride);
      const float bw =
          std::pow(Sigmoid(base[2 * cells + cell]) * 2, 2.0f) * anchors[static_cast<size_t>(2 * a)];
      const float bh = std::pow(Sigmoid(base[3 * cells + cell]) * 2, 2.0f) *
                       anchors[static_cast<size_t>(2 * a + 1)];
      Detection d;
      d.x_min = cx - bw / 2, d.y_min = cy - bh / 2, d.x_max = cx + bw / 2, d.y_max = cy + bh / 2;
      d.score = score;
      d.class_id = best;
      candidates.push_back(std::move(d));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeDecoded(const NamedTensor& out, const YoloOptions& o,
                           std::vector<Detection>& candidates) {
  const Tensor& t = out.tensor;
  if (t.dtype() != DType::kFloat32 || t.rank() != 3 || t.dim(0) != 1 || t.dim(2) < 5) {
    return absl::InvalidArgumentError(absl::StrCat("YOLO output '", out.name, "' is ", t.Describe(),
                                                   "; expected [1,boxes,5+classes] f32"));
  }
  const int64_t n = t.dim(1), per = t.dim(2), classes = per - 5;
  const float* v = t.data_as<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float* r = v + i * per;
    if (r[4] <= o.score_threshold) continue;
    int best = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (r[5 + c] > r[5 + best]) best = static_cast<int>(c);
    }
    const float score = r[4] * (classes > 0 ? r[5 + best] : 1.0f);
    if (score <= o.score_threshold) continue;
    Detection d;
    d.x_min = r[0] - r[2] / 2, d.y_min = r[1] - r[3] / 2, d.x_max = r[0] + r[2] / 2,
    d.y_max = r[1] + r[3] / 2;
    d.score = score;
    d.class_id = best;
    candidates.push_back(std::move(d));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Detection>> DecodeYolo(const NamedTensors& outputs,
                                                  const YoloOptions& o) {
  std::vector<Detection> candidates;
  if (!o.raw) {
    if (outputs.empty()) return absl::InvalidArgumentError("YOLO: the model gave no output");
    LOOM_RETURN_IF_ERROR(DecodeDecoded(outputs[0], o, candidates));
  } else {
    if (outputs.size() != o.strides.size() || o.anchors.size() != o.strides.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "YOLO: the model gives ", outputs.size(), " outputs, but ", o.strides.size(),
          " strides and ", o.anchors.size(), " anchor sets were given (one each per output)"));
    }
    const int64_t na = static_cast<int64_t>(o.anchors[0].size() / 2);
    const Tensor& first = outputs[0].tensor;
    if (na < 1 || first.rank() != 4 || first.dim(1) % na != 0 || first.dim(1) / na < 5) {
      return absl::InvalidArgumentError(absl::StrCat("YOLO output '", outputs[0].name, "' is ",
                                                     first.Describe(), "; expected [1,", na,
                                                     "*(5+classes),H,W] f32"));
    }
    const int64_t classes = first.dim(1) / na - 5;
    for (size_t l = 0; l < outputs.size(); ++l) {
      LOOM_RETURN_IF_ERROR(
          DecodeRawLevel(outputs[l], o.anchors[l], o.strides[l], classes, o, candidates));
    }
  }
  Trim(candidates, o.max_candidates);
  return ClassNms(std::move(candidates), o.iou_threshold, o.max_detections);
}

std::vector<Detection> ClassNms(std::vector<Detection> detections, float iou_threshold,
                                int max_detections) {
  std::stable_sort(detections.begin(), detections.end(),
                   [](const Detection& a, const Detection& b) { return a.score > b.score; });
  std::vector<Detection> kept;
  for (Detection& d : detections) {
    if (static_cast<int>(kept.size()) >= max_detections) break;
    bool suppressed = false;
    for (const Detection& k : kept) {
      if (k.class_id == d.class_id && IoU(k, d) > iou_threshold) {
        suppressed = true;
        break;
      }
    }
    if (!suppressed) kept.push_back(std::move(d));
  }
  return kept;
}

}  // namespace loom::vision
