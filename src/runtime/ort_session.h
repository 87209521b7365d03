// The ONNX Runtime (CPU execution provider) backend of Session.
#ifndef LOOM_RUNTIME_ORT_SESSION_H_
#define LOOM_RUNTIME_ORT_SESSION_H_

#include <memory>
#include <string>

#include "loom/session.h"

namespace loom {

// Loads `info.path` into an ONNX Runtime session configured from `options` (threads, spinning,
// affinities, optimisation level, global pool). `info` was read by ReadModelInfo.
absl::StatusOr<std::unique_ptr<Session>> CreateOrtSession(ModelInfo info,
                                                          const SessionOptions& options);

// The ONNX Runtime "session.intra_op_thread_affinities" value for `affinities` (OS CPU ids,
// 0-based): ONNX Runtime numbers logical processors from 1, ';' between threads, ',' within.
std::string OrtAffinityString(const std::vector<std::vector<int>>& affinities);

}  // namespace loom

#endif  // LOOM_RUNTIME_ORT_SESSION_H_
