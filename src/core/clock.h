// Clock: where the scheduler reads the time and waits for it, so that tests can drive time by
// hand (FakeClock) and decide outcomes deterministically instead of by sleeping.
//
// Time points are std::chrono::steady_clock's, the type of the engine's public deadlines; a
// FakeClock just chooses which point is "now".
#ifndef LOOM_CORE_CLOCK_H_
#define LOOM_CORE_CLOCK_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace loom {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

class SchedClock {
 public:
  virtual ~SchedClock() = default;
  virtual TimePoint Now() const = 0;
  // Waits on `cv` (with `lock` held on entry and exit) until notified or until `deadline` on this
  // clock has passed. May wake spuriously: callers re-check their condition.
  virtual void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                         TimePoint deadline) = 0;
  // Tells the clock which (mutex, condition) pairs its waiters use, so that a clock that jumps
  // (FakeClock::Advance) can wake them. The pair must outlive the clock's use.
  virtual void Register(std::mutex*, std::condition_variable*) {}
  virtual void Unregister(std::mutex*, std::condition_variable*) {}
};

// The real steady clock.
class SystemClock final : public SchedClock {
 public:
  TimePoint Now() const override { return Clock::now(); }
  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 TimePoint deadline) override {
    if (deadline == TimePoint::max()) {
      cv.wait(lock);
    } else {
      cv.wait_until(lock, deadline);
    }
  }
  static SystemClock* Get() {
    static SystemClock* clock = new SystemClock();  // never destroyed: threads may outlive statics
    return clock;
  }
};

// A clock that moves only when told to. Waiters sleep until notified; Advance moves "now" and
// then wakes every registered waiter (taking its mutex first, so that none misses the change).
// It also counts the times a waiter went to sleep, so that a test can wait until a thread has
// looked at the state and decided to sleep (AwaitSleeps) before asserting what it did not do.
class FakeClock final : public SchedClock {
 public:
  explicit FakeClock(TimePoint start = TimePoint() + std::chrono::hours(1)) : now_(start) {}

  TimePoint Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                 TimePoint deadline) override {
    {
      std::lock_guard<std::mutex> own(mu_);
      if (now_ >= deadline) return;
      ++sleeps_;
      sleeps_cv_.notify_all();
    }
    cv.wait(lock);
  }
  // How many times a waiter has gone to sleep on this clock so far. A sleep is counted while the
  // waiter still holds its mutex, after it looked at the state it waits on.
  int64_t sleeps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sleeps_;
  }
  // Blocks until sleeps() reaches `n`.
  void AwaitSleeps(int64_t n) const {
    std::unique_lock<std::mutex> lock(mu_);
    sleeps_cv_.wait(lock, [&] { return sleeps_ >= n; });
  }
  void Register(std::mutex* mu, std::condition_variable* cv) override {
    std::lock_guard<std::mutex> lock(mu_);
    waiters_.emplace_back(mu, cv);
  }
  void Unregister(std::mutex* mu, std::condition_variable* cv) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase(waiters_, std::make_pair(mu, cv));
  }
  void Advance(std::chrono::nanoseconds by) {
    std::vector<std::pair<std::mutex*, std::condition_variable*>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now_ += by;
      waiters = waiters_;
    }
    for (auto& [mu, cv] : waiters) {
      { std::lock_guard<std::mutex> lock(*mu); }
      cv->notify_all();
    }
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable sleeps_cv_;
  TimePoint now_;
  int64_t sleeps_ = 0;
  std::vector<std::pair<std::mutex*, std::condition_variable*>> waiters_;
};

// Whole microseconds from `a` to `b`; 0 if `b` is not after `a`.
inline int64_t MicrosBetween(TimePoint a, TimePoint b) {
  return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

// a + b, saturating at TimePoint::max() (deadlines far in the future must not wrap).
inline TimePoint SaturatingAdd(TimePoint a, std::chrono::microseconds b) {
  if (b.count() <= 0) return a;
  const auto room = std::chrono::duration_cast<std::chrono::microseconds>(TimePoint::max() - a);
  return b >= room ? TimePoint::max() : a + b;
}

}  // namespace loom

#endif  // LOOM_CORE_CLOCK_H_
