// The strategies `loom bench` compares, each running a whole Workload once:
//   serial        one session per model (ONNX Runtime defaults), every inference in turn;
//   threads       a session and a thread per stream, ONNX Runtime's defaults — the naive parallel
//                 version; threads-all-cores: each session explicitly given as many intra-op
//                 threads as there are cores (spinning on), the common hand-tuned setup;
//   processes     a process per stream, each loading its own session (child processes of this
//                 binary); timed with and without their start-up;
//   batch         copies of a dynamic-batch model: one session, the N copies' inputs as one batch;
//   shared-pool   ONNX Runtime's remedy: one global intra-op pool for all sessions
//                 (DisablePerSessionThreads), run serially and with a thread per stream, in a
//                 fresh process (the global pool is fixed when the runtime environment is made);
//   loom          the Engine, auto plan; requests submitted asynchronously with a bounded window;
//   static        the Engine with a fixed instances × threads × spinning layout (for --sweep).
// Sessions and engines are created outside the timed region; inputs are prepared beforehand.
#ifndef LOOM_BENCH_STRATEGIES_H_
#define LOOM_BENCH_STRATEGIES_H_

#include <optional>
#include <string>
#include <vector>

#include "bench/html_report.h"
#include "bench/workload.h"
#include "loom/engine.h"

namespace loom::bench {

struct StrategyRun {
  double wall_s = 0;                 // timed region
  double wall_with_startup_s = 0;    // processes: from spawn to the last exit
  std::vector<double> latencies_ms;  // one per inference
  double cpu_s = 0;                  // user + system CPU in the timed region (process + children)
  double peak_rss_mb = 0;            // peak resident memory (sum over child processes)
  std::string plan;                  // loom / static: the engine's plan
  std::vector<ModelCost> costs;      // loom: the costs its plan measured
  std::string trace_json;            // loom with tracing on: the run's Chrome trace-event JSON
  // In-process naive strategies: every inference as a span on its thread (lane), from `started`.
  TimePoint started;
  std::vector<std::string> lanes;
  std::vector<TimedSpan> spans;
};

struct StaticLayout {
  int instances = 1;
  int threads = 1;
  bool spinning = false;
  std::string Name() const;  // "static 2x1 spin-off"
};

absl::StatusOr<StrategyRun> RunSerial(const Workload& w);
absl::StatusOr<StrategyRun> RunThreads(const Workload& w);
// The common hand-tuned setup: every session asks for as many threads as there are cores
// (ONNX Runtime's documented default; this build defaults to 1 on some machines).
absl::StatusOr<StrategyRun> RunThreadsAllCores(const Workload& w, int cores);
absl::StatusOr<StrategyRun> RunBatch(const Workload& w);
// `layout` empty: the auto plan with `options`. `trace`: record the timed run (Engine::StartTrace).
absl::StatusOr<StrategyRun> RunLoom(const Workload& w, const EngineOptions& options,
                                    const std::optional<StaticLayout>& layout, bool trace = false);

enum class ChildMode { kProcesses, kSharedPoolSerial, kSharedPoolThreads };
const char* ChildModeName(ChildMode mode);
absl::StatusOr<ChildMode> ParseChildMode(const std::string& name);

// Runs `mode` in child processes of `self_exe` (`loom bench-child`), over the workload described
// by the JSON file `spec_path`. `cores`: the shared pool's size.
absl::StatusOr<StrategyRun> RunInChildren(const Workload& w, ChildMode mode,
                                          const std::string& self_exe, const std::string& spec_path,
                                          int cores);

// The child side: prepares the workload, loads its sessions, prints "ready", waits for "go" on
// stdin, runs, prints one JSON line with its latencies. Returns the exit code.
int ChildMain(const std::string& spec_path, ChildMode mode, int part, int cores);

}  // namespace loom::bench

#endif  // LOOM_BENCH_STRATEGIES_H_
