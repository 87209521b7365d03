// Errors in Loom: absl::Status / absl::StatusOr<T> with canonical codes (they map one to one onto
// gRPC and HTTP status). Messages name the culprit: the file, the model, the input, and what was
// expected versus what was got. A broken internal invariant is a LOOM_CHECK (abort), not a status.
#ifndef LOOM_STATUS_H_
#define LOOM_STATUS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_STATUS_CONCAT_INNER_(a, b) a##b
#define LOOM_STATUS_CONCAT_(a, b) LOOM_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define LOOM_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status loom_status_ = (expr);        \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

// `lhs = value of rexpr` if rexpr (a StatusOr) is OK; otherwise returns its status.
#define LOOM_ASSIGN_OR_RETURN(lhs, rexpr) \
  LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_STATUS_CONCAT_(loom_statusor_, __LINE__), lhs, rexpr)
#define LOOM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)  \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

// Aborts with the location when an internal invariant does not hold (never for user input).
#define LOOM_CHECK(cond)                                                                         \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "%s:%d: internal invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)

#endif  // LOOM_STATUS_H_
