#include "pipeline/executor.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/guard.h"
#include "core/stats.h"
#include "vision/blob.h"

namespace loom::pipeline {
namespace {

// A frame's view of the models while one of its nodes runs: holds the frame's core lease, gives
// it back during Await, and books the node's time into compute, model wait and core wait.
class FrameContext final : public NodeContext {
 public:
  explicit FrameContext(InferenceService& inference) : inference_(inference) {}
  ~FrameContext() override { lease_.Release(); }

  absl::Status Acquire() {
    if (lease_.held()) return absl::OkStatus();
    const auto start = Clock::now();
    auto lease = inference_.Lease();
    core_wait_ms_ += MillisecondsSince(start);
    if (!lease.ok()) return lease.status();
    lease_ = std::move(*lease);
    return absl::OkStatus();
  }
  void Release() { lease_.Release(); }

  PendingOutputs Submit(const std::string& model, NamedTensors inputs) override {
    return inference_.Submit(model, std::move(inputs));
  }
  const ModelInfo* FindModel(const std::string& model) const override {
    return inference_.FindModel(model);
  }
  int RowsPerRequest(const std::string& model, const Shape& row_shape) override {
    if (std::optional<int> known = inference_.KnownRowsPerRequest(model, row_shape)) return *known;
    lease_.Release();  // the measurement runs on the engine's workers
    const auto start = Clock::now();
    const int rows = inference_.RowsPerRequest(model, row_shape);
    model_wait_ms_ += MillisecondsSince(start);
    if (absl::Status s = Acquire(); !s.ok() && lease_error_.ok())
      lease_error_ = s;  // fails the node
    return rows;
  }
  absl::StatusOr<NamedTensors> Await(const PendingOutputs& outputs) override {
    lease_.Release();  // no core is held while waiting for a model
    const auto start = Clock::now();
    absl::StatusOr<NamedTensors> result =
        outputs.valid() ? outputs.get() : absl::InternalError("no model run to wait for");
    model_wait_ms_ += MillisecondsSince(start);
    LOOM_RETURN_IF_ERROR(Acquire());
    return result;
  }

  // A core lease that failed where the node could not be told (RowsPerRequest), and reset.
  absl::Status TakeLeaseError() { return std::exchange(lease_error_, absl::OkStatus()); }

  // The waits booked since the last call, and reset.
  std::pair<double, double> TakeWaits() {
    const std::pair<double, double> waits{model_wait_ms_, core_wait_ms_};
    model_wait_ms_ = core_wait_ms_ = 0;
    return waits;
  }

 private:
  InferenceService& inference_;
  CoreLease lease_;
  double model_wait_ms_ = 0, core_wait_ms_ = 0;
  absl::Status lease_error_;
};

}  // namespace

Executor::Executor(Graph& graph, int threads, std::vector<Sink*> sinks)
    : graph_(graph), sinks_(std::move(sinks)), capacity_(std::max(threads, 1)) {
  for (int t = 0; t < capacity_; ++t) threads_.emplace_back([this, t] { Loop(t); });
}

Executor::~Executor() { Join(); }

double Executor::Join() {
  Abort();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  return cpu_s_;
}

bool Executor::Push(std::unique_ptr<Frame> frame) {
  std::unique_lock<std::mutex> lock(mu_);
  ++waiting_pushers_;
  cv_.wait(lock, [&] { return processing_ < capacity_ || aborted_; });
  --waiting_pushers_;
  if (aborted_ || finished_) return false;
  ++processing_;
  ++pushed_;
  todo_.push_back(std::move(frame));
  cv_.notify_all();
  return true;
}

int Executor::waiting_pushers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_pushers_;
}

std::unique_ptr<Frame> Executor::Pop(bool wait) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (aborted_) return nullptr;
    auto it = done_.find(next_);
    if (it != done_.end()) {
      std::unique_ptr<Frame> frame = std::move(it->second);
      done_.erase(it);
      ++next_;
      return frame;
    }
    if (!wait || (finished_ && next_ >= pushed_)) return nullptr;
    cv_.wait(lock);
  }
}

void Executor::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  cv_.notify_all();
}

void Executor::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  todo_.clear();
  cv_.notify_all();
}

void Executor::Loop(int thread) {
  const double cpu0 = ThreadCpuSeconds();
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return !todo_.empty() || finished_ || aborted_; });
    if (todo_.empty()) break;
    std::unique_ptr<Frame> frame = std::move(todo_.front());
    todo_.pop_front();
    lock.unlock();
    Process(*frame, thread);
    lock.lock();
    --processing_;
    done_[frame->index] = std::move(frame);
    cv_.notify_all();
  }
  cpu_s_ += ThreadCpuSeconds() - cpu0;
}

namespace {

// Runs `step` on a core leased through `context`, books its time under `name`, and turns anything
// it throws into a status.
template <typename Step>
absl::Status Timed(Frame& frame, FrameContext& context, const std::string& name, int thread,
                   Step&& step) {
  const auto start = Clock::now();
  absl::Status status = context.Acquire();
  if (status.ok()) {
    status = CatchAll("", step);
    if (absl::Status lease = context.TakeLeaseError(); status.ok() && !lease.ok()) status = lease;
  }
  const double total = MillisecondsSince(start);
  const auto [model_wait, core_wait] = context.TakeWaits();
  frame.timings[name] = {std::max(0.0, total - model_wait - core_wait), model_wait, core_wait,
                         start, thread};
  return status;
}

}  // namespace

void Executor::Process(Frame& frame, int thread) {
  FrameContext context(*graph_.inference);
  if (!frame.decode_path.empty()) {
    const absl::Status decoded = Timed(frame, context, "decode", thread, [&]() -> absl::Status {
      LOOM_ASSIGN_OR_RETURN(cv::Mat image, vision::ReadImage(frame.decode_path));
      frame.values["image"].image = std::move(image);
      return absl::OkStatus();
    });
    frame.decode_path.clear();
    if (!decoded.ok()) frame.error = std::string(decoded.message());
  }
  for (const auto& node : graph_.nodes) {
    if (!frame.error.empty()) break;
    const absl::Status status =
        Timed(frame, context, node->name(), thread, [&] { return node->Process(frame, context); });
    if (!status.ok()) frame.error = absl::StrCat("node '", node->name(), "': ", status.message());
  }
  if (!sinks_.empty()) {
    // A sink that cannot prepare the frame says so when it writes it.
    (void)Timed(frame, context, "sinks", thread, [&] {
      for (Sink* sink : sinks_) sink->Prepare(frame);
      return absl::OkStatus();
    });
  }
  context.Release();
}

nlohmann::json RecordOf(const Frame& frame) {
  nlohmann::json record = {{"frame", frame.index}, {"source", frame.source}};
  record.update(frame.record);
  nlohmann::json timings = nlohmann::json::object();
  auto round = [](double ms) { return std::round(ms * 100) / 100; };
  for (const auto& [node, t] : frame.timings) {
    timings[node] = {{"compute", round(t.compute_ms)},
                     {"model_wait", round(t.model_wait_ms)},
                     {"core_wait", round(t.core_wait_ms)}};
  }
  record["timings_ms"] = timings;
  if (!frame.error.empty()) record["error"] = frame.error;
  return record;
}

}  // namespace loom::pipeline
