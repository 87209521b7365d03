// Scheduler: core leases. An idle worker's cores are lent to host work (AcquireLease: any one
// worker), to an admin that needs exactly some workers (AcquireWorkers: cost measurement, a
// re-plan), or to a partner's wide run (JoinPending). Every lease is counted in busy_threads().
// See scheduler.h.
#include <algorithm>

#include "loom/status.h"
#include "sched/scheduler.h"

namespace loom::sched {

void Scheduler::Occupy(int threads) {
  busy_threads_ += threads;
  busy_now_.store(busy_threads_, std::memory_order_relaxed);
  int seen = max_busy_threads_.load(std::memory_order_relaxed);
  while (busy_threads_ > seen && !max_busy_threads_.compare_exchange_weak(seen, busy_threads_)) {
  }
}

bool Scheduler::JoinPending(int w) {
  Worker& me = *workers_[static_cast<size_t>(w)];
  const int g = me.config.group;
  const int assembling = g >= 0 ? groups_[static_cast<size_t>(g)].assembling : -1;
  if (assembling >= 0 && assembling != w) {
    me.state = WorkerState::kLent;
    me.lent_to = assembling;
    me.lent_since = clock_->Now();
    workers_[static_cast<size_t>(assembling)]->cv.notify_all();
    return true;
  }
  for (LeaseRequest* lease : leases_) {
    if (lease->done || lease->wanted.empty()) continue;
    if (std::find(lease->wanted.begin(), lease->wanted.end(), w) == lease->wanted.end()) continue;
    if (std::find(lease->granted.begin(), lease->granted.end(), w) != lease->granted.end()) {
      continue;
    }
    me.state = WorkerState::kLent;
    me.lent_to = kLentToLease;
    lease->granted.push_back(w);
    if (lease->granted.size() == lease->wanted.size()) {
      lease->done = true;
      int threads = 0;
      for (int x : lease->wanted) {
        threads += static_cast<int>(workers_[static_cast<size_t>(x)]->config.cpus.size());
      }
      Occupy(threads);
      state_cv_.notify_all();
    }
    if (assembling >= 0) workers_[static_cast<size_t>(assembling)]->cv.notify_all();
    return true;
  }
  return false;
}

void Scheduler::GrantLease(int w, LeaseRequest& lease) {
  Worker& worker = *workers_[static_cast<size_t>(w)];
  worker.state = WorkerState::kLent;
  worker.lent_to = kLentToLease;
  Occupy(static_cast<int>(worker.config.cpus.size()));
  lease.granted = {w};
  lease.done = true;
  state_cv_.notify_all();
}

Scheduler::LeaseRequest* Scheduler::OldestAnyLease() const {
  for (LeaseRequest* l : leases_) {
    if (!l->done && l->wanted.empty()) return l;
  }
  return nullptr;
}

void Scheduler::GrantLeases() {
  for (LeaseRequest* lease : leases_) {
    if (lease->done || !lease->wanted.empty()) continue;
    int chosen = -1;
    for (size_t w = 0; w < workers_.size() && chosen < 0; ++w) {
      const Worker& worker = *workers_[w];
      const int g = worker.config.group;
      if (worker.state != WorkerState::kIdle || worker.retire) continue;
      if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0) continue;
      chosen = static_cast<int>(w);
    }
    if (chosen < 0) return;
    GrantLease(chosen, *lease);
  }
}

absl::StatusOr<int> Scheduler::AcquireLease(TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (workers_.empty()) {
    return absl::UnavailableError(
        "the engine has no workers (no model is loaded): no cores to lease");
  }
  LeaseRequest lease;
  lease.since = clock_->Now();
  leases_.push_back(&lease);
  GrantLeases();
  while (!lease.done) {
    if (stopping_ || clock_->Now() >= deadline) {
      std::erase(leases_, &lease);
      return stopping_ ? absl::UnavailableError("engine is shut down: no cores to lease")
                       : absl::DeadlineExceededError("no core could be leased before the deadline");
    }
    // Wake an idle worker to consider it (it serves leases and batches in arrival order).
    for (auto& w : workers_) {
      if (w->state == WorkerState::kIdle) w->cv.notify_one();
    }
    clock_->WaitUntil(state_cv_, lock, deadline);
  }
  std::erase(leases_, &lease);
  return lease.granted[0];
}

absl::Status Scheduler::AcquireWorkers(const std::vector<int>& wanted) {
  if (wanted.empty()) return absl::OkStatus();  // nothing to wait for (an engine with no workers)
  std::unique_lock<std::mutex> lock(mu_);
  for (int w : wanted) {
    if (w < 0 || w >= static_cast<int>(workers_.size())) {
      return absl::InvalidArgumentError("no such worker");
    }
  }
  if (!started_) {  // nothing runs yet: the cores are free
    int threads = 0;
    for (int w : wanted) {
      Worker& worker = *workers_[static_cast<size_t>(w)];
      worker.state = WorkerState::kLent;
      worker.lent_to = kLentToLease;
      threads += static_cast<int>(worker.config.cpus.size());
    }
    Occupy(threads);
    return absl::OkStatus();
  }
  LeaseRequest lease;
  lease.since = clock_->Now();
  lease.wanted = wanted;
  leases_.push_back(&lease);
  for (int w : wanted) workers_[static_cast<size_t>(w)]->cv.notify_all();
  while (!lease.done) {
    if (stopping_) {
      for (int w : lease.granted) {
        workers_[static_cast<size_t>(w)]->state = WorkerState::kIdle;
        workers_[static_cast<size_t>(w)]->cv.notify_all();
      }
      std::erase(leases_, &lease);
      return absl::UnavailableError("engine is shut down: no cores to lease");
    }
    clock_->WaitUntil(state_cv_, lock, TimePoint::max());
  }
  std::erase(leases_, &lease);
  return absl::OkStatus();
}

void Scheduler::ReleaseLease(int worker) { ReleaseWorkers({worker}); }

void Scheduler::ReleaseWorkers(const std::vector<int>& released) {
  std::lock_guard<std::mutex> lock(mu_);
  int threads = 0;
  for (int w : released) {
    Worker& worker = *workers_[static_cast<size_t>(w)];
    LOOM_CHECK(worker.state == WorkerState::kLent && worker.lent_to == kLentToLease);
    worker.state = WorkerState::kIdle;
    worker.lent_to = -1;
    threads += static_cast<int>(worker.config.cpus.size());
    worker.cv.notify_all();
  }
  Occupy(-threads);
  GrantLeases();
  state_cv_.notify_all();
}

std::vector<int> Scheduler::WorkerCpus(int worker) const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_.at(static_cast<size_t>(worker))->config.cpus;
}

}  // namespace loom::sched
