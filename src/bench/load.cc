#include "bench/load.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/ideal.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "loom/engine.h"

namespace loom::bench {
namespace {

// What one measurement window saw.
struct Window {
  std::vector<double> latencies_ms;
  int64_t failed = 0;
  double elapsed_s = 0;
  double throughput() const {
    return elapsed_s > 0 ? static_cast<double>(latencies_ms.size()) / elapsed_s : 0;
  }
};

// One request: an inference of the copies' model, or one frame to every model of a fanout
// (submitted together, answered when all are). Calls `done(ok)` once, on some thread.
void Send(Engine& engine, const Workload& w, int64_t k, const std::function<void(bool)>& done) {
  const size_t item = static_cast<size_t>(k % w.items());
  if (w.spec.kind == WorkloadKind::kCopies) {
    engine.Submit(w.spec.models[0].name, w.inputs[0][item], {},
                  [done](absl::StatusOr<InferResult> r) { done(r.ok()); });
    return;
  }
  struct Join {
    std::atomic<int> left;
    std::atomic<bool> ok{true};
    std::function<void(bool)> done;
  };
  auto join = std::make_shared<Join>();
  join->left = static_cast<int>(w.spec.models.size());
  join->done = done;
  for (size_t m = 0; m < w.spec.models.size(); ++m) {
    engine.Submit(w.spec.models[m].name, w.inputs[m][item], {},
                  [join](absl::StatusOr<InferResult> r) {
                    if (!r.ok()) join->ok = false;
                    if (join->left.fetch_sub(1) == 1) join->done(join->ok);
                  });
  }
}

// The synchronous form for closed-loop clients (a lone copies request may run on the client's
// thread, as Engine::Infer does).
bool SendAndWait(Engine& engine, const Workload& w, int64_t k) {
  if (w.spec.kind == WorkloadKind::kCopies) {
    return engine.Infer(w.spec.models[0].name, w.inputs[0][static_cast<size_t>(k % w.items())])
        .ok();
  }
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false, ok = false;
  Send(engine, w, k, [&](bool result) {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
    ok = result;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return finished; });
  return ok;
}

Window ClosedLoop(Engine& engine, const Workload& w, int clients, double seconds,
                  const std::function<int(int64_t)>& model_for = nullptr,
                  std::vector<double>* completions_s = nullptr) {
  Window window;
  std::mutex mu;
  std::atomic<int64_t> next{0};
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      std::vector<double> mine, stamps;
      int64_t failed = 0;
      while (Clock::now() < end) {
        const int64_t k = next++;
        const auto t0 = Clock::now();
        bool ok;
        if (model_for) {  // shift: one model per request, chosen by the time
          const int m = model_for(
              static_cast<int64_t>(std::chrono::duration<double>(t0 - start).count() * 1e6));
          ok = engine
                   .Infer(w.spec.models[static_cast<size_t>(m)].name,
                          w.inputs[static_cast<size_t>(m)][static_cast<size_t>(k % w.items())])
                   .ok();
        } else {
          ok = SendAndWait(engine, w, k);
        }
        const auto t1 = Clock::now();
        if (!ok) ++failed;
        mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        stamps.push_back(std::chrono::duration<double>(t1 - start).count());
      }
      std::lock_guard<std::mutex> lock(mu);
      window.latencies_ms.insert(window.latencies_ms.end(), mine.begin(), mine.end());
      if (completions_s) completions_s->insert(completions_s->end(), stamps.begin(), stamps.end());
      window.failed += failed;
    });
  }
  for (auto& t : threads) t.join();
  window.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  return window;
}

Window OpenLoop(Engine& engine, const Workload& w, double rate, double seconds, uint64_t seed) {
  Window window;
  std::mutex mu;
  std::condition_variable cv;
  int64_t outstanding = 0;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate);
  const auto start = Clock::now();
  double t = 0;
  for (int64_t k = 0;; ++k) {
    t += gap(rng);
    if (t >= seconds) break;
    const auto due =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t));
    std::this_thread::sleep_until(due);
    {
      std::lock_guard<std::mutex> lock(mu);
      ++outstanding;
    }
    // Latency from the scheduled arrival: time spent behind a slow server counts.
    Send(engine, w, k, [&, due](bool ok) {
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - due).count();
      std::lock_guard<std::mutex> lock(mu);
      window.latencies_ms.push_back(ms);
      if (!ok) ++window.failed;
      --outstanding;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return outstanding == 0; });
  window.elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  return window;
}

absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(const Workload& w, PlanHint hint, int cores,
                                                   const std::vector<double>& weights = {}) {
  std::vector<ModelConfig> configs;
  for (size_t m = 0; m < w.spec.models.size(); ++m) {
    ModelConfig c{.name = w.spec.models[m].name, .path = w.spec.models[m].path};
    c.warmup_inputs = w.inputs[m][0];
    if (m < weights.size()) c.weight = weights[m];
    configs.push_back(std::move(c));
  }
  return Engine::Create(configs, EngineOptions{.cores = cores, .hint = hint});
}

PlanHint HintOf(const std::string& plan) {
  return plan == "latency"      ? PlanHint::kLatency
         : plan == "throughput" ? PlanHint::kThroughput
                                : PlanHint::kAdaptive;
}

void SummarizeWindows(PlanOutcome& o, std::vector<Window>& windows) {
  std::vector<double> p50, p99;
  for (Window& win : windows) {
    o.throughputs.push_back(win.throughput());
    const LatencySummary l = Summarize(win.latencies_ms);
    p50.push_back(l.p50);
    p99.push_back(l.p99);
    o.failed += win.failed;
  }
  o.throughput = Median(o.throughputs);
  o.p50_ms = Median(p50);
  o.p99_ms = Median(p99);
  if (!windows.empty()) o.latencies_ms = std::move(windows.back().latencies_ms);
}

std::string Unit(const WorkloadSpec& spec) {
  return spec.kind == WorkloadKind::kCopies ? "infer/s" : "frames/s";
}

}  // namespace

namespace {

using Engines = std::map<std::string, std::unique_ptr<Engine>>;

// Every plan at `clients` closed-loop clients, repetitions interleaved across plans.
LoadLevel ClosedLevel(Engines& engines, const Workload& w, int clients,
                      const LoadOptions& options) {
  LoadLevel level;
  level.loop = "closed";
  level.level = clients;
  std::map<std::string, std::vector<Window>> windows;
  for (int rep = 0; rep < options.reps; ++rep) {
    for (const std::string& plan : LoadPlans()) {
      windows[plan].push_back(ClosedLoop(*engines[plan], w, clients, options.seconds));
    }
  }
  for (auto& [plan, ws] : windows) SummarizeWindows(level.plans[plan], ws);
  return level;
}

// Every plan under Poisson arrivals at `rate` x `capacity`, the same arrivals for every plan.
LoadLevel OpenLevel(Engines& engines, const Workload& w, double rate, double capacity,
                    const LoadOptions& options) {
  LoadLevel level;
  level.loop = "open";
  level.level = rate;
  level.offered = rate * capacity;
  std::map<std::string, std::vector<Window>> windows;
  for (int rep = 0; rep < options.reps; ++rep) {
    for (const std::string& plan : LoadPlans()) {
      windows[plan].push_back(OpenLoop(*engines[plan], w, level.offered, options.seconds,
                                       1000 + static_cast<uint64_t>(rep)));
    }
  }
  for (auto& [plan, ws] : windows) SummarizeWindows(level.plans[plan], ws);
  return level;
}

// The ideals in requests/s (ideal.h): a request is one inference of the copies' model, or one
// frame to every model of a fanout. `reps` passes, medians.
absl::Status MeasureIdeals(const Workload& w, const LoadOptions& options, LoadReport& report) {
  std::vector<int> cpus = UsableCpus();
  if (static_cast<int>(cpus.size()) > report.usable_cores) {
    cpus.resize(static_cast<size_t>(report.usable_cores));
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<IdealProbe> probe, IdealProbe::Create(w, cpus));
  auto request_ms = [&w](const std::vector<double>& ms) {
    if (w.spec.kind == WorkloadKind::kCopies) return ms[0];
    double sum = 0;
    for (double v : ms) sum += v;
    return sum;
  };
  std::vector<double> ideal, busy;
  for (int rep = 0; rep < std::max(options.reps, 1); ++rep) {
    LOOM_ASSIGN_OR_RETURN(SingleThreadCosts costs, probe->Measure());
    ideal.push_back(IdealRate(report.usable_cores, request_ms(costs.alone_ms)));
    busy.push_back(IdealRate(report.usable_cores, request_ms(costs.busy_ms)));
  }
  report.ideal = Median(ideal);
  report.busy_ideal = Median(busy);
  return absl::OkStatus();
}

// The fewest clients against the latency plan, the most against the throughput plan and the
// ideals, each open-loop level's p99.
std::string LoadVerdict(const LoadReport& report) {
  std::vector<std::string> parts;
  const LoadLevel* few = nullptr;
  const LoadLevel* many = nullptr;
  for (const LoadLevel& l : report.levels) {
    if (l.loop != "closed") continue;
    if (!few || l.level < few->level) few = &l;
    if (!many || l.level > many->level) many = &l;
  }
  if (few) {
    const auto& a = few->plans.at("adaptive");
    parts.push_back(absl::StrFormat(
        "%g client%s: adaptive p50 %.2f ms = %.2fx the latency plan's, %.2fx the throughput plan's",
        few->level, few->level == 1 ? "" : "s", a.p50_ms,
        a.p50_ms / few->plans.at("latency").p50_ms, a.p50_ms / few->plans.at("throughput").p50_ms));
  }
  if (many && many != few) {
    const auto& a = many->plans.at("adaptive");
    std::string part = absl::StrFormat(
        "%g clients: adaptive %.1f %s = %.2fx the throughput plan's, %.2fx the latency plan's",
        many->level, a.throughput, Unit(report.spec),
        a.throughput / many->plans.at("throughput").throughput,
        a.throughput / many->plans.at("latency").throughput);
    if (report.ideal > 0 && report.busy_ideal > 0) {
      absl::StrAppend(
          &part, absl::StrFormat(", %.2f of ideal (%.2f of the busy-cores ideal)",
                                 a.throughput / report.ideal, a.throughput / report.busy_ideal));
    }
    parts.push_back(std::move(part));
  }
  for (const LoadLevel& l : report.levels) {
    if (l.loop != "open") continue;
    const auto& a = l.plans.at("adaptive");
    parts.push_back(absl::StrFormat(
        "open %.0f%%: adaptive p99 %.1f ms (latency plan %.1f, throughput plan %.1f)",
        100 * l.level, a.p99_ms, l.plans.at("latency").p99_ms, l.plans.at("throughput").p99_ms));
  }
  return "verdict: " + absl::StrJoin(parts, "; ");
}

}  // namespace

absl::StatusOr<LoadReport> RunLoad(const WorkloadSpec& spec, const LoadOptions& options) {
  LOOM_ASSIGN_OR_RETURN(Workload w, PrepareWorkload(spec));
  LoadReport report;
  report.spec = spec;
  report.usable_cores = options.cores > 0 ? options.cores : static_cast<int>(UsableCpus().size());
  report.reps = options.reps;
  report.seconds = options.seconds;
  Engines engines;
  for (const std::string& plan : LoadPlans()) {
    LOOM_ASSIGN_OR_RETURN(engines[plan], MakeEngine(w, HintOf(plan), options.cores));
  }
  for (int clients : options.clients) {
    report.levels.push_back(ClosedLevel(engines, w, clients, options));
    report.capacity =
        std::max(report.capacity, report.levels.back().plans["throughput"].throughput);
  }
  if (report.capacity <= 0 && !options.rates.empty()) {  // no closed levels: probe the capacity
    report.capacity =
        ClosedLoop(*engines["throughput"], w, 4 * report.usable_cores, options.seconds)
            .throughput();
  }
  for (double rate : options.rates) {
    report.levels.push_back(OpenLevel(engines, w, rate, report.capacity, options));
  }
  for (auto& [plan, engine] : engines) report.plan_text[plan] = engine->DescribePlan();
  engines.clear();  // no engine thread may run (or spin) beside the ideal's passes
  LOOM_RETURN_IF_ERROR(MeasureIdeals(w, options, report));
  report.verdict = LoadVerdict(report);
  return report;
}

std::string LoadReport::Table() const {
  std::ostringstream out;
  std::vector<std::string> names;
  for (const BenchModel& m : spec.models) names.push_back(m.name);
  out << absl::StrFormat(
      "load: %s (%s), %d usable cores; %d repetitions of %.1f s interleaved across plans; "
      "medians\n",
      absl::StrJoin(names, " + "),
      spec.kind == WorkloadKind::kCopies ? "one inference per request"
                                         : "one frame to every model per request",
      usable_cores, reps, seconds);
  out << absl::StrFormat("capacity (throughput plan, best closed-loop level): %.1f %s\n", capacity,
                         Unit(spec));
  if (ideal > 0 && busy_ideal > 0) {
    out << absl::StrFormat(
        "ideal: %.1f %s (usable cores x the single-thread rate on one core while the others idle); "
        "%.1f %s with every core busy at once (what the cores give when all compute); capacity = "
        "%.2f of ideal, %.2f of the busy-cores ideal\n",
        ideal, Unit(spec), busy_ideal, Unit(spec), capacity / ideal, capacity / busy_ideal);
  }
  out << "\n";
  out << absl::StrFormat("%-7s %-10s", "loop", "level");
  for (const std::string& p : LoadPlans())
    out << absl::StrFormat(" | %-27s", p + " " + Unit(spec) + " p50 p99");
  out << "\n";
  for (const LoadLevel& l : levels) {
    const std::string level = l.loop == "closed"
                                  ? absl::StrFormat("%g clients", l.level)
                                  : absl::StrFormat("%.0f%% %.0f/s", 100 * l.level, l.offered);
    out << absl::StrFormat("%-7s %-10s", l.loop, level);
    for (const std::string& p : LoadPlans()) {
      const PlanOutcome& o = l.plans.at(p);
      out << absl::StrFormat(" | %8.1f %8.2f %8.2f  ", o.throughput, o.p50_ms, o.p99_ms);
    }
    out << "\n";
  }
  out << "\n" << plan_text.at("adaptive") << "\n" << verdict << "\n";
  return out.str();
}

nlohmann::json LoadReport::ToJson() const {
  nlohmann::json ls = nlohmann::json::array();
  for (const LoadLevel& l : levels) {
    nlohmann::json plans = nlohmann::json::object();
    for (const auto& [name, o] : l.plans) {
      plans[name] = {{"throughput", o.throughput}, {"throughputs", o.throughputs},
                     {"p50_ms", o.p50_ms},         {"p99_ms", o.p99_ms},
                     {"failed", o.failed},         {"latencies_ms", o.latencies_ms}};
    }
    ls.push_back({{"loop", l.loop}, {"level", l.level}, {"offered", l.offered}, {"plans", plans}});
  }
  return {{"workload", spec.ToJson()}, {"usable_cores", usable_cores},
          {"repetitions", reps},       {"seconds", seconds},
          {"capacity", capacity},      {"ideal", ideal},
          {"busy_ideal", busy_ideal},  {"levels", ls},
          {"plans", plan_text},        {"verdict", verdict}};
}

HtmlPage LoadReport::Html() const {
  HtmlPage page = NewPage("loom bench load", verdict, Table(),
                          plan_text.count("adaptive") ? plan_text.at("adaptive") : "");
  using Series = std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>;
  Series closed_rate, closed_p50, closed_p99, open_p99;
  const LoadLevel* lightest = nullptr;
  const LoadLevel* heaviest = nullptr;
  for (const std::string& plan : LoadPlans()) {
    std::vector<std::pair<double, double>> rate, p50, p99, open;
    for (const LoadLevel& l : levels) {
      const PlanOutcome& o = l.plans.at(plan);
      if (l.loop == "closed") {
        rate.push_back({l.level, o.throughput});
        p50.push_back({l.level, o.p50_ms});
        p99.push_back({l.level, o.p99_ms});
        if (!lightest || l.level < lightest->level) lightest = &l;
        if (!heaviest || l.level > heaviest->level) heaviest = &l;
      } else {
        open.push_back({l.offered, o.p99_ms});
      }
    }
    closed_rate.push_back({plan, rate});
    closed_p50.push_back({plan, p50});
    closed_p99.push_back({plan, p99});
    open_p99.push_back({plan, open});
  }
  const std::string unit = Unit(spec);
  const std::string per = absl::StrFormat(
      "%d repetitions of %.1f s per level and plan, interleaved; medians.", reps, seconds);
  if (!closed_rate.front().second.empty()) {
    page.charts.push_back(LineChart(
        "Closed loop: throughput against clients",
        absl::StrCat("Each client sends its next request when the last is answered. ", per),
        "concurrent clients", unit, closed_rate));
    page.charts.push_back(LineChart("Closed loop: median latency against clients",
                                    absl::StrCat("From submission to answer. ", per),
                                    "concurrent clients", "p50 latency, ms", closed_p50));
    page.charts.push_back(LineChart("Closed loop: p99 latency against clients",
                                    absl::StrCat("From submission to answer. ", per),
                                    "concurrent clients", "p99 latency, ms", closed_p99));
  }
  if (!open_p99.front().second.empty()) {
    page.charts.push_back(LineChart(
        "Open loop: p99 latency against offered load",
        absl::StrFormat(
            "Poisson arrivals at fractions of the capacity (%.1f %s); latency counted from each "
            "request's scheduled arrival, so a queue that builds up shows. %s",
            capacity, unit, per),
        absl::StrCat("offered load, ", unit), "p99 latency, ms", open_p99, false, false,
        /*log_y=*/true));
  }
  for (const LoadLevel* l : {lightest, heaviest}) {
    if (!l || (l == heaviest && heaviest == lightest)) continue;
    std::vector<std::pair<std::string, std::vector<double>>> samples;
    for (const std::string& plan : LoadPlans())
      samples.push_back({plan, l->plans.at(plan).latencies_ms});
    page.charts.push_back(
        CdfChart(absl::StrFormat("Latency distribution with %g closed-loop clients", l->level),
                 "Every request of the last repetition, from submission to answer.",
                 "latency per request, ms (log scale)", samples, /*log_x=*/true));
  }
  return page;
}

absl::StatusOr<ShiftReport> RunShift(const WorkloadSpec& spec, const ShiftOptions& options) {
  if (spec.models.size() != 2) return absl::InvalidArgumentError("shift needs exactly two models");
  LOOM_ASSIGN_OR_RETURN(Workload w, PrepareWorkload(spec));
  ShiftReport report;
  report.spec = spec;
  report.usable_cores = options.cores > 0 ? options.cores : static_cast<int>(UsableCpus().size());
  report.reps = options.reps;
  report.seconds_per_phase = options.seconds_per_phase;
  report.bucket_s = options.bucket_s;
  // A static plan is made for a mix by the weights: (1, 1e-3) is "all traffic on the first".
  struct Contender {
    std::string name;
    std::unique_ptr<Engine> engine;
  };
  std::vector<Contender> contenders;
  LOOM_ASSIGN_OR_RETURN(auto first, MakeEngine(w, PlanHint::kThroughput, options.cores, {1, 1e-3}));
  LOOM_ASSIGN_OR_RETURN(auto second,
                        MakeEngine(w, PlanHint::kThroughput, options.cores, {1e-3, 1}));
  LOOM_ASSIGN_OR_RETURN(auto adaptive, MakeEngine(w, PlanHint::kAdaptive, options.cores));
  contenders.push_back({"static (first mix)", std::move(first)});
  contenders.push_back({"static (second mix)", std::move(second)});
  contenders.push_back({"adaptive", std::move(adaptive)});
  const double total = 2 * options.seconds_per_phase;
  const size_t buckets = static_cast<size_t>(std::ceil(total / options.bucket_s));
  const int64_t change_us = static_cast<int64_t>(options.seconds_per_phase * 1e6);
  std::map<std::string, std::vector<std::vector<double>>> per_rep;  // name -> rep -> bucket rps
  std::map<std::string, std::vector<double>> after;
  for (int rep = 0; rep < options.reps; ++rep) {
    for (Contender& c : contenders) {
      std::vector<double> stamps;
      ClosedLoop(
          *c.engine, w, options.clients, total, [&](int64_t us) { return us < change_us ? 0 : 1; },
          &stamps);
      std::vector<double> rps(buckets, 0);
      int64_t late = 0;
      for (double s : stamps) {
        if (s < total)
          rps[std::min(buckets - 1, static_cast<size_t>(s / options.bucket_s))] +=
              1 / options.bucket_s;
        if (s >= options.seconds_per_phase + 1 && s < total) ++late;
      }
      per_rep[c.name].push_back(rps);
      after[c.name].push_back(static_cast<double>(late) /
                              std::max(options.seconds_per_phase - 1, 1e-9));
    }
  }
  for (auto& [name, reps] : per_rep) {
    std::vector<double> median(buckets);
    for (size_t b = 0; b < buckets; ++b) {
      std::vector<double> v;
      for (const auto& r : reps) v.push_back(r[b]);
      median[b] = Median(v);
    }
    report.series[name] = median;
    report.after_change[name] = Median(after[name]);
  }
  report.adaptive_plan = contenders.back().engine->DescribePlan();
  const double a = report.after_change["adaptive"];
  report.verdict = absl::StrFormat(
      "verdict: from 1 s after the change on, adaptive %.1f/s = %.2fx the static plan made for the "
      "new mix, "
      "%.2fx the static plan made for the old one",
      a, a / report.after_change["static (second mix)"],
      a / report.after_change["static (first mix)"]);
  return report;
}

std::string ShiftReport::Table() const {
  std::ostringstream out;
  out << absl::StrFormat(
      "shift: all traffic on %s for %.1f s, then all on %s for %.1f s; %d repetitions; medians\n\n",
      spec.models[0].name, seconds_per_phase, spec.models[1].name, seconds_per_phase, reps);
  out << absl::StrFormat("%-8s", "t (s)");
  for (const auto& [name, s] : series) out << absl::StrFormat(" %20s", name);
  out << "   (requests/s)\n";
  const size_t n = series.empty() ? 0 : series.begin()->second.size();
  for (size_t b = 0; b < n; ++b) {
    out << absl::StrFormat("%-8.2f", static_cast<double>(b) * bucket_s);
    for (const auto& [name, s] : series) out << absl::StrFormat(" %20.1f", s[b]);
    out << ((static_cast<double>(b) * bucket_s < seconds_per_phase) ? "\n" : "   *\n");
  }
  out << "   (* second model's traffic)\n\n" << adaptive_plan << "\n" << verdict << "\n";
  return out.str();
}

nlohmann::json ShiftReport::ToJson() const {
  return {{"workload", spec.ToJson()},
          {"usable_cores", usable_cores},
          {"repetitions", reps},
          {"seconds_per_phase", seconds_per_phase},
          {"bucket_s", bucket_s},
          {"series", series},
          {"after_change", after_change},
          {"adaptive_plan", adaptive_plan},
          {"verdict", verdict}};
}

HtmlPage ShiftReport::Html() const {
  HtmlPage page = NewPage("loom bench shift", verdict, Table(), adaptive_plan);
  std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> lines;
  for (const auto& [name, rps] : series) {
    std::vector<std::pair<double, double>> points;
    for (size_t b = 0; b < rps.size(); ++b)
      points.push_back({(static_cast<double>(b) + 0.5) * bucket_s, rps[b]});
    lines.push_back({name, points});
  }
  page.charts.push_back(LineChart(
      "Completions over time as traffic moves",
      absl::StrFormat("All traffic on %s for %.1f s, then all on %s. Requests/s per %.2f s bucket, "
                      "the median of %d "
                      "repetitions.",
                      spec.models[0].name, seconds_per_phase, spec.models[1].name, bucket_s, reps),
      "s since the start", "requests/s", lines));
  return page;
}

}  // namespace loom::bench
