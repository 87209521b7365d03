#include "bench/strategies.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/child_process.h"
#include "core/stats.h"
#include "core/tensor_rows.h"

namespace loom::bench {
namespace {

double CpuSeconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Resets this process's peak RSS (Linux: clear_refs 5), so each strategy sees its own peak.
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

double PeakRssMb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

// Times `body` (which fills latencies and, where it has threads of its own, spans) in this process.
template <typename Body>
absl::StatusOr<StrategyRun> MeasureInProcess(Body body) {
  StrategyRun run;
  ResetPeakRss();
  const double cpu0 = CpuSeconds(RUSAGE_SELF);
  const auto start = Clock::now();
  run.started = start;
  LOOM_RETURN_IF_ERROR(body(run.latencies_ms, run.spans));
  run.wall_s = MillisecondsSince(start) / 1000.0;
  run.cpu_s = CpuSeconds(RUSAGE_SELF) - cpu0;
  run.peak_rss_mb = PeakRssMb();
  run.wall_with_startup_s = run.wall_s;
  return run;
}

// A session as a user's first attempt makes it (ONNX Runtime's defaults, or `threads` intra-op
// threads), warmed up on the workload's first item outside any timed region.
absl::StatusOr<std::unique_ptr<Session>> DefaultSession(const Workload& w, int model,
                                                        bool global_pool = false, int threads = 0) {
  SessionOptions options;
  options.use_global_thread_pool = global_pool;
  options.intra_op_threads = threads;
  LOOM_ASSIGN_OR_RETURN(auto session,
                        CreateSession(w.spec.models[static_cast<size_t>(model)].path, options));
  LOOM_RETURN_IF_ERROR(session->Run(w.inputs[static_cast<size_t>(model)][0]).status());
  return session;
}

absl::Status RunTimed(Session& session, const NamedTensors& inputs, std::vector<double>& latencies,
                      std::vector<TimedSpan>& spans, int lane, const std::string& model) {
  const auto start = Clock::now();
  absl::Status status = session.Run(inputs).status();
  const auto end = Clock::now();
  latencies.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  spans.push_back({lane, model, start, end});
  return status;
}

const std::string& ModelName(const Workload& w, int model) {
  return w.spec.models[static_cast<size_t>(model)].name;
}

// Serial: one session per model, item by item, stream by stream.
absl::StatusOr<StrategyRun> Serial(const Workload& w, bool global_pool) {
  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t m = 0; m < w.infos.size(); ++m) {
    LOOM_ASSIGN_OR_RETURN(auto s, DefaultSession(w, static_cast<int>(m), global_pool));
    sessions.push_back(std::move(s));
  }
  auto run = MeasureInProcess(
      [&](std::vector<double>& latencies, std::vector<TimedSpan>& spans) -> absl::Status {
        for (int k = 0; k < w.items(); ++k) {
          for (const Stream& s : w.streams) {
            LOOM_RETURN_IF_ERROR(
                RunTimed(*sessions[static_cast<size_t>(s.model)],
                         w.inputs[static_cast<size_t>(s.model)][static_cast<size_t>(k)], latencies,
                         spans, 0, ModelName(w, s.model)));
          }
        }
        return absl::OkStatus();
      });
  if (run.ok()) run->lanes = {"the caller's thread"};
  return run;
}

// Threads: a session and a thread per stream.
absl::StatusOr<StrategyRun> Threads(const Workload& w, bool global_pool, int threads_each = 0) {
  std::vector<std::unique_ptr<Session>> sessions;
  for (const Stream& s : w.streams) {
    LOOM_ASSIGN_OR_RETURN(auto session, DefaultSession(w, s.model, global_pool, threads_each));
    sessions.push_back(std::move(session));
  }
  auto run = MeasureInProcess(
      [&](std::vector<double>& latencies, std::vector<TimedSpan>& spans) -> absl::Status {
        std::vector<std::vector<double>> per_stream(w.streams.size());
        std::vector<std::vector<TimedSpan>> spans_per_stream(w.streams.size());
        std::vector<absl::Status> status(w.streams.size());
        std::vector<std::thread> threads;
        for (size_t i = 0; i < w.streams.size(); ++i) {
          per_stream[i].reserve(static_cast<size_t>(w.items()));
          spans_per_stream[i].reserve(static_cast<size_t>(w.items()));
          threads.emplace_back([&, i] {
            // Nothing may leave a thread: an allocation that fails becomes this stream's error.
            try {
              const int model = w.streams[i].model;
              const auto& inputs = w.inputs[static_cast<size_t>(model)];
              for (int k = 0; k < w.items() && status[i].ok(); ++k) {
                status[i] = RunTimed(*sessions[i], inputs[static_cast<size_t>(k)], per_stream[i],
                                     spans_per_stream[i], static_cast<int>(i), ModelName(w, model));
              }
            } catch (const std::exception& e) {
              status[i] = absl::ResourceExhaustedError(absl::StrCat("thread ", i, ": ", e.what()));
            }
          });
        }
        for (auto& t : threads) t.join();
        for (size_t i = 0; i < w.streams.size(); ++i) {
          LOOM_RETURN_IF_ERROR(status[i]);
          latencies.insert(latencies.end(), per_stream[i].begin(), per_stream[i].end());
          spans.insert(spans.end(), spans_per_stream[i].begin(), spans_per_stream[i].end());
        }
        return absl::OkStatus();
      });
  if (run.ok()) {
    for (size_t i = 0; i < w.streams.size(); ++i) {
      run->lanes.push_back(absl::StrCat("thread ", i, " (", ModelName(w, w.streams[i].model), ")"));
    }
  }
  return run;
}

}  // namespace

std::string StaticLayout::Name() const {
  return absl::StrCat("static ", instances, "x", threads, spinning ? " spin" : " nospin");
}

absl::StatusOr<StrategyRun> RunSerial(const Workload& w) { return Serial(w, false); }
absl::StatusOr<StrategyRun> RunThreads(const Workload& w) { return Threads(w, false); }
absl::StatusOr<StrategyRun> RunThreadsAllCores(const Workload& w, int cores) {
  return Threads(w, false, cores);
}

absl::StatusOr<StrategyRun> RunBatch(const Workload& w) {
  if (w.spec.kind != WorkloadKind::kCopies || !w.batchable) {
    return absl::FailedPreconditionError("batch: needs copies of a model with a dynamic dim 0");
  }
  LOOM_ASSIGN_OR_RETURN(auto session, DefaultSession(w, 0));
  // The N copies' inputs for each item, concatenated beforehand (the user's blobFromImages).
  std::vector<NamedTensors> batches;
  for (int k = 0; k < w.items(); ++k) {
    std::vector<const NamedTensors*> parts(w.streams.size(), &w.inputs[0][static_cast<size_t>(k)]);
    LOOM_ASSIGN_OR_RETURN(NamedTensors batch, ConcatRows(parts));
    batches.push_back(std::move(batch));
  }
  LOOM_RETURN_IF_ERROR(session->Run(batches[0]).status());  // warm-up at the batch's shape
  auto run = MeasureInProcess(
      [&](std::vector<double>& latencies, std::vector<TimedSpan>& spans) -> absl::Status {
        for (const NamedTensors& batch : batches) {
          const auto start = Clock::now();
          LOOM_RETURN_IF_ERROR(session->Run(batch).status());
          const auto end = Clock::now();
          latencies.insert(latencies.end(), w.streams.size(),
                           std::chrono::duration<double, std::milli>(end - start).count());
          spans.push_back({0, absl::StrCat(ModelName(w, 0), " x", w.streams.size()), start, end});
        }
        return absl::OkStatus();
      });
  if (run.ok()) run->lanes = {"the caller's thread"};
  return run;
}

absl::StatusOr<StrategyRun> RunLoom(const Workload& w, const EngineOptions& options,
                                    const std::optional<StaticLayout>& layout, bool trace) {
  std::vector<ModelConfig> configs;
  for (const BenchModel& m : w.spec.models) {
    ModelConfig c{.name = m.name, .path = m.path};
    c.warmup_inputs = w.inputs[configs.size()][0];
    configs.push_back(std::move(c));
  }
  EngineOptions engine_options = options;
  if (layout) {  // every model on the same fixed shared workers
    engine_options.shared_workers = layout->instances;
    engine_options.shared_threads = layout->threads;
    engine_options.allow_spinning = layout->spinning;
  }
  LOOM_ASSIGN_OR_RETURN(auto engine, Engine::Create(configs, engine_options));
  // Enough requests in flight to keep every worker busy and to form full batches.
  int max_batch = 1;
  for (const BatchChoice& b : engine->plan().batching)
    max_batch = std::max(max_batch, b.max_batch_size);
  const int window = static_cast<int>(engine->plan().workers.size()) * 2 * max_batch;
  if (trace) engine->StartTrace();
  absl::StatusOr<StrategyRun> run = MeasureInProcess(
      [&](std::vector<double>& latencies, std::vector<TimedSpan>&) -> absl::Status {
        std::mutex mu;
        std::condition_variable cv;
        int in_flight = 0;
        absl::Status failure;
        latencies.reserve(static_cast<size_t>(w.total_inferences()));
        for (int k = 0; k < w.items(); ++k) {
          for (const Stream& s : w.streams) {
            {
              std::unique_lock<std::mutex> lock(mu);
              cv.wait(lock, [&] { return in_flight < window; });
              ++in_flight;
            }
            const auto start = Clock::now();
            engine->Submit(w.spec.models[static_cast<size_t>(s.model)].name,
                           w.inputs[static_cast<size_t>(s.model)][static_cast<size_t>(k)], {},
                           [&, start](absl::StatusOr<InferResult> r) {
                             const double ms = MillisecondsSince(start);
                             std::lock_guard<std::mutex> lock(mu);
                             latencies.push_back(ms);
                             if (!r.ok() && failure.ok()) failure = r.status();
                             --in_flight;
                             cv.notify_all();
                           });
          }
        }
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return in_flight == 0; });
        return failure;
      });
  if (run.ok()) {
    run->plan = engine->DescribePlan();
    run->costs = engine->plan().costs;
    if (trace) run->trace_json = engine->StopTrace();
  }
  return run;
}

const char* ChildModeName(ChildMode mode) {
  switch (mode) {
    case ChildMode::kProcesses:
      return "processes";
    case ChildMode::kSharedPoolSerial:
      return "shared-pool-serial";
    case ChildMode::kSharedPoolThreads:
      return "shared-pool-threads";
  }
  return "?";
}

absl::StatusOr<ChildMode> ParseChildMode(const std::string& name) {
  for (ChildMode m :
       {ChildMode::kProcesses, ChildMode::kSharedPoolSerial, ChildMode::kSharedPoolThreads}) {
    if (name == ChildModeName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown child mode '", name, "'"));
}

absl::StatusOr<StrategyRun> RunInChildren(const Workload& w, ChildMode mode,
                                          const std::string& self_exe, const std::string& spec_path,
                                          int cores) {
  const int count = mode == ChildMode::kProcesses ? static_cast<int>(w.streams.size()) : 1;
  StrategyRun run;
  const double cpu0 = CpuSeconds(RUSAGE_CHILDREN);
  const auto spawned = Clock::now();
  std::vector<Child> children;
  auto abandon = [&](absl::Status status) {
    Abandon(children);
    return status;
  };
  for (int part = 0; part < count; ++part) {
    auto child = Spawn({self_exe, "bench-child", "--spec", spec_path, "--mode", ChildModeName(mode),
                        "--part", std::to_string(part), "--cores", std::to_string(cores)});
    if (!child.ok()) return abandon(child.status());
    children.push_back(*child);
  }
  for (Child& c : children) {
    const std::string line = ReadLine(c.from);
    if (line != "ready")
      return abandon(absl::InternalError(absl::StrCat(ChildModeName(mode), " child: ", line)));
  }
  const auto go = Clock::now();
  for (Child& c : children) WriteLine(c.to, "go");
  std::vector<std::string> results;
  for (Child& c : children) results.push_back(ReadLine(c.from));
  run.wall_s = MillisecondsSince(go) / 1000.0;
  for (Child& c : children) {
    int status = 0;
    rusage usage{};
    wait4(c.pid, &status, 0, &usage);
    run.peak_rss_mb += static_cast<double>(usage.ru_maxrss) / 1024.0;
    fclose(c.to);
    fclose(c.from);
  }
  run.wall_with_startup_s = MillisecondsSince(spawned) / 1000.0;
  run.cpu_s = CpuSeconds(RUSAGE_CHILDREN) - cpu0;  // includes start-up
  for (const std::string& line : results) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("latencies_ms")) {
      return absl::InternalError(absl::StrCat(ChildModeName(mode), " child failed: ", line));
    }
    for (double ms : j["latencies_ms"]) run.latencies_ms.push_back(ms);
  }
  return run;
}

int ChildMain(const std::string& spec_path, ChildMode mode, int part, int cores) {
  auto fail = [](const absl::Status& s) {
    std::cout << "error: " << s.message() << std::endl;
    return 1;
  };
  std::ifstream in(spec_path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return fail(absl::InvalidArgumentError("unreadable workload spec"));
  auto spec = WorkloadSpec::FromJson(j);
  if (!spec.ok()) return fail(spec.status());
  auto w = PrepareWorkload(*spec);
  if (!w.ok()) return fail(w.status());

  std::vector<std::unique_ptr<Session>> sessions;
  std::function<absl::StatusOr<StrategyRun>()> body;
  if (mode == ChildMode::kProcesses) {
    if (part < 0 || part >= static_cast<int>(w->streams.size())) {
      return fail(absl::InvalidArgumentError("part out of range"));
    }
    const int model = w->streams[static_cast<size_t>(part)].model;
    auto session = DefaultSession(*w, model);
    if (!session.ok()) return fail(session.status());
    sessions.push_back(std::move(*session));
    body = [&, model]() {  // `model` by value: it is gone when body runs
      return MeasureInProcess([&, model](std::vector<double>& latencies,
                                         std::vector<TimedSpan>& spans) -> absl::Status {
        for (int k = 0; k < w->items(); ++k) {
          LOOM_RETURN_IF_ERROR(
              RunTimed(*sessions[0], w->inputs[static_cast<size_t>(model)][static_cast<size_t>(k)],
                       latencies, spans, 0, ModelName(*w, model)));
        }
        return absl::OkStatus();
      });
    };
  } else {
    // ONNX Runtime's global pool: as many threads as usable cores, its default spinning.
    if (absl::Status s = ConfigureOrtGlobalThreadPool(cores, true); !s.ok()) return fail(s);
    const bool serial = mode == ChildMode::kSharedPoolSerial;
    body = [&, serial]() { return serial ? Serial(*w, true) : Threads(*w, true); };
  }
  // Sessions for the shared-pool modes are made inside Serial/Threads, before their timed region.
  std::cout << "ready" << std::endl;
  std::string go;
  std::getline(std::cin, go);
  auto run = body();
  if (!run.ok()) return fail(run.status());
  std::cout << nlohmann::json{{"latencies_ms", run->latencies_ms}}.dump() << std::endl;
  return 0;
}

}  // namespace loom::bench
