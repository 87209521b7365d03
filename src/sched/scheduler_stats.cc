// Scheduler: statistics (per model and per worker), the busy-thread accounting as read, the plan's
// narrow/wide lines and history, and the trace. See scheduler.h.
#include <utility>

#include "sched/scheduler.h"

namespace loom::sched {
namespace {

// Prometheus-style cumulative buckets from a histogram snapshot.
Distribution ToDistribution(const Histogram::Snapshot& s, const std::vector<uint64_t>& bounds,
                            double scale) {
  Distribution d;
  for (uint64_t b : bounds) {
    d.upper_bounds.push_back(static_cast<double>(b) * scale);
    d.cumulative_counts.push_back(s.CountAtMost(b));
  }
  d.count = s.count;
  d.sum = static_cast<double>(s.sum) * scale;
  return d;
}

const std::vector<uint64_t>& MicrosecondBounds() {
  static const auto* bounds = [] {
    auto* b = new std::vector<uint64_t>();
    for (int k = 4; k <= 25; ++k) b->push_back((uint64_t{1} << k) - 1);  // ~16 us .. 33 s
    return b;
  }();
  return *bounds;
}

const std::vector<uint64_t>& RowBounds() {
  static const auto* bounds = new std::vector<uint64_t>{1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256};
  return *bounds;
}

}  // namespace

void Scheduler::RecordBatch(Slot& slot, int worker, const std::vector<Request*>& requests,
                            const RunPlan& plan, TimePoint start, int64_t compute_us,
                            int64_t total_rows, bool ok) {
  ++slot.batches;
  slot.batch_rows += total_rows;
  slot.compute_us.Record(static_cast<uint64_t>(compute_us));
  slot.rows.Record(static_cast<uint64_t>(total_rows));
  for (const auto& r : requests) {
    slot.queue_us.Record(static_cast<uint64_t>(MicrosBetween(r->enqueued, start)));
  }
  (ok ? slot.successes : slot.failures) += static_cast<int64_t>(requests.size());
  if (!tracing_.load(std::memory_order_relaxed)) return;
  const std::string& model = slot.spec.name;
  const TimePoint end = start + std::chrono::microseconds(compute_us);
  std::lock_guard<std::mutex> lock(trace_mu_);
  trace_.push_back(
      {TraceSpan::kRun, worker, model, start, end, static_cast<int>(total_rows), plan.threads});
  for (const auto& r : requests) {
    trace_.push_back(
        {TraceSpan::kQueue, worker, model, r->enqueued, start, static_cast<int>(r->rows), 0});
  }
}

ModelStats Scheduler::Stats(int model) const {
  ModelStats s;
  std::shared_ptr<const Slot> slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!FindSlot(model)) return s;
    slot = slots_[static_cast<size_t>(model)];
    s.queued = static_cast<int64_t>(slot->queue.size());
    s.running = slot->running;
  }
  // Counters and histograms are atomics: read without the scheduler's lock.
  s.requests = slot->requests;
  s.successes = slot->successes;
  s.failures = slot->failures;
  s.deadline_exceeded = slot->deadline_exceeded;
  s.cancelled = slot->cancelled;
  s.rejected = slot->rejected;
  s.batches = slot->batches;
  s.mean_batch_rows =
      s.batches > 0 ? static_cast<double>(slot->batch_rows) / static_cast<double>(s.batches) : 0;
  const Histogram::Snapshot queue = slot->queue_us.Take(), compute = slot->compute_us.Take(),
                            rows = slot->rows.Take();
  s.queue_p50_us = queue.Quantile(50);
  s.queue_p95_us = queue.Quantile(95);
  s.queue_p99_us = queue.Quantile(99);
  s.compute_p50_us = compute.Quantile(50);
  s.compute_p95_us = compute.Quantile(95);
  s.compute_p99_us = compute.Quantile(99);
  s.queue_seconds = ToDistribution(queue, MicrosecondBounds(), 1e-6);
  s.compute_seconds = ToDistribution(compute, MicrosecondBounds(), 1e-6);
  s.batch_rows = ToDistribution(rows, RowBounds(), 1);
  return s;
}

std::vector<WorkerStats> Scheduler::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerStats> out;
  for (const auto& w : workers_) {
    out.push_back({w->config.cpus, w->config.group, static_cast<double>(w->busy_us.load()) / 1e6,
                   w->runs.load(), w->tid.load(), w->state == WorkerState::kAssembling});
  }
  return out;
}

int Scheduler::busy_threads() const { return busy_now_.load(std::memory_order_relaxed); }
int Scheduler::max_busy_threads() const {
  return max_busy_threads_.load(std::memory_order_relaxed);
}

std::vector<ModeEvent> Scheduler::ModeHistory() const {
  std::lock_guard<std::mutex> lock(mu_);
  return history_;
}

std::string Scheduler::DescribeModes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  if (groups_.empty() || !options_.adaptive) return out;
  for (const auto& s : slots_) {
    if (!s || s->removing) continue;
    bool wide_any = false;
    for (const auto& p : s->spec.wide) wide_any |= p != nullptr;
    if (wide_any) out += s->modes.Describe(s->spec.name, s->spec.measured_elements);
  }
  return out;
}

void Scheduler::SetTracing(bool on) { tracing_.store(on); }

std::vector<TraceSpan> Scheduler::TakeTrace() {
  std::lock_guard<std::mutex> lock(trace_mu_);
  return std::exchange(trace_, {});
}

}  // namespace loom::sched
