#include "core/tensor_rows.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace loom {

absl::StatusOr<NamedTensors> ConcatRows(const std::vector<const NamedTensors*>& parts,
                                        const TensorLimits& limits) {
  if (parts.empty()) return absl::InvalidArgumentError("nothing to concatenate");
  const NamedTensors& first = *parts[0];
  for (size_t p = 1; p < parts.size(); ++p) {
    if (parts[p]->size() != first.size()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot join rows: part ", p, " has ",
                                                     parts[p]->size(), " tensors, part 0 has ",
                                                     first.size()));
    }
  }
  for (size_t i = 0; i < first.size(); ++i) {
    const Tensor& head = first[i].tensor;
    if (head.rank() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("cannot join rows of '", first[i].name,
                                                     "': it is a scalar (", head.Describe(), ")"));
    }
    for (size_t p = 1; p < parts.size(); ++p) {
      const NamedTensor& t = (*parts[p])[i];
      bool same = t.name == first[i].name && t.tensor.dtype() == head.dtype() &&
                  t.tensor.rank() == head.rank();
      for (int64_t d = 1; same && d < head.rank(); ++d) same = t.tensor.dim(d) == head.dim(d);
      if (!same) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot join rows: part ", p, " tensor '", t.name, "' is ", t.tensor.Describe(),
            ", part 0 tensor '", first[i].name, "' is ", head.Describe(),
            " (names, dtypes and every dim after the first must agree)"));
      }
    }
  }
  if (parts.size() == 1) return first;

  NamedTensors batch;
  batch.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    int64_t rows = 0;
    for (const NamedTensors* p : parts) {
      if (__builtin_add_overflow(rows, (*p)[i].tensor.dim(0), &rows)) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot join rows of '", first[i].name, "': the row count overflows"));
      }
    }
    Shape shape = first[i].tensor.shape();
    shape[0] = rows;
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::TryAllocate(first[i].tensor.dtype(), shape, limits));
    auto* out = static_cast<std::byte*>(t.data());
    for (const NamedTensors* p : parts) {
      const Tensor& src = (*p)[i].tensor;
      if (src.byte_size() > 0) std::memcpy(out, src.data(), src.byte_size());
      out += src.byte_size();
    }
    batch.push_back({first[i].name, std::move(t)});
  }
  return batch;
}

absl::StatusOr<std::vector<NamedTensors>> SplitRows(const std::string& model,
                                                    const NamedTensors& outputs,
                                                    const std::vector<int64_t>& rows) {
  std::vector<NamedTensors> parts(rows.size());
  if (rows.size() == 1) {
    parts[0] = outputs;
    return parts;
  }
  int64_t total = 0;
  for (int64_t r : rows) {
    if (r < 0 || __builtin_add_overflow(total, r, &total)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", model, "': bad row counts to split"));
    }
  }
  for (const NamedTensor& out : outputs) {
    if (out.tensor.rank() < 1 || out.tensor.dim(0) != total) {
      return absl::InternalError(
          absl::StrCat("model '", model, "' output '", out.name, "' is ", out.tensor.Describe(),
                       " for a batch of ", total,
                       " rows: its dim 0 does not follow the batch, so the batch "
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

}  // namespace loom
