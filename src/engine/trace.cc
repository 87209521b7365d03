#include "engine/trace.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"

namespace loom {
namespace {

double Micros(TimePoint t, TimePoint origin) {
  return std::chrono::duration<double, std::micro>(t - origin).count();
}

}  // namespace

std::string ChromeTraceJson(const std::vector<sched::TraceSpan>& spans, TimePoint origin,
                            const EnginePlan& plan) {
  nlohmann::json events = nlohmann::json::array();
  events.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "loom engine"}}}});
  for (size_t w = 0; w < plan.workers.size(); ++w) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 1},
                      {"tid", w},
                      {"args",
                       {{"name", absl::StrCat("worker ", w, " (cpus ",
                                              FormatCpuList(plan.workers[w].cpus), ")")}}}});
  }
  events.push_back({{"name", "thread_name"},
                    {"ph", "M"},
                    {"pid", 1},
                    {"tid", 999},
                    {"args", {{"name", "callers (inline runs)"}}}});
  int64_t id = 0;
  for (const sched::TraceSpan& s : spans) {
    const int tid = s.worker >= 0 ? s.worker : 999;
    switch (s.kind) {
      case sched::TraceSpan::kRun:
        events.push_back({{"name", s.model},
                          {"cat", "run"},
                          {"ph", "X"},
                          {"pid", 1},
                          {"tid", tid},
                          {"ts", Micros(s.start, origin)},
                          {"dur", Micros(s.end, s.start)},
                          {"args", {{"rows", s.rows}, {"threads", s.threads}}}});
        break;
      case sched::TraceSpan::kQueue:
        ++id;
        events.push_back({{"name", absl::StrCat("queue ", s.model)},
                          {"cat", "queue"},
                          {"ph", "b"},
                          {"pid", 1},
                          {"id", id},
                          {"ts", Micros(s.start, origin)},
                          {"args", {{"rows", s.rows}}}});
        events.push_back({{"name", absl::StrCat("queue ", s.model)},
                          {"cat", "queue"},
                          {"ph", "e"},
                          {"pid", 1},
                          {"id", id},
                          {"ts", Micros(s.end, origin)}});
        break;
    }
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump(
      -1, ' ', false,
      nlohmann::json::error_handler_t::replace);  // model names: never throw on bad UTF-8
}

}  // namespace loom
