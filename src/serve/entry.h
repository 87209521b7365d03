// What the data plane serves under one name (internal to data_plane.cc, repository.cc and
// metrics.cc): a model of the engine or a pipeline, and the count of requests between finding
// it and submitting to it, so that a reload can retire it without any request missing it.
#ifndef LOOM_SERVE_ENTRY_H_
#define LOOM_SERVE_ENTRY_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "serve/data_plane.h"
#include "serve/pipeline_model.h"

namespace loom::serve {

// What requests use of a served model is owned here (a copy of the model's description, the
// pipeline by shared_ptr), so that an unload or reload under way never pulls it from under them.
struct DataPlane::Entry {
  std::string name;         // served
  std::string engine_name;  // in the engine: the served name, or an internal one after a reload
  std::shared_ptr<const ModelInfo> info;  // an engine model
  std::shared_ptr<PipelineModel> pipeline;
  // Requests that found this entry and have not yet been submitted to the engine or pipeline.
  std::atomic<int64_t> users{0};
  std::atomic<bool> retired{false};  // no longer found: users only falls
  std::mutex mu;                     // with cv: Retire waits for users == 0
  std::condition_variable cv;
};

// A request's hold on an entry, from finding it until its submission returns.
class DataPlane::EntryUse {
 public:
  EntryUse() = default;
  explicit EntryUse(std::shared_ptr<Entry> e) : e_(std::move(e)) {}
  EntryUse(const EntryUse&) = delete;
  EntryUse& operator=(const EntryUse&) = delete;
  ~EntryUse() { Release(); }
  void Release() {
    if (!e_) return;
    if (e_->users.fetch_sub(1) == 1 && e_->retired) {
      std::lock_guard<std::mutex> lock(e_->mu);
      e_->cv.notify_all();
    }
    e_.reset();
  }

 private:
  std::shared_ptr<Entry> e_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_ENTRY_H_
