// Loom's log: one spdlog logger named "loom" writing to stderr (standard output belongs to the
// commands' results). Level from $LOOM_LOG_LEVEL (trace, debug, info, warn, error, off; default
// info). Used for events a person running Loom in production wants to see: plan changes, models
// loaded and unloaded, a server starting and draining.
#ifndef LOOM_CORE_LOG_H_
#define LOOM_CORE_LOG_H_

#include <spdlog/spdlog.h>

namespace loom {

spdlog::logger& Log();

}  // namespace loom

#endif  // LOOM_CORE_LOG_H_
