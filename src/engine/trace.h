// The engine's trace as Chrome trace-event JSON (opens in Perfetto or chrome://tracing): a track
// per worker (the caller's thread for inline runs) with a span per run — model, rows and threads
// (more threads than the worker's own: a wide run) — and an async span per request for its wait
// in the queue.
#ifndef LOOM_ENGINE_TRACE_H_
#define LOOM_ENGINE_TRACE_H_

#include <string>
#include <vector>

#include "core/clock.h"
#include "loom/plan.h"
#include "sched/scheduler.h"

namespace loom {

std::string ChromeTraceJson(const std::vector<sched::TraceSpan>& spans, TimePoint origin,
                            const EnginePlan& plan);

}  // namespace loom

#endif  // LOOM_ENGINE_TRACE_H_
