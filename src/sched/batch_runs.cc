// Scheduler: runs. A worker's batch (RunBatch: narrow on its own session, or wide after its group
// partners lent their cores), the run itself (Execute: join the requests' rows, run, split), a
// caller's inline run on claimed cores (TryRunInline), and the width policy's part in each
// (ChooseWide, RecordRun). See scheduler.h.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "core/tensor_rows.h"
#include "sched/scheduler.h"

namespace loom::sched {
namespace {

constexpr size_t kMaxHistory = 100;  // preference switches kept for the plan

}  // namespace

bool Scheduler::ChooseWide(Slot& slot, int group, bool alone, int64_t elements, int64_t rows) {
  if (!options_.adaptive || group < 0 || static_cast<size_t>(group) >= slot.spec.wide.size() ||
      !slot.spec.wide[static_cast<size_t>(group)]) {
    return false;
  }
  return slot.modes.ChooseWide(options_, Modes::SizeOf(slot.spec.measured_elements, elements, rows),
                               alone);
}

void Scheduler::RecordRun(Slot& slot, const RunPlan& plan, int64_t compute_us, int64_t rows,
                          int64_t elements, const Request& first, int group) {
  const RunRecord run{plan.session.get(), plan.alone, plan.wide, compute_us, rows,
                      elements,           &first};
  const TimePoint now = clock_->Now();
  for (std::string& text :
       slot.modes.Record(options_, slot.spec.measured_elements, group >= 0, now, run)) {
    Log().info("plan: model '{}' {}", slot.spec.name, text);
    history_.push_back({now, slot.spec.name, std::move(text)});
    if (history_.size() > kMaxHistory) history_.erase(history_.begin());
  }
}

void Scheduler::ReleasePartners(const Group& group, int w) {
  for (int p : group.config.workers) {
    Worker& partner = *workers_[static_cast<size_t>(p)];
    if (p != w && partner.state == WorkerState::kLent && partner.lent_to == w) {
      partner.state = WorkerState::kIdle;
      partner.lent_to = -1;
      partner.cv.notify_all();
    }
  }
}

bool Scheduler::AssembleWide(int w, int g, std::unique_lock<std::mutex>& lock, int64_t& idle_us) {
  Worker& me = *workers_[static_cast<size_t>(w)];
  const TimePoint assembly_start = clock_->Now();
  // Wait for the partners to lend their cores (each joins when its current work ends).
  Group& group = groups_[static_cast<size_t>(g)];
  group.assembling = w;
  me.state = WorkerState::kAssembling;
  for (int p : group.config.workers) {
    if (p != w) workers_[static_cast<size_t>(p)]->cv.notify_all();
  }
  bool wide = true;
  while (true) {
    bool all = true, blocked = false;
    for (int p : group.config.workers) {
      if (p == w) continue;
      const Worker& partner = *workers_[static_cast<size_t>(p)];
      const bool mine = partner.state == WorkerState::kLent && partner.lent_to == w;
      all &= mine;
      // A partner lent elsewhere (an admin lease) or leaving will not come: run narrow.
      blocked |= (partner.state == WorkerState::kLent && !mine) || partner.retire ||
                 partner.state == WorkerState::kParked;
    }
    if (all) break;
    if (blocked || me.retire) {
      wide = false;
      break;
    }
    clock_->WaitUntil(me.cv, lock, TimePoint::max());
  }
  if (!wide) {
    group.assembling = -1;
    ReleasePartners(group, w);
  }
  // The cores that idled for this wide run: the leader's while it waited, each partner's from
  // when it joined (the last one joins as the run starts).
  const TimePoint now = clock_->Now();
  idle_us = MicrosBetween(assembly_start, now);
  if (wide) {
    for (int p : group.config.workers) {
      if (p != w) idle_us += MicrosBetween(workers_[static_cast<size_t>(p)]->lent_since, now);
    }
  }
  return wide;
}

void Scheduler::RunBatch(int w, Batch batch, std::unique_lock<std::mutex>& lock) {
  Worker& me = *workers_[static_cast<size_t>(w)];
  Slot& slot = *slots_[static_cast<size_t>(batch.model)];
  int64_t rows = 0, elements = 0;
  for (const auto& r : batch.requests) {
    rows += r->rows;
    elements += ElementCount(r->inputs);
  }
  const int g = me.config.group;
  slot.running += rows;  // keeps the slot (RemoveModel waits) through the assembly and the run
  RunPlan plan;
  plan.alone = QueuedFor(w) == 0 && PartnersIdle(w);
  bool wide = ChooseWide(slot, g, plan.alone, elements, rows) &&
              groups_[static_cast<size_t>(g)].assembling < 0;
  int64_t assembly_us = 0;
  if (wide) wide = AssembleWide(w, g, lock, assembly_us);
  if (wide) {
    plan.wide = true;
    plan.session = slot.spec.wide[static_cast<size_t>(g)];
    plan.threads = groups_[static_cast<size_t>(g)].cpu_count;
  } else {
    plan.session = slot.spec.narrow[static_cast<size_t>(w)];
    plan.threads = static_cast<int>(me.config.cpus.size());
  }
  me.state = WorkerState::kBusy;
  Occupy(plan.threads);

  lock.unlock();
  std::vector<Request*> requests;
  for (auto& r : batch.requests) requests.push_back(r.get());
  const TimePoint start = clock_->Now();
  std::vector<absl::StatusOr<InferResult>> answers = Execute(w, slot, requests, plan, start);
  const int64_t compute_us = answers.empty() || !answers[0].ok()
                                 ? MicrosBetween(start, clock_->Now())
                                 : answers[0]->compute_us;
  lock.lock();

  Occupy(-plan.threads);
  me.busy_us += compute_us;
  ++me.runs;
  // Under load a wide run also costs the time its workers' cores idled while the last partners
  // ended their runs: per group, that idle time over the group's workers. Uncharged, wide under
  // load measured better than it was and the choice flipped to it.
  const int64_t charged_us = wide && !plan.alone
                                 ? compute_us + assembly_us / std::max(slot.modes.group_workers, 1)
                                 : compute_us;
  RecordRun(slot, plan, charged_us, rows, elements, *batch.requests[0], g);
  if (wide) {
    Group& group = groups_[static_cast<size_t>(g)];
    group.assembling = -1;
    ReleasePartners(group, w);
  }
  slot.running -= rows;  // after this the slot may be removed: no access below
  state_cv_.notify_all();
  lock.unlock();
  // The worker stays busy while its callbacks run, so that Infer() from a callback can use its
  // session (TryRunInline) and no one else can.
  for (size_t i = 0; i < batch.requests.size(); ++i) {
    Answer(batch.requests[i], std::move(answers[i]));
  }
  lock.lock();
  me.state = WorkerState::kIdle;
  GrantLeases();
}

std::vector<absl::StatusOr<InferResult>> Scheduler::Execute(int worker, Slot& slot,
                                                            const std::vector<Request*>& requests,
                                                            const RunPlan& plan, TimePoint start) {
  const std::string& model = slot.spec.name;
  const size_t n = requests.size();
  std::vector<absl::StatusOr<InferResult>> answers;
  answers.reserve(n);
  int64_t total_rows = 0;
  absl::Status failure;
  int64_t compute_us = 0;
  try {
    std::vector<const NamedTensors*> parts;
    std::vector<int64_t> rows;
    parts.reserve(n);
    rows.reserve(n);
    for (const auto& r : requests) {
      parts.push_back(&r->inputs);
      rows.push_back(r->rows);
      total_rows += r->rows;
    }
    absl::StatusOr<NamedTensors> joined = ConcatRows(parts);
    absl::StatusOr<NamedTensors> outputs =
        joined.ok() ? plan.session->Run(*joined) : absl::StatusOr<NamedTensors>(joined.status());
    compute_us = MicrosBetween(start, clock_->Now());
    absl::StatusOr<std::vector<NamedTensors>> split =
        outputs.ok() ? SplitRows(model, *outputs, rows)
                     : absl::StatusOr<std::vector<NamedTensors>>(outputs.status());
    if (split.ok()) {
      for (size_t i = 0; i < n; ++i) {
        InferResult result;
        result.outputs = std::move((*split)[i]);
        result.queue_us = MicrosBetween(requests[i]->enqueued, start);
        result.compute_us = compute_us;
        result.batch_rows = static_cast<int>(total_rows);
        result.threads = plan.threads;
        answers.push_back(std::move(result));
      }
    } else {
      failure = split.status();
    }
  } catch (const std::bad_alloc&) {
    failure = absl::ResourceExhaustedError(absl::StrCat(
        "model '", model, "': out of memory running a batch of ", total_rows, " rows"));
  } catch (const std::exception& e) {
    failure = absl::InternalError(absl::StrCat("model '", model, "': ", e.what()));
  } catch (...) {
    failure =
        absl::InternalError(absl::StrCat("model '", model, "': unknown exception in the backend"));
  }
  if (!failure.ok()) {
    answers.clear();
    for (size_t i = 0; i < n; ++i) answers.push_back(failure);
    if (compute_us == 0) compute_us = MicrosBetween(start, clock_->Now());
  }
  RecordBatch(slot, worker, requests, plan, start, compute_us, total_rows, failure.ok());
  return answers;
}

std::optional<absl::Status> Scheduler::ClaimInline(Slot& slot, const Request& request,
                                                   int64_t elements, InlineRun& run) {
  if (const int own = CallingWorker(); own >= 0) {
    // Inside a completion callback on worker `own`, which is busy with it: its own session is
    // free, and waiting on another worker could deadlock.
    run.worker = own;
    if (!ServesModel(own, slot)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Infer() for model '", slot.spec.name,
          "' from a completion callback on a worker that does not serve it: waiting for another "
          "worker there could deadlock; use Submit()"));
    }
    run.plan.session = slot.spec.narrow[static_cast<size_t>(own)];
    run.plan.threads = static_cast<int>(workers_[static_cast<size_t>(own)]->config.cpus.size());
    return absl::OkStatus();
  }
  if (!slot.queue.empty()) return std::nullopt;  // never overtake queued requests
  // A worker would run it at once only if a batch of this request alone is ready (no batching
  // delay to wait for other requests).
  const TimePoint now = request.enqueued;
  if (!ShouldRunNow(slot.spec.batching, request.rows, false, now, now, false)) return std::nullopt;
  for (size_t w = 0; w < workers_.size() && run.worker < 0; ++w) {
    const Worker& candidate = *workers_[w];
    const int g = candidate.config.group;
    if (candidate.state != WorkerState::kIdle || candidate.retire ||
        !ServesModel(static_cast<int>(w), slot)) {
      continue;
    }
    if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0) continue;
    run.worker = static_cast<int>(w);
  }
  if (run.worker < 0) return std::nullopt;
  const int g = workers_[static_cast<size_t>(run.worker)]->config.group;
  run.plan.alone = QueuedFor(run.worker) == 0 && PartnersIdle(run.worker);
  if (run.plan.alone && ChooseWide(slot, g, /*alone=*/true, elements, request.rows)) {
    run.plan.wide = true;
    run.plan.session = slot.spec.wide[static_cast<size_t>(g)];
    run.plan.threads = groups_[static_cast<size_t>(g)].cpu_count;
    run.claimed = groups_[static_cast<size_t>(g)].config.workers;
  } else {
    run.plan.session = slot.spec.narrow[static_cast<size_t>(run.worker)];
    run.plan.threads =
        static_cast<int>(workers_[static_cast<size_t>(run.worker)]->config.cpus.size());
    run.claimed = {run.worker};
  }
  for (int w : run.claimed) workers_[static_cast<size_t>(w)]->state = WorkerState::kClaimed;
  return absl::OkStatus();
}

std::vector<int> Scheduler::InlinePinCpus(Slot& slot, const InlineRun& run, int64_t elements,
                                          int64_t rows) const {
  // On the claimed cores if the run is long enough to be worth the move. The figures are per
  // measured-size request (else per row): scaled to this request.
  const int64_t measured_elements = slot.spec.measured_elements;
  const double scale = measured_elements > 0 && elements > 0
                           ? static_cast<double>(elements) / static_cast<double>(measured_elements)
                           : static_cast<double>(std::max<int64_t>(rows, 1));
  const double expected_ms =
      scale *
      slot.modes.ExpectedMs(Modes::SizeOf(measured_elements, elements, rows), run.plan.wide);
  std::vector<int> pin_to;
  if (options_.pin_workers && !run.claimed.empty() &&
      (expected_ms <= 0 || expected_ms >= options_.pin_inline_over_ms)) {
    for (int w : run.claimed) {
      const auto& cpus = workers_[static_cast<size_t>(w)]->config.cpus;
      pin_to.insert(pin_to.end(), cpus.begin(), cpus.end());
    }
  }
  return pin_to;
}

void Scheduler::EndInline(Slot& slot, const InlineRun& run, const Request& request,
                          int64_t elements, int64_t compute_us) {
  Occupy(-run.plan.threads);
  RecordRun(slot, run.plan, compute_us, request.rows, elements, request,
            workers_[static_cast<size_t>(run.worker)]->config.group);
  for (int w : run.claimed) {
    Worker& c = *workers_[static_cast<size_t>(w)];
    c.state = WorkerState::kIdle;
    c.busy_us += w == run.worker ? compute_us : 0;
    // The hot path of a lone Infer(): no wake-up (a futex call and a context switch on the
    // caller's core) for a worker that slept through the claim waiting for work that never came.
    // Work that came meanwhile did not wake it (Enqueue wakes idle workers only): wake it for that.
    if (c.waits_for_idle || !QueuesEmptyFor(w) || !leases_.empty() || stopping_ || c.retire) {
      c.cv.notify_all();
    }
  }
  if (!run.claimed.empty()) ++workers_[static_cast<size_t>(run.worker)]->runs;
  slot.running -= request.rows;
  --inline_runs_;
  GrantLeases();
  state_cv_.notify_all();
}

std::optional<absl::StatusOr<InferResult>> Scheduler::TryRunInline(int model, Request& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot || slot->removing || stopping_ || pausing_ || !started_) return std::nullopt;
  request.model = model;
  request.enqueued = clock_->Now();
  const int64_t elements = ElementCount(request.inputs);
  InlineRun run;
  std::optional<absl::Status> claimed = ClaimInline(*slot, request, elements, run);
  if (!claimed) return std::nullopt;
  if (!claimed->ok()) return absl::StatusOr<InferResult>(*claimed);
  ++inline_runs_;
  ++slot->requests;
  slot->running += request.rows;
  Occupy(run.plan.threads);
  const std::vector<int> pin_to = InlinePinCpus(*slot, run, elements, request.rows);
  lock.unlock();

  std::vector<int> previous;
  if (!pin_to.empty()) {
    previous = CurrentThreadCpus();
    if (!PinCurrentThread(pin_to).ok()) previous.clear();
  }
  const TimePoint start = clock_->Now();
  std::vector<absl::StatusOr<InferResult>> answers =
      Execute(-1, *slot, {&request}, run.plan, start);
  if (!previous.empty()) (void)PinCurrentThread(previous);
  const int64_t compute_us =
      answers[0].ok() ? answers[0]->compute_us : MicrosBetween(start, clock_->Now());

  lock.lock();
  EndInline(*slot, run, request, elements, compute_us);
  return std::move(answers[0]);
}

}  // namespace loom::sched
