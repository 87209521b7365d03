// Every worker of an engine held by the test (leased to the calling thread, Engine::LeaseCores),
// so that what is submitted meanwhile waits in the queues, however fast the machine: a state
// reached by construction instead of by a backlog that might drain first.
#ifndef LOOM_TESTS_HELD_WORKERS_H_
#define LOOM_TESTS_HELD_WORKERS_H_

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "loom/engine.h"

namespace loom::testing {

class HeldWorkers {
 public:
  // Leases as many workers as the engine has; each lease waits (up to a minute) for its worker to
  // finish what it runs. held() says whether every one was leased.
  explicit HeldWorkers(Engine& engine) : wanted_(engine.Workers().size()) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (leases_.size() < wanted_) {
      auto lease = engine.LeaseCores(until);
      if (!lease.ok()) {
        ADD_FAILURE() << "could not hold every worker: " << lease.status();
        return;
      }
      leases_.push_back(std::move(*lease));
    }
  }
  ~HeldWorkers() { Release(); }
  HeldWorkers(const HeldWorkers&) = delete;
  HeldWorkers& operator=(const HeldWorkers&) = delete;

  bool held() const { return wanted_ > 0 && leases_.size() == wanted_; }
  // The workers go back to the queues; last leased first, so that the thread's affinity comes
  // back as it was.
  void Release() {
    while (!leases_.empty()) {
      leases_.back().Release();
      leases_.pop_back();
    }
  }

 private:
  size_t wanted_;
  std::vector<CoreLease> leases_;
};

}  // namespace loom::testing

#endif  // LOOM_TESTS_HELD_WORKERS_H_
