#include "pipeline/services.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"

namespace loom::pipeline {
namespace {

class EngineService final : public InferenceService {
 public:
  explicit EngineService(std::unique_ptr<Engine> engine)
      : owned_(std::move(engine)), engine_(owned_.get()) {}
  // Someone else's engine: `models` (already added, under `prefix`) are removed at the end.
  EngineService(Engine* engine, std::string prefix, std::vector<std::string> models)
      : engine_(engine), prefix_(std::move(prefix)), added_(std::move(models)) {}
  ~EngineService() override {
    for (const std::string& m : added_) (void)engine_->RemoveModel(m);
  }
  const ModelInfo* FindModel(const std::string& model) const override {
    return engine_->FindModel(prefix_ + model);
  }
  PendingOutputs Submit(const std::string& name, NamedTensors inputs) override {
    const std::string model = prefix_ + name;
    auto promise = std::make_shared<std::promise<absl::StatusOr<NamedTensors>>>();
    PendingOutputs future = promise->get_future().share();
    engine_->Submit(model, std::move(inputs), {}, [promise](absl::StatusOr<InferResult> r) {
      promise->set_value(r.ok() ? absl::StatusOr<NamedTensors>(std::move(r->outputs))
                                : absl::StatusOr<NamedTensors>(r.status()));
    });
    return future;
  }
  std::optional<int> KnownRowsPerRequest(const std::string& model,
                                         const Shape& row_shape) const override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = decisions_.find({model, row_shape});
    if (it == decisions_.end()) return std::nullopt;
    return it->second.rows_per_request;
  }
  // Measured once per (model, row shape); a caller that finds the measurement under way waits
  // for it.
  int RowsPerRequest(const std::string& model, const Shape& row_shape) override {
    const Key key{model, row_shape};
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (auto it = decisions_.find(key); it != decisions_.end())
        return it->second.rows_per_request;
      if (!measuring_.count(key)) break;
      measured_.wait(lock);
    }
    measuring_.insert(key);
    lock.unlock();
    RowBatching decision;
    try {
      decision = MeasureRowBatching(model, row_shape);
    } catch (const std::exception& e) {  // whatever happens, the waiters get a decision
      decision = RowBatching{};
      decision.model = model;
      decision.row_shape = row_shape;
      decision.note = absl::StrCat("not measured: ", e.what());
    }
    lock.lock();
    measuring_.erase(key);
    order_.push_back(key);
    const int rows = decision.rows_per_request;
    decisions_[key] = std::move(decision);
    measured_.notify_all();
    return rows;
  }
  std::vector<RowBatching> RowBatchings() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<RowBatching> out;
    for (const Key& k : order_) out.push_back(decisions_.at(k));
    return out;
  }
  absl::StatusOr<CoreLease> Lease() override { return engine_->LeaseCores(); }
  Engine* engine() override { return engine_; }

 private:
  using Key = std::pair<std::string, Shape>;

  // A batch of 1 and one of kRowProbeRows rows (zeros: a convolutional model's cost does not
  // depend on the values), each run once to warm up and then timed, on the engine's workers
  // (Infer runs on an idle worker's cores). The compute time is the run's own, queue excluded.
  RowBatching MeasureRowBatching(const std::string& model, const Shape& row_shape) {
    RowBatching b;
    b.model = model;
    b.row_shape = row_shape;
    const ModelInfo* info = FindModel(model);
    if (!info || info->inputs.size() != 1 || !info->dynamic_batch) {
      b.note = "not measured: the model has no batch dim (or several inputs)";
      return b;
    }
    Shape one = row_shape, batch = row_shape;
    one.insert(one.begin(), 1);
    batch.insert(batch.begin(), kRowProbeRows);
    const DType dtype = info->inputs[0].dtype;
    absl::StatusOr<Tensor> one_t = Tensor::TryAllocate(dtype, one);
    absl::StatusOr<Tensor> batch_t = Tensor::TryAllocate(dtype, batch);
    if (!one_t.ok() || !batch_t.ok()) {
      b.note = absl::StrCat("not measured: ",
                            (one_t.ok() ? batch_t.status() : one_t.status()).message());
      return b;
    }
    // Milliseconds per row of one run, and the threads it ran on.
    auto run = [&](const Tensor& t) -> absl::StatusOr<std::pair<double, int>> {
      LOOM_ASSIGN_OR_RETURN(InferResult r,
                            engine_->Infer(prefix_ + model, {{info->inputs[0].name, t}}));
      for (const NamedTensor& out : r.outputs) {
        if (out.tensor.rank() < 1 || out.tensor.dim(0) != t.dim(0)) {
          return absl::FailedPreconditionError(
              absl::StrCat("output '", out.name, "' is ", out.tensor.Describe(), " for ", t.dim(0),
                           " rows: its dim 0 does not follow the batch"));
        }
      }
      return std::make_pair(
          static_cast<double>(r.compute_us) / 1000.0 / static_cast<double>(t.dim(0)), r.threads);
    };
    absl::StatusOr<std::pair<double, int>> alone = absl::InternalError("not run"), together = alone;
    for (int i = 0; i < 2; ++i) {  // the first of each warms the shape up
      alone = run(*one_t);
      if (alone.ok()) together = run(*batch_t);
      if (!alone.ok() || !together.ok()) break;
    }
    if (!alone.ok() || !together.ok()) {
      b.note = absl::StrCat("not measured: ",
                            (alone.ok() ? together.status() : alone.status()).message());
      return b;
    }
    b.probe_rows = kRowProbeRows;
    b.ms_per_row_alone = alone->first;
    b.ms_per_row_batched = together->first;
    if (alone->second != together->second) {
      b.note = absl::StrCat("the runs used ", alone->second, " and ", together->second,
                            " threads: not comparable, rows run alone");
      return b;
    }
    b.rows_per_request = DecideRowsPerRequest(b);
    return b;
  }

  static constexpr int kRowProbeRows = 4;

  mutable std::mutex mu_;
  std::condition_variable measured_;
  std::map<Key, RowBatching> decisions_;
  std::set<Key> measuring_;
  std::vector<Key> order_;
  std::unique_ptr<Engine> owned_;
  Engine* engine_;
  std::string prefix_;
  std::vector<std::string> added_;
};

// One default session per model; inline, or a thread per model draining its own queue.
class NaiveService final : public InferenceService {
 public:
  NaiveService(std::map<std::string, std::unique_ptr<Session>> sessions, NaiveMode mode)
      : sessions_(std::move(sessions)) {
    if (mode == NaiveMode::kThreadPerModel) {
      for (auto& [name, session] : sessions_) {
        auto& lane = lanes_[name];
        lane.thread = std::thread([this, &lane, s = session.get()] { Drain(lane, *s); });
      }
    }
  }
  ~NaiveService() override {
    for (auto& [name, lane] : lanes_) {
      {
        std::lock_guard<std::mutex> lock(lane.mu);
        lane.stop = true;
      }
      lane.cv.notify_all();
      lane.thread.join();
    }
  }
  const ModelInfo* FindModel(const std::string& model) const override {
    auto it = sessions_.find(model);
    return it == sessions_.end() ? nullptr : &it->second->info();
  }
  PendingOutputs Submit(const std::string& model, NamedTensors inputs) override {
    std::promise<absl::StatusOr<NamedTensors>> promise;
    PendingOutputs future = promise.get_future().share();
    auto it = sessions_.find(model);
    if (it == sessions_.end()) {
      promise.set_value(absl::NotFoundError(absl::StrCat("no model '", model, "'")));
    } else if (lanes_.empty()) {
      promise.set_value(RunCaught(*it->second, inputs));
    } else {
      Lane& lane = lanes_.at(model);
      {
        std::lock_guard<std::mutex> lock(lane.mu);
        lane.jobs.push_back({std::move(inputs), std::move(promise)});
      }
      lane.cv.notify_one();
    }
    return future;
  }

 private:
  struct Job {
    NamedTensors inputs;
    std::promise<absl::StatusOr<NamedTensors>> promise;
  };
  struct Lane {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> jobs;
    bool stop = false;
    std::thread thread;
  };
  // A session that throws fails its request, never the thread.
  static absl::StatusOr<NamedTensors> RunCaught(Session& session, const NamedTensors& inputs) {
    try {
      return session.Run(inputs);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("model '", session.info().name, "': ", e.what()));
    } catch (...) {
      return absl::InternalError(
          absl::StrCat("model '", session.info().name, "': unknown exception"));
    }
  }

  static void Drain(Lane& lane, Session& session) {
    std::unique_lock<std::mutex> lock(lane.mu);
    while (true) {
      lane.cv.wait(lock, [&] { return lane.stop || !lane.jobs.empty(); });
      if (lane.jobs.empty()) return;
      Job job = std::move(lane.jobs.front());
      lane.jobs.pop_front();
      lock.unlock();
      job.promise.set_value(RunCaught(session, job.inputs));
      lock.lock();
    }
  }

  std::map<std::string, std::unique_ptr<Session>> sessions_;
  std::map<std::string, Lane> lanes_;
};

class ModelInfoService final : public InferenceService {
 public:
  explicit ModelInfoService(std::map<std::string, ModelInfo> infos) : infos_(std::move(infos)) {}
  const ModelInfo* FindModel(const std::string& model) const override {
    auto it = infos_.find(model);
    return it == infos_.end() ? nullptr : &it->second;
  }
  PendingOutputs Submit(const std::string& model, NamedTensors) override {
    std::promise<absl::StatusOr<NamedTensors>> p;
    p.set_value(absl::FailedPreconditionError(absl::StrCat("model '", model, "' is not loaded")));
    return p.get_future().share();
  }

 private:
  std::map<std::string, ModelInfo> infos_;
};

}  // namespace

int DecideRowsPerRequest(const RowBatching& measured) {
  constexpr double kRowBatchWorthIt = 0.8;
  if (measured.probe_rows <= 1 || measured.ms_per_row_alone <= 0) return 1;
  return measured.ms_per_row_batched <= kRowBatchWorthIt * measured.ms_per_row_alone
             ? measured.probe_rows
             : 1;
}

absl::StatusOr<std::unique_ptr<InferenceService>> MakeModelInfoService(
    const std::vector<ModelConfig>& models) {
  std::map<std::string, ModelInfo> infos;
  for (const ModelConfig& m : models) {
    auto info = ReadModelInfo(m.path);
    if (!info.ok()) {
      return absl::Status(info.status().code(),
                          absl::StrCat("model '", m.name, "': ", info.status().message()));
    }
    infos[m.name] = std::move(*info);
  }
  return std::unique_ptr<InferenceService>(new ModelInfoService(std::move(infos)));
}

std::unique_ptr<InferenceService> MakeEngineService(std::unique_ptr<Engine> engine) {
  return std::make_unique<EngineService>(std::move(engine));
}

absl::StatusOr<std::unique_ptr<InferenceService>> MakeSharedEngineService(
    Engine* engine, const std::string& prefix, const std::vector<ModelConfig>& models) {
  std::vector<std::string> added;
  for (ModelConfig m : models) {
    m.name = prefix + m.name;
    if (absl::Status s = engine->AddModel(m); !s.ok()) {
      for (const std::string& name : added) (void)engine->RemoveModel(name);
      return s;
    }
    added.push_back(m.name);
  }
  return std::unique_ptr<InferenceService>(new EngineService(engine, prefix, std::move(added)));
}

absl::StatusOr<std::unique_ptr<InferenceService>> MakeNaiveService(
    const std::vector<ModelConfig>& models, NaiveMode mode) {
  std::map<std::string, std::unique_ptr<Session>> sessions;
  for (const ModelConfig& m : models) {
    SessionOptions options;  // ONNX Runtime's defaults, as a first attempt would have them
    options.backend = m.backend;
    auto session = CreateSession(m.path, options);
    if (!session.ok()) {
      return absl::Status(session.status().code(),
                          absl::StrCat("model '", m.name, "': ", session.status().message()));
    }
    sessions[m.name] = std::move(*session);
  }
  return std::unique_ptr<InferenceService>(new NaiveService(std::move(sessions), mode));
}

}  // namespace loom::pipeline
