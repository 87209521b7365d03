// A YAML pipeline served as one model of `loom serve`: an encoded image (BYTES [1]) or a raw frame
// (UINT8 [H,W,C], BGR) in, the frame's record (BYTES [1]: JSON) out.
//
// Frames are submitted to the pipeline as requests arrive and their records routed back by frame
// index, in whatever order requests come. Threading: Infer and Close may be called from any
// thread; the records are routed on a dispatcher thread of this model's own, started with the
// first frame and joined by Close (or destruction).
#ifndef LOOM_SERVE_PIPELINE_MODEL_H_
#define LOOM_SERVE_PIPELINE_MODEL_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "loom/engine.h"
#include "loom/pipeline.h"
#include "serve/types.h"

namespace loom::serve {

class PipelineModel {
 public:
  // Loads `yaml` onto `engine`, its models named `engine_prefix` + their names.
  static absl::StatusOr<std::shared_ptr<PipelineModel>> Load(const std::string& engine_prefix,
                                                             const std::string& yaml,
                                                             Engine* engine);
  ~PipelineModel() { Close(); }

  // No new frames (they are answered UNAVAILABLE); the frames submitted are answered; the
  // pipeline's models leave the engine. Idempotent; never called from the dispatcher.
  void Close();

  using Done = std::function<void(absl::StatusOr<std::string>)>;
  // `done` is called exactly once, here or on the dispatcher thread, with the frame's record.
  void Infer(const WireTensor& image, Done done);

 private:
  PipelineModel() = default;
  static void Answer(const PipelineRecord& r, const Done& done);
  void Dispatch();
  absl::StatusOr<int64_t> Submit(const WireTensor& image);

  std::unique_ptr<Pipeline> pipeline_;
  std::mutex submit_mu_;  // Submit and the registration of its frame; closed_
  bool closed_ = false;   // requires submit_mu_
  std::atomic<bool> broken_{false};
  std::mutex route_mu_;  // waiting_, early_
  std::map<int64_t, Done> waiting_;
  std::map<int64_t, PipelineRecord> early_;
  std::thread dispatcher_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_PIPELINE_MODEL_H_
