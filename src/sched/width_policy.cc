#include "sched/width_policy.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::sched {
namespace {

constexpr double kEwmaWeight = 0.2;  // of the newest run

void Ewma(double& average, double sample) {
  average = average <= 0 ? sample : average + kEwmaWeight * (sample - average);
}

// A request's first input as one row of it (dim 0 set to 1 where it holds the request's rows), to
// name a size in the plan.
Shape RowShape(const Request& request) {
  if (request.inputs.empty()) return {};
  Shape shape = request.inputs[0].tensor.shape();
  if (!shape.empty() && request.rows > 1 && shape[0] == request.rows) shape[0] = 1;
  return shape;
}

}  // namespace

bool ModeState::Wanted(bool alone, int group_workers, double margin) const {
  if (alone) {
    if (wide_ms <= 0 || narrow_alone_ms <= 0) return wide_alone;
    return wide_ms < narrow_alone_ms * (wide_alone ? 1 + margin : 1 - margin);
  }
  const double narrow_ms = NarrowLoaded();
  if (WideLoaded() <= 0 || narrow_ms <= 0) return wide_loaded;
  const double wide_rate = 1000.0 / WideLoaded(), narrow_rate = 1000.0 * group_workers / narrow_ms;
  return wide_rate > narrow_rate * (wide_loaded ? 1 - margin : 1 + margin);
}

double ModeState::ToThisSize(int size, int64_t measured_elements) const {
  return size >= 0 && elements > 0 && measured_elements > 0
             ? static_cast<double>(elements) / static_cast<double>(measured_elements)
             : 1.0;
}

int Modes::SizeOf(int64_t measured_elements, int64_t elements, int64_t rows) {
  const int64_t per_row = elements / std::max<int64_t>(rows, 1);
  if (measured_elements <= 0 || per_row <= 0) return -1;
  if (per_row == measured_elements) return kMeasuredSize;
  return static_cast<int>(std::bit_width(static_cast<uint64_t>(per_row))) - 1;
}

ModeState& Modes::At(int size) {
  auto it = by_size.find(size);
  if (it != by_size.end()) return it->second;
  ModeState& fresh = by_size[size];
  const ModeState& seed = by_size[measured];
  fresh.wide_alone = seed.wide_alone;
  fresh.wide_loaded = seed.wide_loaded;
  fresh.first_sight = true;
  return fresh;
}

void Modes::Seed(double narrow_ms, double wide_ms, int64_t measured_elements, double margin) {
  const int size = SizeOf(measured_elements, measured_elements, 1);
  auto it = by_size.find(size);
  ModeState m = it != by_size.end() ? it->second : ModeState{};
  by_size.clear();
  warmed.clear();  // a re-plan's sessions are new
  measured = size;
  m.first_sight = false;
  m.StartExploringOver(/*alone=*/true);  // new figures: checked at the usual pace again
  m.StartExploringOver(/*alone=*/false);
  m.narrow_alone_ms = m.narrow_loaded_ms = narrow_ms;
  m.wide_ms = wide_ms;
  m.wide_loaded_ms = 0;
  m.wide_alone = m.wide_loaded = false;
  if (narrow_ms > 0 && wide_ms > 0) {
    m.wide_alone = wide_ms < narrow_ms * (1 - margin);
    m.wide_loaded = 1.0 / wide_ms > group_workers / narrow_ms * (1 + margin);
  }
  by_size[measured] = std::move(m);
}

double Modes::ExpectedMs(int size, bool wide) {
  for (const int s : {size, measured}) {
    const ModeState& m = At(s);
    const double ms = wide ? m.wide_ms : std::max(m.narrow_alone_ms, m.narrow_loaded_ms);
    if (ms > 0) return ms;
  }
  return 0;
}

bool Modes::ChooseWide(const WidthOptions& options, int size, bool alone) {
  ModeState& m = At(size);
  const bool preferred = alone ? m.wide_alone : m.wide_loaded;
  int64_t& decisions = alone ? m.decisions_alone : m.decisions_loaded;
  ++decisions;
  // A size first seen: each width a few times at this size, the preferred one first.
  // (Exploring's interval counts from the last of these runs, as from any try of the other width.)
  // Under load, wide is not tried at first sight where narrow is preferred: a wide run under load
  // first waits for every worker of its group to end its run, so each try costs the whole group
  // (on a short job, most of its time) for what the exploring schedule below learns as well.
  if (m.first_sight && options.explore_every > 0) {
    const bool preferred_due = m.runs[alone][preferred] < kFirstSightRuns;
    const bool other_due = m.runs[alone][!preferred] < kFirstSightRuns && (alone || preferred);
    if (preferred_due || other_due) {
      m.explored_at[alone] = decisions;
      return preferred_due ? preferred : !preferred;
    }
  }
  // The figures call for the other width, whose figure is not yet a measurement of its own runs
  // (at the measured size: the load-time probe's, while the preferred width's runs came out slower
  // than the probe said; other sizes run both widths at first sight): it runs now, a few times,
  // rather than when the exploring schedule comes round, so that a stale figure does not keep the
  // worse width for long.
  if (options.explore_every > 0 && m.runs[alone][!preferred] < kFirstSightRuns &&
      m.Wanted(alone, group_workers, options.switch_margin) != preferred) {
    m.explored_at[alone] = decisions;
    return !preferred;
  }
  if (options.explore_every <= 0) return preferred;
  // Exploring costs what the other width loses against the preferred one: try it less often the
  // worse it measured (by that ratio, at most 8x less often). Alone the cost is the request's own
  // time; under load it is core time (a wide run holds every worker of the group).
  double worse = 1;
  const double narrow_ms = alone ? m.narrow_alone_ms : m.NarrowLoaded();
  if (m.wide_ms > 0 && narrow_ms > 0) {
    const double wide_cost = alone ? m.wide_ms : m.WideLoaded() * group_workers;
    worse = preferred ? narrow_ms / wide_cost : wide_cost / narrow_ms;
  }
  const int64_t every = std::llround(options.explore_every * std::clamp(worse, 1.0, 8.0))
                        << m.explore_backoff[alone];
  if (decisions - m.explored_at[alone] < every) return preferred;
  m.explored_at[alone] = decisions;
  m.explore_backoff[alone] = std::min(m.explore_backoff[alone] + 1, ModeState::kMaxExploreBackoff);
  return !preferred;
}

std::vector<std::string> Modes::Record(const WidthOptions& options, int64_t measured_elements,
                                       bool has_group, TimePoint now, const RunRecord& run) {
  const int64_t rows = std::max<int64_t>(run.rows, 1);
  const int size = SizeOf(measured_elements, run.elements, run.rows);
  ModeState& m = At(size);
  ++m.runs[run.alone][run.wide];
  if (m.shape.empty() && run.first) {  // once per size: not a shape copy on every run
    m.shape = ShapeToString(RowShape(*run.first));
    m.elements = run.elements / rows;
  }
  // ms per measured-size request where that size is known (runs of different shapes then compare),
  // else ms per row. An empty run says nothing about the cost of a measured-size one.
  if (measured_elements > 0 && run.elements <= 0) return {};
  const double per =
      measured_elements > 0 && run.elements > 0
          ? static_cast<double>(measured_elements) / static_cast<double>(run.elements)
          : 1.0 / static_cast<double>(rows);
  const double ms = static_cast<double>(run.compute_us) / 1000.0 * per;
  // A session's first run at a shape is a warm-up, counted but not averaged: ONNX Runtime plans
  // and allocates for a shape it has not run (PP-OCR det's first run at 544x256 takes 1.2-1.4x its
  // next ones: `loom run --warmup 0 --reps 1`), and an average that starts from it would hold
  // that against the width for many runs. (The plan's probe warmed the measured size up.)
  const bool warm_up = size != measured && WarmUp(run.session, run.elements / rows);
  if (run.wide) {
    if (!warm_up) Ewma(run.alone ? m.wide_ms : m.wide_loaded_ms, ms);
    ++m.wide_runs;
  } else {
    if (!warm_up) Ewma(run.alone ? m.narrow_alone_ms : m.narrow_loaded_ms, ms);
    ++m.narrow_runs;
  }
  // A preference changes only on measurements of both widths (a few runs each), never on one.
  if (!has_group || !options.adaptive || m.wide_runs < 2 || m.narrow_runs < 2) return {};
  const double margin = options.switch_margin;
  const double k = m.ToThisSize(size, measured_elements);  // the note's figures at this size
  std::vector<std::string> switches;
  auto note = [&](std::string text) {
    if (size >= 0) absl::StrAppend(&text, " at ", m.shape);
    switches.push_back(std::move(text));
  };
  if (now - m.switched_alone >= options.min_switch_interval) {
    const bool want = m.Wanted(/*alone=*/true, group_workers, margin);
    if (want != m.wide_alone) {
      m.wide_alone = want;
      m.switched_alone = now;
      m.StartExploringOver(/*alone=*/true);
      note(absl::StrFormat("alone: now %s (wide %.2f ms vs narrow %.2f ms per request, measured)",
                           want ? "wide" : "narrow", k * m.wide_ms, k * m.narrow_alone_ms));
    }
  }
  if (now - m.switched_loaded >= options.min_switch_interval) {
    const bool want = m.Wanted(/*alone=*/false, group_workers, margin);
    if (want != m.wide_loaded) {
      m.wide_loaded = want;
      m.switched_loaded = now;
      m.StartExploringOver(/*alone=*/false);
      note(absl::StrFormat("under load: now %s (wide %.1f/s vs narrow %.1f/s per group, measured)",
                           want ? "wide" : "narrow", 1000.0 / (k * m.WideLoaded()),
                           1000.0 * group_workers / (k * m.NarrowLoaded())));
    }
  }
  return switches;
}

std::string Modes::Describe(const std::string& name, int64_t measured_elements) const {
  std::string out;
  for (const auto& [size, m] : by_size) {
    if (size != measured && m.narrow_runs + m.wide_runs == 0) continue;  // seen, not run yet
    const std::string label =
        size < 0 ? name : absl::StrCat(name, " ", m.shape.empty() ? "(measured size)" : m.shape);
    // The EWMAs are per measured-size request: shown at this size's own; a width this size has
    // not measured (alone, say, where every run of it had company, or only a warm-up ran) has no
    // figure.
    const double k = m.ToThisSize(size, measured_elements);
    auto ms = [k](double v) {
      return v > 0 ? absl::StrFormat("%.2f ms", k * v) : std::string("not measured");
    };
    auto rate = [k](double v) {
      return v > 0 ? absl::StrFormat("%.1f/s", 1000.0 / (k * v)) : std::string("not measured");
    };
    absl::StrAppend(&out,
                    absl::StrFormat("    %-24s alone: %-6s (wide %s, narrow %s)  under load: %-6s "
                                    "(wide %s, narrow %s)  runs: %d narrow, %d wide\n",
                                    label, m.wide_alone ? "wide" : "narrow", ms(m.wide_ms),
                                    ms(m.narrow_alone_ms), m.wide_loaded ? "wide" : "narrow",
                                    rate(m.WideLoaded()), rate(m.NarrowLoaded() / group_workers),
                                    m.narrow_runs, m.wide_runs));
  }
  return out;
}

}  // namespace loom::sched
