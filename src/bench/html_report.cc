#include "bench/html_report.h"

#include <sys/utsname.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "loom/session.h"

namespace loom::bench {

// Chart.js, inlined at build time from Debian's libjs-chart.js (bench/chartjs_embed.cc, generated).
extern const char* const kChartJsParts[];
extern const size_t kChartJsPartCount;

namespace {

std::string EscapeHtml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// JSON for inside a <script> element: <, > and & are written as \u escapes (still the same JSON),
// so no name from outside can close the element or open a comment in it; bytes that are not
// UTF-8 are replaced rather than thrown on.
std::string ScriptJson(const nlohmann::json& j) {
  const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '<':
        out += "\\u003c";
        break;
      case '>':
        out += "\\u003e";
        break;
      case '&':
        out += "\\u0026";
        break;
      default:
        out += c;
    }
  }
  return out;
}

constexpr const char* kStyle = R"CSS(
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
pre { background: #f6f8fa; padding: 10px 12px; overflow-x: auto; font-size: 12.5px; line-height: 1.35; }
.verdict { font-weight: 600; background: #eef6ee; padding: 8px 12px; border-left: 4px solid #2ca02c; }
.caption { color: #555; margin: 4px 0 8px; }
.chart { position: relative; width: 100%; }
.meta { color: #666; }
#render-status { color: #999; font-size: 12px; margin-top: 24px; }
)CSS";

// Draws REPORT.charts with Chart.js; records in #render-status what drew and any script error.
constexpr const char* kRenderer = R"JS(
(function () {
  var status = document.getElementById('render-status');
  var errors = [];
  function fail(message) { errors.push(String(message)); status.setAttribute('data-errors', errors.join(' | ')); }
  window.addEventListener('error', function (e) { fail(e.message); });
  var palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  var colors = {};
  function color(name) {
    if (!(name in colors)) colors[name] = palette[Object.keys(colors).length % palette.length];
    return colors[name];
  }
  function axis(title, extra) {
    var a = { title: { display: true, text: title } };
    for (var k in (extra || {})) a[k] = extra[k];
    return a;
  }
  function xy(points) { return points.map(function (p) { return { x: p[0], y: p[1] }; }); }
  var builders = {
    bars: function (c) {
      var sets = [{ type: 'bar', label: c.value_label, data: c.values, backgroundColor: '#9ecae1', order: 3 }];
      if (c.repetitions) {
        var dots = [];
        c.repetitions.forEach(function (vs, i) { vs.forEach(function (v) { dots.push({ x: c.labels[i], y: v }); }); });
        sets.push({ type: 'scatter', label: 'each repetition', data: dots, backgroundColor: '#08519c', pointRadius: 3, order: 1 });
      }
      if (c.ideal > 0) {
        sets.push({ type: 'line', label: c.ideal_label, data: c.labels.map(function () { return c.ideal; }),
                    borderColor: '#d62728', backgroundColor: '#d62728', borderDash: [6, 4], fill: false, order: 2,
                    pointStyle: 'line', pointRadius: c.labels.length === 1 ? 40 : 0, borderWidth: 2 });
      }
      return { type: 'bar', data: { labels: c.labels, datasets: sets },
               options: { scales: { x: axis('strategy'), y: axis(c.y_title, { beginAtZero: true }) } } };
    },
    stacked: function (c) {
      return { type: 'bar', data: { labels: c.labels, datasets: c.parts.map(function (p) {
                 return { label: p.name, data: p.values, backgroundColor: color(p.name) }; }) },
               options: { scales: { x: axis(c.x_title || '', { stacked: true }), y: axis(c.y_title, { stacked: true, beginAtZero: true }) } } };
    },
    cdf: function (c) {
      return { type: 'scatter', data: { datasets: c.series.map(function (s) {
                 return { label: s.name, data: xy(s.points), showLine: true, pointRadius: 0, borderWidth: 1.8,
                          borderColor: color(s.name), backgroundColor: color(s.name) }; }) },
               options: { scales: { x: axis(c.x_title, { type: c.log_x ? 'logarithmic' : 'linear' }),
                                    y: axis('% of requests at or below', { min: 0, max: 100 }) } } };
    },
    lines: function (c) {
      return { type: 'scatter', data: { datasets: c.series.map(function (s) {
                 return { label: s.name, data: xy(s.points), showLine: true, stepped: c.stepped ? 'before' : false,
                          borderDash: s.dashed ? [6, 4] : [], pointRadius: c.stepped ? 0 : 3, borderWidth: 1.6,
                          borderColor: color(s.name), backgroundColor: color(s.name) }; }) },
               options: { scales: { x: axis(c.x_title, { type: c.log_x ? 'logarithmic' : 'linear' }),
                                    y: axis(c.y_title, c.log_y ? { type: 'logarithmic' } : { beginAtZero: true }) } } };
    },
    gantt: function (c) {
      var byName = {};
      c.spans.forEach(function (s) {
        (byName[s[3]] = byName[s[3]] || []).push({ x: [s[1], s[2]], y: s[0] });  // lane by index
      });
      return { type: 'bar', data: { labels: c.lanes, datasets: Object.keys(byName).map(function (n) {
                 return { label: n, data: byName[n], backgroundColor: color(n), borderColor: '#fff', borderWidth: 1,
                          borderSkipped: false, grouped: false,
                          barPercentage: 0.8, categoryPercentage: 1.0 }; }) },
               options: { indexAxis: 'y', scales: { x: axis('ms since the run started', { type: 'linear', min: 0 }),
                                                    y: axis('thread') },
                          plugins: { tooltip: { callbacks: { label: function (ctx) {
                            var v = ctx.raw.x; return ctx.dataset.label + ': ' + v[0].toFixed(2) + '-' + v[1].toFixed(2) +
                              ' ms (' + (v[1] - v[0]).toFixed(2) + ' ms)'; } } } } } };
    }
  };
  Chart.defaults.animation = false;  // drawn at once: what a screenshot or a printout sees is final
  Chart.defaults.maintainAspectRatio = false;
  var rendered = 0, nonempty = 0;
  var root = document.getElementById('charts');
  REPORT.charts.forEach(function (c, i) {
    try {
      var section = document.createElement('section');
      var h = document.createElement('h2'); h.textContent = c.title; section.appendChild(h);
      var p = document.createElement('p'); p.className = 'caption'; p.textContent = c.caption; section.appendChild(p);
      var box = document.createElement('div'); box.className = 'chart';
      box.style.height = (c.kind === 'gantt' ? Math.max(160, 60 + 34 * c.lanes.length) : 340) + 'px';
      var canvas = document.createElement('canvas'); canvas.id = 'chart-' + i;
      box.appendChild(canvas); section.appendChild(box); root.appendChild(section);
      var config = builders[c.kind](c);
      config.options.responsive = true;
      if (!config.data.datasets.some(function (d) { return d.data.length > 0; })) fail('chart ' + i + ' (' + c.title + ') has no data');
      new Chart(canvas, config);
      rendered++;
      var ctx = canvas.getContext('2d');
      var pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data, painted = 0;
      for (var k = 3; k < pixels.length; k += 4) if (pixels[k] !== 0) painted++;
      if (painted > 0) nonempty++; else fail('chart ' + i + ' (' + c.title + ') drew nothing');
    } catch (e) {
      fail('chart ' + i + ' (' + c.title + '): ' + e.message);
    }
  });
  status.setAttribute('data-charts', String(REPORT.charts.length));
  status.setAttribute('data-rendered', String(rendered));
  status.setAttribute('data-nonempty', String(nonempty));
  status.textContent = rendered + ' of ' + REPORT.charts.length + ' charts drawn' +
                       (errors.length ? '; errors: ' + errors.join(' | ') : '');
})();
)JS";

std::string ReadFirstLine(const std::string& path, const std::string& prefix) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) {
      const size_t colon = line.find(':');
      std::string value = colon == std::string::npos ? line : line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "";
}

// 200 quantiles of `samples` as (value, percent at or below).
std::vector<std::pair<double, double>> Quantiles(std::vector<double> samples) {
  std::vector<std::pair<double, double>> points;
  if (samples.empty()) return points;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  constexpr int kPoints = 200;
  for (int q = 0; q <= kPoints; ++q) {
    const size_t index = std::min(
        n - 1,
        static_cast<size_t>(static_cast<double>(q) / kPoints * static_cast<double>(n - 1) + 0.5));
    points.push_back(
        {samples[index], 100.0 * static_cast<double>(index + 1) / static_cast<double>(n)});
  }
  return points;
}

// Fields of a trace event, with defaults for absent or mistyped ones (json::value would throw).
std::string StringField(const nlohmann::json& e, const char* key) {
  return e.contains(key) && e[key].is_string() ? e[key].get<std::string>() : "";
}
int64_t IntField(const nlohmann::json& e, const char* key) {
  return e.contains(key) && e[key].is_number_integer() ? e[key].get<int64_t>() : 0;
}

nlohmann::json Points(const std::vector<std::pair<double, double>>& points) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [x, y] : points) out.push_back({x, y});
  return out;
}

}  // namespace

HtmlPage NewPage(std::string title, std::string verdict, std::string table, std::string plan) {
  HtmlPage page;
  page.title = std::move(title);
  page.command = CommandLine();
  page.verdict = std::move(verdict);
  page.table = std::move(table);
  page.plan = std::move(plan);
  return page;
}

std::string RenderHtml(const HtmlPage& page) {
  nlohmann::json report = {{"charts", page.charts}};
  std::ostringstream out;
  out << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>"
      << EscapeHtml(page.title)
      << "</title>\n<meta name=\"viewport\" content=\"width=device-width, "
         "initial-scale=1\">\n<style>"
      << kStyle << "</style>\n</head><body>\n<h1>" << EscapeHtml(page.title) << "</h1>\n"
      << "<p class=\"meta\">Made by <code>" << EscapeHtml(page.command) << "</code></p>\n"
      << "<h2>Machine</h2>\n<pre>" << EscapeHtml(DescribeMachine()) << "</pre>\n";
  if (!page.verdict.empty()) out << "<p class=\"verdict\">" << EscapeHtml(page.verdict) << "</p>\n";
  out << "<div id=\"charts\"></div>\n";
  if (!page.table.empty()) out << "<h2>Table</h2>\n<pre>" << EscapeHtml(page.table) << "</pre>\n";
  if (!page.plan.empty() && page.table.find(page.plan) == std::string::npos)
    out << "<h2>Loom's plan</h2>\n<pre>" << EscapeHtml(page.plan) << "</pre>\n";
  out << "<div id=\"render-status\" data-charts=\"" << page.charts.size()
      << "\" data-rendered=\"0\" data-nonempty=\"0\" data-errors=\"\">charts not drawn (is "
         "JavaScript off?)</div>\n"
      << "<script>\n";
  for (size_t i = 0; i < kChartJsPartCount; ++i) out << kChartJsParts[i];
  out << "\n</script>\n<script>\nvar REPORT = " << ScriptJson(report) << ";\n</script>\n<script>"
      << kRenderer << "</script>\n</body></html>\n";
  return out.str();
}

absl::Status WriteHtml(const std::string& path, const HtmlPage& page) {
  std::ofstream out(path, std::ios::binary);
  out << RenderHtml(page);
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write the HTML report '", path, "'"));
  return absl::OkStatus();
}

std::string DescribeMachine() {
  utsname u{};
  uname(&u);
  const std::vector<int> cpus = UsableCpus();
  const std::string mem_kb = ReadFirstLine("/proc/meminfo", "MemTotal");
  double mem_gib = 0;
  if (!mem_kb.empty()) mem_gib = std::atof(mem_kb.c_str()) / (1024.0 * 1024.0);
  return absl::StrFormat("CPU: %s\nusable cores: %d (%s); memory %.1f GiB\n%s %s %s\nloom %s (%s)",
                         ReadFirstLine("/proc/cpuinfo", "model name"), cpus.size(),
                         FormatCpuList(cpus), mem_gib, u.sysname, u.release, u.machine,
                         LOOM_VERSION_STRING, BackendVersions());
}

std::string CommandLine() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) {
    const bool plain = !arg.empty() && arg.find_first_of(" \t\"'$\\") == std::string::npos;
    args.push_back(plain ? arg : "'" + arg + "'");
  }
  if (!args.empty()) {
    const size_t slash = args[0].rfind('/');
    if (slash != std::string::npos && args[0].find("loom") != std::string::npos)
      args[0] = args[0].substr(slash + 1);
  }
  return absl::StrJoin(args, " ");
}

nlohmann::json BarChart(const std::string& title, const std::string& caption,
                        const std::string& y_title, const std::vector<std::string>& labels,
                        const std::vector<double>& medians,
                        const std::vector<std::vector<double>>& repetitions, double ideal,
                        const std::string& ideal_label) {
  return {{"kind", "bars"},          {"title", title},
          {"caption", caption},      {"y_title", y_title},
          {"labels", labels},        {"values", medians},
          {"value_label", "median"}, {"repetitions", repetitions},
          {"ideal", ideal},          {"ideal_label", ideal_label}};
}

nlohmann::json StackedBarChart(
    const std::string& title, const std::string& caption, const std::string& y_title,
    const std::vector<std::string>& labels,
    const std::vector<std::pair<std::string, std::vector<double>>>& parts) {
  nlohmann::json p = nlohmann::json::array();
  for (const auto& [name, values] : parts) p.push_back({{"name", name}, {"values", values}});
  return {{"kind", "stacked"},  {"title", title},   {"caption", caption},
          {"y_title", y_title}, {"labels", labels}, {"parts", p}};
}

nlohmann::json CdfChart(const std::string& title, const std::string& caption,
                        const std::string& x_title,
                        const std::vector<std::pair<std::string, std::vector<double>>>& samples,
                        bool log_x) {
  nlohmann::json series = nlohmann::json::array();
  for (const auto& [name, values] : samples) {
    if (values.empty()) continue;
    series.push_back({{"name", name}, {"points", Points(Quantiles(values))}});
  }
  return {{"kind", "cdf"},      {"title", title},   {"caption", caption},
          {"x_title", x_title}, {"series", series}, {"log_x", log_x}};
}

nlohmann::json LineChart(
    const std::string& title, const std::string& caption, const std::string& x_title,
    const std::string& y_title,
    const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series,
    bool stepped, bool log_x, bool log_y) {
  nlohmann::json s = nlohmann::json::array();
  for (const auto& [name, points] : series) {
    const bool dashed = name.rfind("--", 0) == 0;
    s.push_back(
        {{"name", dashed ? name.substr(2) : name}, {"dashed", dashed}, {"points", Points(points)}});
  }
  return {{"kind", "lines"},    {"title", title},     {"caption", caption},
          {"x_title", x_title}, {"y_title", y_title}, {"series", s},
          {"stepped", stepped}, {"log_x", log_x},     {"log_y", log_y}};
}

Timeline TimelineFromTrace(const std::string& trace_json) {
  Timeline timeline;
  const nlohmann::json trace =
      nlohmann::json::parse(trace_json, nullptr, /*allow_exceptions=*/false);
  if (trace.is_discarded() || !trace.is_object() || !trace.contains("traceEvents") ||
      !trace["traceEvents"].is_array()) {
    return timeline;
  }
  std::map<std::pair<int64_t, int64_t>, std::string> thread_names;
  struct Raw {
    std::pair<int64_t, int64_t> thread;
    std::string name;
    double ts = 0, dur = 0;
  };
  std::vector<Raw> raw;
  for (const nlohmann::json& e : trace["traceEvents"]) {
    if (!e.is_object()) continue;
    const std::string ph = StringField(e, "ph");
    const std::pair<int64_t, int64_t> thread = {IntField(e, "pid"), IntField(e, "tid")};
    if (ph == "M" && StringField(e, "name") == "thread_name" && e.contains("args") &&
        e["args"].is_object()) {
      thread_names[thread] = StringField(e["args"], "name");
    } else if (ph == "X" && e.contains("ts") && e["ts"].is_number() && e.contains("dur") &&
               e["dur"].is_number()) {
      raw.push_back(
          {thread, StringField(e, "name"), e["ts"].get<double>(), e["dur"].get<double>()});
    }
  }
  if (raw.empty()) return timeline;
  // From the trace's first event of any kind (a request's queue wait begins before its run).
  double origin = raw.front().ts;
  for (const Raw& r : raw) origin = std::min(origin, r.ts);
  for (const nlohmann::json& e : trace["traceEvents"]) {
    if (e.is_object() && e.contains("ts") && e["ts"].is_number())
      origin = std::min(origin, e["ts"].get<double>());
  }
  std::map<std::pair<int64_t, int64_t>, int> lane_of;
  for (const Raw& r : raw) lane_of.emplace(r.thread, 0);  // sorted by (pid, tid)
  for (auto& [thread, lane] : lane_of) {
    lane = static_cast<int>(timeline.lanes.size());
    auto named = thread_names.find(thread);
    timeline.lanes.push_back(named != thread_names.end() && !named->second.empty()
                                 ? named->second
                                 : absl::StrCat("thread ", thread.second));
  }
  for (const Raw& r : raw) {
    timeline.spans.push_back(
        {lane_of[r.thread], r.name, (r.ts - origin) / 1000.0, (r.ts + r.dur - origin) / 1000.0});
  }
  std::sort(timeline.spans.begin(), timeline.spans.end(),
            [](const Span& a, const Span& b) { return a.start_ms < b.start_ms; });
  return timeline;
}

Timeline TimelineFromSpans(std::vector<std::string> lanes, const std::vector<TimedSpan>& spans,
                           TimePoint origin) {
  Timeline timeline;
  timeline.lanes = std::move(lanes);
  auto ms = [&](TimePoint t) {
    return std::chrono::duration<double, std::milli>(t - origin).count();
  };
  for (const TimedSpan& s : spans) {
    if (s.lane < 0 || s.lane >= static_cast<int>(timeline.lanes.size())) continue;
    timeline.spans.push_back({s.lane, s.name, ms(s.start), ms(s.end)});
  }
  std::sort(timeline.spans.begin(), timeline.spans.end(),
            [](const Span& a, const Span& b) { return a.start_ms < b.start_ms; });
  return timeline;
}

nlohmann::json GanttChart(const std::string& title, const std::string& caption,
                          const Timeline& timeline, size_t max_spans) {
  nlohmann::json spans = nlohmann::json::array();
  const size_t shown = std::min(max_spans, timeline.spans.size());
  for (size_t i = 0; i < shown; ++i) {
    const Span& s = timeline.spans[i];
    spans.push_back({s.lane, s.start_ms, s.end_ms, s.name});
  }
  std::string full_caption = caption;
  if (shown > 0 && shown < timeline.spans.size()) {
    absl::StrAppend(&full_caption,
                    absl::StrFormat(" The first %d of %d spans are shown (up to %.0f ms).", shown,
                                    timeline.spans.size(), timeline.spans[shown - 1].start_ms));
  }
  return {{"kind", "gantt"},
          {"title", title},
          {"caption", full_caption},
          {"lanes", timeline.lanes},
          {"spans", spans}};
}

nlohmann::json ConcurrencyChart(const std::string& title, const std::string& caption,
                                const std::vector<std::pair<std::string, Timeline>>& timelines,
                                int cores) {
  std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> series;
  double end = 0;
  for (const auto& [name, timeline] : timelines) {
    std::vector<std::pair<double, int>> edges;  // (time, +1 / -1)
    for (const Span& s : timeline.spans) {
      edges.push_back({s.start_ms, +1});
      edges.push_back({s.end_ms, -1});
      end = std::max(end, s.end_ms);
    }
    // Ends before starts at the same instant: back-to-back runs are not counted as overlapping.
    std::sort(edges.begin(), edges.end());
    std::vector<std::pair<double, double>> points = {{0.0, 0.0}};
    int running = 0;
    for (const auto& [t, delta] : edges) {
      running += delta;
      if (!points.empty() && points.back().first == t) {
        points.back().second = running;
      } else {
        points.push_back({t, running});
      }
    }
    series.push_back({name, std::move(points)});
  }
  series.push_back({absl::StrCat("--cores (", cores, ")"), {{0.0, cores}, {end, cores}}});
  return LineChart(title, caption, "ms since the run started", "spans running at once", series,
                   /*stepped=*/true);
}

}  // namespace loom::bench
