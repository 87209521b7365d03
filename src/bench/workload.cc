#include "bench/workload.h"

#include <opencv2/videoio.hpp>

#include "absl/strings/str_cat.h"
#include "vision/blob.h"
#include "vision/model_inputs.h"

namespace loom::bench {
namespace {

// Normalisation of the model families Loom ships with; generic models get blobFromImage's
// defaults (RGB, x / 255).
vision::InputSpec InputSpecFor(const ModelInfo& info, const cv::Mat& image,
                               const WorkloadSpec& spec) {
  vision::InputSpec in;
  in.image = image;
  in.size = {spec.width, spec.height};
  const ImageLayout layout =
      info.inputs.empty() ? ImageLayout::kNone : info.inputs[0].image_layout();
  const bool rgba = layout == ImageLayout::kNHWC && info.inputs[0].shape[3].value == 4;
  if (rgba) {  // M-LSD: RGB in 0..255, alpha 1
    in.scale = 1.0;
    in.std = std::array<double, 4>{1, 1, 1, 255};
  } else if (layout == ImageLayout::kNHWC) {  // MediaPipe BlazeFace: [-1, 1]
    in.scale = 1.0 / 127.5;
    in.mean = std::array<double, 4>{127.5, 127.5, 127.5, 127.5};
  } else if (info.dynamic_batch && layout == ImageLayout::kNCHW) {  // PaddleOCR: ImageNet, BGR
    in.channels = vision::ChannelOrder::kBGR;
    in.mean = std::array<double, 4>{123.675, 116.28, 103.53, 0};
    in.std = std::array<double, 4>{0.229, 0.224, 0.225, 1};
  }
  return in;
}

absl::StatusOr<std::vector<cv::Mat>> LoadItems(const WorkloadSpec& spec) {
  std::vector<cv::Mat> items;
  if (!spec.video.empty()) {
    cv::VideoCapture capture(spec.video, cv::CAP_FFMPEG);  // a file: no camera backend probing
    if (!capture.isOpened()) {
      return absl::InvalidArgumentError(absl::StrCat("video '", spec.video, "' cannot be opened"));
    }
    cv::Mat frame;
    while (static_cast<int>(items.size()) < spec.items && capture.read(frame)) {
      items.push_back(frame.clone());
    }
    if (items.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("video '", spec.video, "' has no frames"));
    }
    // A short video is cycled like a folder of images.
    for (size_t i = 0; static_cast<int>(items.size()) < spec.items; ++i) items.push_back(items[i]);
    return items;
  }
  if (spec.images.empty()) return absl::InvalidArgumentError("a workload needs images or a video");
  std::vector<cv::Mat> decoded;
  for (const std::string& path : spec.images) {
    LOOM_ASSIGN_OR_RETURN(cv::Mat image, vision::ReadImage(path));
    decoded.push_back(image);
  }
  for (int i = 0; i < spec.items; ++i)
    items.push_back(decoded[static_cast<size_t>(i) % decoded.size()]);
  return items;
}

}  // namespace

nlohmann::json WorkloadSpec::ToJson() const {
  nlohmann::json models_json = nlohmann::json::array();
  for (const BenchModel& m : models) models_json.push_back({{"name", m.name}, {"path", m.path}});
  return {{"kind", kind == WorkloadKind::kCopies ? "copies" : "fanout"},
          {"models", models_json},
          {"copies", copies},
          {"items", items},
          {"images", images},
          {"video", video},
          {"width", width},
          {"height", height}};
}

absl::StatusOr<WorkloadSpec> WorkloadSpec::FromJson(const nlohmann::json& j) {
  WorkloadSpec spec;
  try {
    spec.kind = j.at("kind") == "copies" ? WorkloadKind::kCopies : WorkloadKind::kFanout;
    for (const auto& m : j.at("models")) spec.models.push_back({m.at("name"), m.at("path")});
    spec.copies = j.at("copies");
    spec.items = j.at("items");
    spec.images = j.at("images").get<std::vector<std::string>>();
    spec.video = j.at("video");
    spec.width = j.at("width");
    spec.height = j.at("height");
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad workload spec: ", e.what()));
  }
  return spec;
}

absl::StatusOr<Workload> PrepareWorkload(const WorkloadSpec& spec) {
  if (spec.models.empty()) return absl::InvalidArgumentError("a workload needs at least one model");
  if (spec.items < 1) return absl::InvalidArgumentError("a workload needs at least one item");
  Workload w;
  w.spec = spec;
  LOOM_ASSIGN_OR_RETURN(std::vector<cv::Mat> items, LoadItems(spec));
  for (const BenchModel& m : spec.models) {
    LOOM_ASSIGN_OR_RETURN(ModelInfo info, ReadModelInfo(m.path));
    std::vector<NamedTensors> inputs;
    for (const cv::Mat& image : items) {
      auto tensors = vision::MakeInputs(info, InputSpecFor(info, image, spec));
      if (!tensors.ok()) {
        return absl::Status(tensors.status().code(),
                            absl::StrCat("model '", m.name, "': ", tensors.status().message()));
      }
      inputs.push_back(std::move(*tensors));
    }
    w.inputs.push_back(std::move(inputs));
    w.infos.push_back(std::move(info));
  }
  if (spec.kind == WorkloadKind::kCopies) {
    if (spec.models.size() != 1 || spec.copies < 1) {
      return absl::InvalidArgumentError("copies: exactly one model and at least one copy");
    }
    w.streams.assign(static_cast<size_t>(spec.copies), Stream{0});
    w.batchable = w.infos[0].dynamic_batch;
  } else {
    for (size_t m = 0; m < spec.models.size(); ++m)
      w.streams.push_back(Stream{static_cast<int>(m)});
  }
  return w;
}

}  // namespace loom::bench
