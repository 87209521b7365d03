// Dynamic batching helpers: which queued requests may share a run, when a batch should run, and
// concatenating inputs / splitting outputs along dim 0. Pure functions; the scheduler holds the
// queues and calls these under its lock (Decide) or outside it (ConcatRows, SplitRows).
#ifndef LOOM_SCHED_BATCHER_H_
#define LOOM_SCHED_BATCHER_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "loom/model_info.h"
#include "loom/tensor.h"

namespace loom::sched {

struct BatchingConfig {
  int max_batch_size = 1;  // most rows per run; 1 = no batching
  std::vector<int> preferred_batch_sizes;
  std::chrono::microseconds max_queue_delay{0};
};

// Requests batch together only if every input has the same dtype and the same dims after dim 0.
// The key encodes exactly that ("f32[3,48,320]|i64[1]").
std::string BatchKey(const NamedTensors& inputs);

// Whether a batch of `rows` whose oldest request was queued at `oldest` should run now: it is
// full, it reached a preferred size, its delay has passed, or `flush` (shutdown / no batching).
// Otherwise the scheduler waits until `oldest + max_queue_delay` for more requests.
bool ShouldRunNow(const BatchingConfig& config, int rows, bool more_rows_would_not_fit,
                  std::chrono::steady_clock::time_point oldest,
                  std::chrono::steady_clock::time_point now, bool flush);

// Concatenates the parts' inputs along dim 0, in the model's input order. Every part has the
// model's inputs in that order with equal BatchKey (the scheduler guarantees it). A single part
// is returned as is (no copy).
NamedTensors ConcatRows(const std::vector<const NamedTensors*>& parts);

// Splits each output along dim 0 into consecutive pieces of `rows[i]` rows (views, no copy).
// Fails, naming the model and output, when an output's dim 0 is not the total row count (a model
// that declares a dynamic batch but does not keep rows independent).
absl::StatusOr<std::vector<NamedTensors>> SplitRows(const std::string& model,
                                                    const NamedTensors& outputs,
                                                    const std::vector<int64_t>& rows);

}  // namespace loom::sched

#endif  // LOOM_SCHED_BATCHER_H_
