#include "sched/batcher.h"

#include <algorithm>
#include <cstring>

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

bool ShouldRunNow(const BatchingConfig& config, int rows, bool more_rows_would_not_fit,
                  std::chrono::steady_clock::time_point oldest,
                  std::chrono::steady_clock::time_point now, bool flush) {
  if (flush || config.max_batch_size <= 1) return true;
  if (rows >= config.max_batch_size || more_rows_would_not_fit) return true;
  const auto& preferred = config.preferred_batch_sizes;
  if (std::find(preferred.begin(), preferred.end(), rows) != preferred.end()) return true;
  return now >= oldest + config.max_queue_delay;
}

NamedTensors ConcatRows(const std::vector<const NamedTensors*>& parts) {
  LOOM_CHECK(!parts.empty());
  if (parts.size() == 1) return *parts[0];
  const NamedTensors& first = *parts[0];
  NamedTensors batch;
  batch.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    int64_t rows = 0;
    for (const NamedTensors* p : parts) rows += (*p)[i].tensor.dim(0);
    Shape shape = first[i].tensor.shape();
    shape[0] = rows;
    Tensor t = Tensor::Allocate(first[i].tensor.dtype(), shape);
    auto* out = static_cast<std::byte*>(t.data());
    for (const NamedTensors* p : parts) {
      const Tensor& src = (*p)[i].tensor;
      LOOM_CHECK(src.dtype() == t.dtype());
      std::memcpy(out, src.data(), src.byte_size());
      out += src.byte_size();
    }
    batch.push_back({first[i].name, std::move(t)});
  }
  return batch;
}

absl::StatusOr<std::vector<NamedTensors>> SplitRows(const std::string& model,
                                                    const NamedTensors& outputs,
                                                    const std::vector<int64_t>& rows) {
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  std::vector<NamedTensors> parts(rows.size());
  if (rows.size() == 1) {
    parts[0] = outputs;
    return parts;
  }
  for (const NamedTensor& out : outputs) {
    if (out.tensor.rank() < 1 || out.tensor.dim(0) != total) {
      return absl::InternalError(absl::StrCat(
          "model '", model, "' output '", out.name, "' is ", out.tensor.Describe(),
          " for a batch of ", total, " rows: its dim 0 does not follow the batch, so the batch "
          "cannot be split (set max_batch_size: 1 for this model)"));
    }
    int64_t begin = 0;
    for (size_t p = 0; p < rows.size(); ++p) {
      parts[p].push_back({out.name, out.tensor.SliceRows(begin, begin + rows[p])});
      begin += rows[p];
    }
  }
  return parts;
}

}  // namespace loom::sched
