// _loom.Engine: the engine for Python. The GIL is released whenever the engine may wait (a
// synchronous infer, a submit that blocks on a full queue, shutdown); answers of asynchronous
// requests reach Python through the completion thread (completions.h).
#include "loom/engine.h"

#include <pybind11/stl.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "completions.h"
#include "core/cpu_set.h"
#include "engine/config.h"
#include "engine/yaml_reader.h"
#include "errors.h"
#include "tensors.h"

namespace loom::python {
namespace {

// The engine config's model keys, and the Python API's own "warmup".
const std::vector<std::string>& ModelKeys() {
  static const auto* keys = [] {
    auto* k = new std::vector<std::string>(ModelConfigKeys());
    k->push_back("warmup");
    return k;
  }();
  return *keys;
}

absl::Status UnknownKey(const std::string& what, const std::string& key,
                        const std::vector<std::string>& known) {
  const std::string nearest = NearestKey(key, known);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", key, "'",
                   nearest.empty() ? "" : absl::StrCat("; did you mean '", nearest, "'?"),
                   " (known: ", absl::StrJoin(known, ", "), ")"));
}

std::optional<int> OptionalInt(const py::handle& v) {
  if (v.is_none() || (py::isinstance<py::str>(v) && v.cast<std::string>() == "auto"))
    return std::nullopt;
  return v.cast<int>();
}

// A warm-up request {input name: array}, copied (the engine keeps it); the engine checks it
// against the model when it loads.
absl::StatusOr<NamedTensors> ToWarmup(const py::handle& v) {
  if (!py::isinstance<py::dict>(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model option 'warmup' is a dict {input name: array}, got ",
                     std::string(py::str(py::type::of(v).attr("__name__")))));
  }
  NamedTensors out;
  for (const auto& [k, a] : py::reinterpret_borrow<py::dict>(v)) {
    const std::string name = py::str(k);
    const auto array = py::array::ensure(a, py::array::c_style);
    if (!array)
      return absl::InvalidArgumentError(absl::StrCat("warmup input '", name, "' is not an array"));
    absl::StatusOr<DType> dtype = FromNumpy(array.dtype());
    if (!dtype.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("warmup input '", name, "': ", dtype.status().message()));
    Shape shape(array.shape(), array.shape() + array.ndim());
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::TryAllocate(*dtype, shape));
    std::memcpy(t.data(), array.data(), t.byte_size());
    out.emplace_back(name, std::move(t));
  }
  return out;
}

absl::StatusOr<ModelConfig> ToModelConfig(const py::dict& d) {
  ModelConfig c;
  for (const auto& [k, v] : d) {
    const std::string key = py::str(k);
    if (std::find(ModelKeys().begin(), ModelKeys().end(), key) == ModelKeys().end()) {
      return UnknownKey("model option", key, ModelKeys());
    }
    try {
      if (key == "name") c.name = v.cast<std::string>();
      if (key == "path") c.path = py::str(v);  // str or os.PathLike
      if (key == "backend") {
        auto b = ParseBackend(v.cast<std::string>());
        if (!b.ok()) return b.status();
        c.backend = *b;
      }
      if (key == "instances") c.instances = OptionalInt(v);
      if (key == "threads") c.threads = OptionalInt(v);
      if (key == "max_batch_size") c.max_batch_size = OptionalInt(v);
      if (key == "preferred_batch_sizes") c.preferred_batch_sizes = v.cast<std::vector<int>>();
      if (key == "max_queue_delay_us" && !v.is_none()) c.max_queue_delay_us = v.cast<int64_t>();
      if (key == "queue_capacity") c.queue_capacity = OptionalInt(v);
      if (key == "default_timeout_us" && !v.is_none()) c.default_timeout_us = v.cast<int64_t>();
      if (key == "weight") c.weight = v.cast<double>();
      if (key == "warmup" && !v.is_none()) {
        auto warmup = ToWarmup(v);
        if (!warmup.ok()) return warmup.status();
        c.warmup_inputs = std::move(*warmup);
      }
    } catch (const py::cast_error&) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model option '", key, "' has the wrong type: ", std::string(py::str(py::type::of(v)))));
    }
  }
  if (c.path.empty()) return absl::InvalidArgumentError("a model needs a 'path'");
  return c;
}

absl::StatusOr<EngineOptions> ToEngineOptions(const std::string& hint, int cores,
                                              const py::dict& extra) {
  EngineOptions o;
  o.cores = cores;
  if (hint == "adaptive") {
    o.hint = PlanHint::kAdaptive;
  } else if (hint == "throughput") {
    o.hint = PlanHint::kThroughput;
  } else if (hint == "latency") {
    o.hint = PlanHint::kLatency;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("hint must be 'adaptive', 'throughput' or 'latency', got '", hint, "'"));
  }
  static const std::vector<std::string> known = {"measure_runs",      "allow_spinning",
                                                 "shared_workers",    "shared_threads",
                                                 "max_request_bytes", "explore_every"};
  for (const auto& [k, v] : extra) {
    const std::string key = py::str(k);
    if (std::find(known.begin(), known.end(), key) == known.end())
      return UnknownKey("engine option", key, known);
    try {
      if (key == "measure_runs") o.measure_runs = v.cast<int>();
      if (key == "allow_spinning" && !v.is_none()) o.allow_spinning = v.cast<bool>();
      if (key == "shared_workers" && !v.is_none()) o.shared_workers = v.cast<int>();
      if (key == "shared_threads" && !v.is_none()) o.shared_threads = v.cast<int>();
      if (key == "max_request_bytes") o.max_request_bytes = v.cast<int64_t>();
      if (key == "explore_every") o.explore_every = v.cast<int>();
    } catch (const py::cast_error&) {
      return absl::InvalidArgumentError(
          absl::StrCat("engine option '", key, "' has the wrong type"));
    }
  }
  return o;
}

SubmitOptions ToSubmitOptions(std::optional<double> deadline_s, bool block) {
  SubmitOptions o;
  if (deadline_s) {
    const double s = std::clamp(*deadline_s, -1e6, 1e7);
    o.deadline = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(s));
  }
  o.block_when_full = block;
  return o;
}

py::dict PlanDict(const EnginePlan& plan) {
  py::list workers;
  for (const WorkerPlan& w : plan.workers) {
    workers.append(py::dict(
        py::arg("cpus") = w.cpus, py::arg("threads") = w.threads, py::arg("models") = w.models,
        py::arg("allow_spinning") = w.allow_spinning, py::arg("group") = w.group));
  }
  py::list groups;
  for (const WideGroupPlan& g : plan.groups) {
    groups.append(py::dict(py::arg("workers") = g.workers, py::arg("cpus") = g.cpus,
                           py::arg("threads") = g.threads));
  }
  py::dict costs;
  for (const ModelCost& c : plan.costs) {
    py::dict by_threads;
    for (const auto& [t, ms] : c.ms_by_threads) by_threads[py::int_(t)] = ms;
    costs[py::str(c.model)] = by_threads;
  }
  py::list batching;
  for (const BatchChoice& b : plan.batching) {
    batching.append(py::dict(py::arg("model") = b.model, py::arg("probe_rows") = b.probe_rows,
                             py::arg("ms_per_row_at_1") = b.ms_per_row_at_1,
                             py::arg("ms_per_row_at_probe") = b.ms_per_row_at_probe,
                             py::arg("max_batch_size") = b.max_batch_size));
  }
  py::list history;
  for (const PlanEvent& e : plan.history) history.append(py::make_tuple(e.at_s, e.what));
  return py::dict(py::arg("usable_cores") = plan.usable_cores,
                  py::arg("hint") = PlanHintName(plan.hint), py::arg("workers") = workers,
                  py::arg("groups") = groups, py::arg("costs_ms") = costs,
                  py::arg("batching") = batching, py::arg("reason") = plan.reason,
                  py::arg("history") = history);
}

py::dict StatsDict(const ModelStats& s) {
  return py::dict(
      py::arg("requests") = s.requests, py::arg("successes") = s.successes,
      py::arg("failures") = s.failures, py::arg("deadline_exceeded") = s.deadline_exceeded,
      py::arg("cancelled") = s.cancelled, py::arg("rejected") = s.rejected,
      py::arg("batches") = s.batches, py::arg("queued") = s.queued, py::arg("running") = s.running,
      py::arg("mean_batch_rows") = s.mean_batch_rows, py::arg("queue_p50_us") = s.queue_p50_us,
      py::arg("queue_p99_us") = s.queue_p99_us, py::arg("compute_p50_us") = s.compute_p50_us,
      py::arg("compute_p99_us") = s.compute_p99_us);
}

// The Python-visible engine. Shutdown happens with the GIL released (it waits for the workers).
class PyEngine {
 public:
  explicit PyEngine(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {
    StartCompletions();
  }
  ~PyEngine() {
    py::gil_scoped_release release;
    engine_.reset();
  }

  static std::unique_ptr<PyEngine> Create(const py::list& models, const std::string& hint,
                                          int cores, const py::dict& options) {
    std::vector<ModelConfig> configs;
    for (const py::handle& m : models) {
      if (!py::isinstance<py::dict>(m))
        Raise(absl::InvalidArgumentError("each model must be a loom.Model or a dict"));
      configs.push_back(Unwrap(ToModelConfig(py::reinterpret_borrow<py::dict>(m))));
    }
    const EngineOptions o = Unwrap(ToEngineOptions(hint, cores, options));
    absl::StatusOr<std::unique_ptr<Engine>> engine;
    {
      py::gil_scoped_release release;  // loading and measuring takes a while
      engine = Engine::Create(std::move(configs), o);
    }
    return std::make_unique<PyEngine>(Unwrap(std::move(engine)));
  }

  static std::unique_ptr<PyEngine> FromConfig(const std::string& path) {
    absl::StatusOr<std::unique_ptr<Engine>> engine;
    {
      py::gil_scoped_release release;
      auto config = LoadEngineConfig(path);
      engine = config.ok() ? Engine::Create(config->models, config->options)
                           : absl::StatusOr<std::unique_ptr<Engine>>(config.status());
    }
    return std::make_unique<PyEngine>(Unwrap(std::move(engine)));
  }

  Engine& engine() {
    if (!engine_) Raise(absl::UnavailableError("the engine is closed"));
    return *engine_;
  }

  const ModelInfo& Info(const std::string& model) {
    const ModelInfo* info = engine().FindModel(model);
    if (!info) {
      std::vector<std::string> names;
      for (const std::string& n : engine().ModelNames()) names.push_back("'" + n + "'");
      Raise(absl::NotFoundError(absl::StrCat(
          "no model '", model, "' in the engine (models: ", absl::StrJoin(names, ", "), ")")));
    }
    return *info;
  }

  py::dict Infer(const std::string& model, const py::handle& inputs,
                 std::optional<double> deadline_s) {
    std::vector<py::object> keep;
    NamedTensors tensors = Unwrap(ToInputs(Info(model), inputs, keep));
    const SubmitOptions options = ToSubmitOptions(deadline_s, false);
    absl::StatusOr<InferResult> result;
    {
      py::gil_scoped_release release;  // `keep` holds the arrays; no Python object is touched
      result = engine().Infer(model, std::move(tensors), options);
    }
    return ToDict(Unwrap(std::move(result)).outputs);
  }

  // Queues the request; `callback(outputs, error)` is called once on the completion thread.
  void SubmitCallback(const std::string& model, const py::handle& inputs,
                      std::optional<double> deadline_s, bool block, py::object callback) {
    auto call = std::make_shared<PendingCall>();
    call->callback = std::move(callback);
    absl::StatusOr<NamedTensors> tensors = ToInputs(Info(model), inputs, call->keep);
    InferCallback done = CompleteLater(call);
    if (!tensors.ok()) {
      done(tensors.status());  // answered through the same path: the future gets the error
      return;
    }
    const SubmitOptions options = ToSubmitOptions(deadline_s, block);
    py::gil_scoped_release release;
    engine().Submit(model, std::move(*tensors), options, std::move(done));
  }

  void SubmitMany(const std::string& model, const py::list& inputs,
                  std::optional<double> deadline_s, bool block, const py::list& callbacks) {
    if (inputs.size() != callbacks.size())
      Raise(absl::InvalidArgumentError("one callback per input"));
    const ModelInfo& info = Info(model);
    std::vector<std::pair<absl::StatusOr<NamedTensors>, InferCallback>> requests;
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto call = std::make_shared<PendingCall>();
      call->callback = callbacks[i];
      absl::StatusOr<NamedTensors> tensors = ToInputs(info, inputs[i], call->keep);
      requests.emplace_back(std::move(tensors), CompleteLater(call));
    }
    const SubmitOptions options = ToSubmitOptions(deadline_s, block);
    py::gil_scoped_release release;
    for (auto& [tensors, done] : requests) {
      if (!tensors.ok()) {
        done(tensors.status());
        continue;
      }
      engine().Submit(model, std::move(*tensors), options, std::move(done));
    }
  }

  void AddModel(const py::dict& model) {
    ModelConfig config = Unwrap(ToModelConfig(model));
    absl::Status s;
    {
      py::gil_scoped_release release;
      s = engine().AddModel(std::move(config));
    }
    Check(s);
  }

  void RemoveModel(const std::string& name) {
    absl::Status s;
    {
      py::gil_scoped_release release;
      s = engine().RemoveModel(name);
    }
    Check(s);
  }

  void Close() {
    py::gil_scoped_release release;
    if (engine_) engine_->Shutdown();
  }

  py::dict Inputs(const std::string& model) {
    py::dict out;
    for (const TensorInfo& t : Info(model).inputs) {
      out[py::str(t.name)] = py::make_tuple(ShapeList(t.shape), NumpyDType(t.dtype));
    }
    return out;
  }

 private:
  std::unique_ptr<Engine> engine_;
};

}  // namespace

void RegisterEngine(py::module_& m) {
  py::class_<PyEngine>(m, "_Engine")
      .def(py::init(&PyEngine::Create), py::arg("models"), py::arg("hint"), py::arg("cores"),
           py::arg("options"))
      .def_static("from_config", &PyEngine::FromConfig, py::arg("path"))
      .def("infer", &PyEngine::Infer, py::arg("model"), py::arg("inputs"),
           py::arg("deadline_s") = py::none())
      .def("submit_callback", &PyEngine::SubmitCallback, py::arg("model"), py::arg("inputs"),
           py::arg("deadline_s") = py::none(), py::arg("block") = false, py::arg("callback"))
      .def("submit_many", &PyEngine::SubmitMany, py::arg("model"), py::arg("inputs"),
           py::arg("deadline_s") = py::none(), py::arg("block") = true, py::arg("callbacks"))
      .def("add_model", &PyEngine::AddModel, py::arg("model"))
      .def("remove_model", &PyEngine::RemoveModel, py::arg("name"))
      .def("close", &PyEngine::Close)
      .def("models", [](PyEngine& e) { return e.engine().ModelNames(); })
      .def("inputs", &PyEngine::Inputs, py::arg("model"))
      .def("plan_text", [](PyEngine& e) { return e.engine().DescribePlan(); })
      .def("plan_dict", [](PyEngine& e) { return PlanDict(e.engine().plan()); })
      .def(
          "stats",
          [](PyEngine& e, const std::string& model) {
            return StatsDict(Unwrap(e.engine().Stats(model)));
          },
          py::arg("model"))
      .def("max_batch_size",
           [](PyEngine& e, const std::string& model) {
             return Unwrap(e.engine().MaxBatchSize(model));
           })
      .def("busy_threads", [](PyEngine& e) { return e.engine().BusyThreads(); })
      .def("max_busy_threads", [](PyEngine& e) { return e.engine().MaxBusyThreads(); })
      .def("start_trace", [](PyEngine& e) { e.engine().StartTrace(); })
      .def("stop_trace", [](PyEngine& e) { return e.engine().StopTrace(); });
  m.def(
      "usable_cores", [] { return UsableCpus().size(); },
      "Cores this process may use (sched_getaffinity).");
}

}  // namespace loom::python
