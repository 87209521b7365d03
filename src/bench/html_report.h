// `--html FILE`: a benchmark report as one self-contained HTML page — the machine, the command,
// the verdict, charts, the table and the plan — that opens offline: Chart.js (Debian's
// libjs-chart.js) is inlined at build time and the data is inlined as JSON, nothing is fetched.
//
// Charts are described here as JSON (what to draw, axes with units, a caption that says what the
// data is) and drawn by a small script in the page. The page records whether every chart drew in
// #render-status (data-charts, data-rendered, data-nonempty, data-errors) so that a headless
// browser can check it.
#ifndef LOOM_BENCH_HTML_REPORT_H_
#define LOOM_BENCH_HTML_REPORT_H_

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/clock.h"

namespace loom::bench {

struct HtmlPage {
  std::string title;
  std::string command;  // how it was produced, as typed
  std::string verdict;
  std::string table;  // preformatted
  std::string plan;   // preformatted
  std::vector<nlohmann::json> charts;
};

// A page with its header filled: the command as typed (CommandLine()), and the rest as given.
HtmlPage NewPage(std::string title, std::string verdict, std::string table, std::string plan);

std::string RenderHtml(const HtmlPage& page);
// Renders `page` into `path` (an error names the file).
absl::Status WriteHtml(const std::string& path, const HtmlPage& page);

// The CPU model, usable cores, memory, kernel and the versions of Loom and its backends.
std::string DescribeMachine();

// The command line of this process, as typed (from /proc/self/cmdline).
std::string CommandLine();

// Bars, one per label: the median, each repetition as a dot, and optionally the ideal as a line.
nlohmann::json BarChart(const std::string& title, const std::string& caption,
                        const std::string& y_title, const std::vector<std::string>& labels,
                        const std::vector<double>& medians,
                        const std::vector<std::vector<double>>& repetitions, double ideal = 0,
                        const std::string& ideal_label = "");

// Stacked bars: one bar per label, one segment per part ({part name, value per label}).
nlohmann::json StackedBarChart(
    const std::string& title, const std::string& caption, const std::string& y_title,
    const std::vector<std::string>& labels,
    const std::vector<std::pair<std::string, std::vector<double>>>& parts);

// The empirical distribution of each named sample set (x: the value; y: percent of samples at or
// below it), from 200 quantiles. `log_x`: a logarithmic value axis.
nlohmann::json CdfChart(const std::string& title, const std::string& caption,
                        const std::string& x_title,
                        const std::vector<std::pair<std::string, std::vector<double>>>& samples,
                        bool log_x);

// Lines over a numeric x: {series name, [(x, y)...]}; `stepped` for counts over time; a series
// whose name starts with "--" is drawn dashed (the name without the dashes).
nlohmann::json LineChart(
    const std::string& title, const std::string& caption, const std::string& x_title,
    const std::string& y_title,
    const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series,
    bool stepped = false, bool log_x = false, bool log_y = false);

// A timeline: one lane per thread, a bar per span, coloured by what ran.
struct Span {
  int lane = 0;
  std::string name;
  double start_ms = 0, end_ms = 0;
};
struct Timeline {
  std::vector<std::string> lanes;
  std::vector<Span> spans;  // times from the timeline's start
};
// The complete ("X") spans of a Chrome trace-event JSON: lanes from its thread names, times from
// the first span. Queue waits (async spans) are left out: they are not work on a thread.
Timeline TimelineFromTrace(const std::string& trace_json);
// Spans measured in process: lane i is `lanes[i]`; times are taken from `origin`.
struct TimedSpan {
  int lane = 0;
  std::string name;
  TimePoint start, end;
};
Timeline TimelineFromSpans(std::vector<std::string> lanes, const std::vector<TimedSpan>& spans,
                           TimePoint origin);

// A Gantt strip of `timeline` (at most `max_spans` spans: a leading window is shown, and the
// caption says so).
nlohmann::json GanttChart(const std::string& title, const std::string& caption,
                          const Timeline& timeline, size_t max_spans = 6000);
// Spans running at once over time, per timeline, with the machine's cores as a dashed line.
nlohmann::json ConcurrencyChart(const std::string& title, const std::string& caption,
                                const std::vector<std::pair<std::string, Timeline>>& timelines,
                                int cores);

}  // namespace loom::bench

#endif  // LOOM_BENCH_HTML_REPORT_H_
