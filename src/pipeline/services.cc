#include "pipeline/services.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace loom::pipeline {
namespace {

class EngineService final : public InferenceService {
 public:
  explicit EngineService(std::unique_ptr<Engine> engine) : owned_(std::move(engine)), engine_(owned_.get()) {}
  // Someone else's engine: `models` (already added, under `prefix`) are removed at the end.
  EngineService(Engine* engine, std::string prefix, std::vector<std::string> models)
      : engine_(engine), prefix_(std::move(prefix)), added_(std::move(models)) {}
  ~EngineService() override {
    for (const std::string& m : added_) (void)engine_->RemoveModel(m);
  }
  const ModelInfo* FindModel(const std::string& model) const override { return engine_->FindModel(prefix_ + model); }
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
  int MaxRows(const std::string& model) const override {
    auto rows = engine_->MaxBatchSize(prefix_ + model);
    return rows.ok() ? *rows : 0;
  }
  absl::StatusOr<CoreLease> Lease() override { return engine_->LeaseCores(); }
  Engine* engine() override { return engine_; }

 private:
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
      return absl::InternalError(absl::StrCat("model '", session.info().name, "': unknown exception"));
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

absl::StatusOr<std::unique_ptr<InferenceService>> MakeModelInfoService(const std::vector<ModelConfig>& models) {
  std::map<std::string, ModelInfo> infos;
  for (const ModelConfig& m : models) {
    auto info = ReadModelInfo(m.path);
    if (!info.ok()) {
      return absl::Status(info.status().code(), absl::StrCat("model '", m.name, "': ", info.status().message()));
    }
    infos[m.name] = std::move(*info);
  }
  return std::unique_ptr<InferenceService>(new ModelInfoService(std::move(infos)));
}

std::unique_ptr<InferenceService> MakeEngineService(std::unique_ptr<Engine> engine) {
  return std::make_unique<EngineService>(std::move(engine));
}

absl::StatusOr<std::unique_ptr<InferenceService>> MakeSharedEngineService(Engine* engine, const std::string& prefix,
                                                                         const std::vector<ModelConfig>& models) {
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


absl::StatusOr<std::unique_ptr<InferenceService>> MakeNaiveService(const std::vector<ModelConfig>& models,
                                                                   NaiveMode mode) {
  std::map<std::string, std::unique_ptr<Session>> sessions;
  for (const ModelConfig& m : models) {
    SessionOptions options;  // ONNX Runtime's defaults, as a first attempt would have them
    options.backend = m.backend;
    auto session = CreateSession(m.path, options);
    if (!session.ok()) {
      return absl::Status(session.status().code(), absl::StrCat("model '", m.name, "': ", session.status().message()));
    }
    sessions[m.name] = std::move(*session);
  }
  return std::unique_ptr<InferenceService>(new NaiveService(std::move(sessions), mode));
}

}  // namespace loom::pipeline
