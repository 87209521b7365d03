#include "serve/pipeline_model.h"

#include <optional>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace loom::serve {

absl::StatusOr<std::shared_ptr<PipelineModel>> PipelineModel::Load(const std::string& engine_prefix,
                                                                   const std::string& yaml,
                                                                   Engine* engine) {
  PipelineOptions options;
  options.sinks = false;
  options.require_source = false;
  options.engine = engine;
  options.model_prefix = engine_prefix;
  auto model = std::shared_ptr<PipelineModel>(new PipelineModel());
  LOOM_ASSIGN_OR_RETURN(model->pipeline_, Pipeline::Load(yaml, options));
  return model;
}

void PipelineModel::Close() {
  {
    std::lock_guard<std::mutex> submit(submit_mu_);  // waits for a Submit under way
    if (closed_) return;
    closed_ = true;
  }
  if (pipeline_) pipeline_->Finish();
  if (dispatcher_.joinable()) dispatcher_.join();
  pipeline_.reset();
}

absl::StatusOr<int64_t> PipelineModel::Submit(const WireTensor& image) {
  if (image.type == WireType::kBytes) {
    int64_t count = 0;
    std::string_view first;
    ForEachBytesElement(image.bytes, [&](std::string_view e) {
      if (count++ == 0) first = e;
    });
    if (count != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", image.name, "': one encoded image, got ", count, " BYTES elements"));
    }
    return pipeline_->SubmitEncoded(std::string(first));
  }
  if (image.type == WireType::kUInt8 &&
      (image.shape.size() == 3 || (image.shape.size() == 4 && image.shape[0] == 1))) {
    const size_t off = image.shape.size() - 3;
    ImageView view{static_cast<int>(image.shape[off + 1]), static_cast<int>(image.shape[off]),
                   static_cast<int>(image.shape[off + 2]),
                   static_cast<const uint8_t*>(image.tensor.data()), 0};
    return pipeline_->Submit(view);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "input '", image.name,
      "': a pipeline takes one encoded image (BYTES [1]) or one frame (UINT8 [H,W,C] BGR), got ",
      WireTypeName(image.type), " ", ShapeToString(image.shape)));
}

void PipelineModel::Infer(const WireTensor& image, Done done) {
  std::unique_lock<std::mutex> submit(submit_mu_);
  if (closed_ || broken_) return done(absl::UnavailableError("the pipeline is unloaded"));
  const absl::StatusOr<int64_t> index = Submit(image);
  if (!index.ok()) return done(index.status());
  if (!dispatcher_.joinable()) {  // the dispatcher starts with the first frame
    try {
      dispatcher_ = std::thread([this] { Dispatch(); });
    } catch (const std::system_error& e) {
      Log().error("pipeline: cannot start its dispatcher: {}", e.what());
      broken_ = true;
      return done(absl::UnavailableError("the pipeline cannot start its dispatcher"));
    }
  }
  std::optional<PipelineRecord> early;
  {
    std::lock_guard<std::mutex> lock(route_mu_);
    auto it = early_.find(*index);
    if (it != early_.end()) {
      early = std::move(it->second);
      early_.erase(it);
    } else {
      waiting_[*index] = std::move(done);
    }
  }
  submit.unlock();
  if (early) Answer(*early, done);
}

void PipelineModel::Answer(const PipelineRecord& r, const Done& done) {
  if (r.failed) {
    return done(
        absl::InvalidArgumentError(absl::StrCat("the pipeline failed on this frame: ", r.error)));
  }
  done(r.json);
}

void PipelineModel::Dispatch() {
  try {
    while (auto r = pipeline_->Next(true)) {
      Done done;
      {
        std::lock_guard<std::mutex> lock(route_mu_);
        auto it = waiting_.find(r->frame);
        if (it == waiting_.end()) {
          early_[r->frame] = std::move(*r);
          continue;
        }
        done = std::move(it->second);
        waiting_.erase(it);
      }
      Answer(*r, done);
    }
  } catch (const std::exception& e) {
    // Nothing escapes this thread: the frames still waiting get the error, new ones are refused.
    Log().error("pipeline dispatcher: {}", e.what());
    broken_ = true;
  }
  std::map<int64_t, Done> left;
  {
    std::lock_guard<std::mutex> lock(route_mu_);
    left.swap(waiting_);
  }
  for (auto& [frame, done] : left) {
    done(absl::UnavailableError("the pipeline stopped before this frame's record"));
  }
}

}  // namespace loom::serve
