#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>

namespace loom {

spdlog::logger& Log() {
  static spdlog::logger* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto* l = new spdlog::logger("loom", sink);  // never destroyed: threads may log at exit
    l->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [loom] [%l] %v");
    const char* level = std::getenv("LOOM_LOG_LEVEL");
    l->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
    return l;
  }();
  return *logger;
}

}  // namespace loom
