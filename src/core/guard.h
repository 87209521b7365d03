// Turning exceptions into statuses at a thread's or a library's edge, so none crosses a thread.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace loom {

// Runs `fn` (returning absl::Status) and returns its status; anything it throws becomes an error
// whose message starts with `context`: out of memory as kResourceExhausted, the rest kInternal.
template <typename Fn>
absl::Status CatchAll(absl::string_view context, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(context, "out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(context, "an unknown exception"));
  }
}

}  // namespace loom
