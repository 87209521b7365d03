#include "sched/batcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace loom::sched {

std::string BatchKey(const NamedTensors& inputs) {
  std::string key;
  for (const NamedTensor& in : inputs) {
    absl::StrAppend(&key, DTypeName(in.tensor.dtype()), "[");
    for (size_t d = 1; d < in.tensor.shape().size(); ++d) {
      absl::StrAppend(&key, d > 1 ? "," : "", in.tensor.shape()[d]);
    }
    absl::StrAppend(&key, "]|");
  }
  return key;
}

bool ShouldRunNow(const BatchingConfig& config, int64_t rows, bool more_rows_would_not_fit,
                  TimePoint oldest, TimePoint now, bool flush) {
  if (flush || config.max_batch_size <= 1) return true;
  if (rows >= config.max_batch_size || more_rows_would_not_fit) return true;
  const auto& preferred = config.preferred_batch_sizes;
  if (std::find(preferred.begin(), preferred.end(), rows) != preferred.end()) return true;
  return now >= SaturatingAdd(oldest, config.max_queue_delay);
}

void RequestQueue::Push(std::unique_ptr<Request> request) {
  earliest_deadline_ = std::min(earliest_deadline_, request->deadline);
  if (request->cancelled) ++withdrawable_;
  ++size_;
  for (Group& g : groups_) {
    if (g.key == request->batch_key) {
      g.requests.push_back(std::move(request));
      return;
    }
  }
  groups_.push_back(Group{request->batch_key, {}});
  groups_.back().requests.push_back(std::move(request));
}

void RequestQueue::TakeExpired(TimePoint now, std::vector<std::unique_ptr<Request>>& expired) {
  if (size_ == 0 || (now < earliest_deadline_ && withdrawable_ == 0)) return;
  TimePoint earliest = TimePoint::max();
  for (Group& g : groups_) {
    auto keep = g.requests.begin();
    for (auto it = g.requests.begin(); it != g.requests.end(); ++it) {
      if ((*it)->deadline <= now || (*it)->Withdrawn()) {
        if ((*it)->cancelled) --withdrawable_;
        expired.push_back(std::move(*it));
        --size_;
      } else {
        earliest = std::min(earliest, (*it)->deadline);
        if (keep != it) *keep = std::move(*it);
        ++keep;
      }
    }
    g.requests.erase(keep, g.requests.end());
  }
  std::erase_if(groups_, [](const Group& g) { return g.requests.empty(); });
  earliest_deadline_ = earliest;
}

void RequestQueue::TakeAll(std::vector<std::unique_ptr<Request>>& out) {
  for (Group& g : groups_) {
    for (auto& r : g.requests) out.push_back(std::move(r));
  }
  groups_.clear();
  size_ = 0;
  withdrawable_ = 0;
  earliest_deadline_ = TimePoint::max();
}

void RequestQueue::Take(const Pick& pick, std::vector<std::unique_ptr<Request>>& batch) {
  Group& g = groups_[pick.group];
  for (size_t i = 0; i < pick.count; ++i) {
    if (g.requests.front()->cancelled) --withdrawable_;
    batch.push_back(std::move(g.requests.front()));
    g.requests.pop_front();
  }
  size_ -= pick.count;
  if (g.requests.empty()) groups_.erase(groups_.begin() + static_cast<std::ptrdiff_t>(pick.group));
}

RequestQueue::Pick GatherBatch(const RequestQueue& queue, const BatchingConfig& config,
                               TimePoint now, bool flush) {
  RequestQueue::Pick best;
  TimePoint wake = queue.earliest_deadline_;
  for (size_t g = 0; g < queue.groups_.size(); ++g) {
    const auto& requests = queue.groups_[g].requests;
    if (requests.empty()) continue;
    // Rows from the front, oldest first, within max_batch_size (every request fits alone: the
    // engine refuses larger ones at Submit).
    int64_t rows = 0;
    size_t count = 0;
    const int64_t max_rows = std::max(config.max_batch_size, 1);
    while (count < requests.size() && rows + requests[count]->rows <= max_rows) {
      rows += requests[count]->rows;
      ++count;
    }
    if (count == 0) count = 1, rows = requests.front()->rows;  // an oversized request runs alone
    const bool would_not_fit = count < requests.size();
    const TimePoint oldest = requests.front()->enqueued;
    if (!ShouldRunNow(config, rows, would_not_fit, oldest, now, flush)) {
      wake = std::min(wake, SaturatingAdd(oldest, config.max_queue_delay));
      continue;
    }
    if (!best.ready || oldest < best.oldest) {
      best.ready = true;
      best.group = g;
      best.count = count;
      best.rows = rows;
      best.oldest = oldest;
    }
  }
  best.wake = best.ready ? TimePoint::max() : wake;
  return best;
}

}  // namespace loom::sched
