// DataPlane::Metrics: the server's Prometheus text format.
#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cpu_set.h"
#include "serve/data_plane.h"
#include "serve/entry.h"

namespace loom::serve {
namespace {

// Prometheus label value escaping.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

double ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) : 0;
}

class Writer {
 public:
  void Family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  void Histogram(const std::string& name, const std::string& labels, const Distribution& d) {
    for (size_t i = 0; i < d.upper_bounds.size(); ++i) {
      out_ << name << "_bucket{" << labels << ",le=\"" << absl::StrFormat("%g", d.upper_bounds[i])
           << "\"} " << d.cumulative_counts[i] << "\n";
    }
    out_ << name << "_bucket{" << labels << ",le=\"+Inf\"} " << d.count << "\n";
    out_ << name << "_sum{" << labels << "} " << absl::StrFormat("%.9g", d.sum) << "\n";
    out_ << name << "_count{" << labels << "} " << d.count << "\n";
  }
  std::ostringstream& out() { return out_; }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

// The server's own request latencies (microsecond histogram) in Prometheus' form.
Distribution RequestSeconds(const Histogram::Snapshot& s) {
  Distribution d;
  for (int k = 4; k <= 25; ++k) {
    const uint64_t bound = (uint64_t{1} << k) - 1;
    d.upper_bounds.push_back(static_cast<double>(bound) * 1e-6);
    d.cumulative_counts.push_back(s.CountAtMost(bound));
  }
  d.count = s.count;
  d.sum = static_cast<double>(s.sum) * 1e-6;
  return d;
}

void EngineStats(Writer& w, const std::vector<std::pair<std::string, ModelStats>>& stats) {
  w.Family("loom_queue_duration_seconds", "histogram",
           "Time requests waited in the engine's queue, by model.");
  for (const auto& [m, s] : stats) {
    w.Histogram("loom_queue_duration_seconds", "model=\"" + Label(m) + "\"", s.queue_seconds);
  }
  w.Family("loom_compute_duration_seconds", "histogram", "Time of each run (batch) of the model.");
  for (const auto& [m, s] : stats) {
    w.Histogram("loom_compute_duration_seconds", "model=\"" + Label(m) + "\"", s.compute_seconds);
  }
  w.Family("loom_batch_size", "histogram", "Rows per run of the model.");
  for (const auto& [m, s] : stats) {
    w.Histogram("loom_batch_size", "model=\"" + Label(m) + "\"", s.batch_rows);
  }
  w.Family("loom_queue_depth", "gauge", "Requests waiting in the model's queue now.");
  for (const auto& [m, s] : stats) {
    w.out() << "loom_queue_depth{model=\"" << Label(m) << "\"} " << s.queued << "\n";
  }
  w.Family("loom_engine_requests_total", "counter",
           "Requests the engine accepted, answered and refused, by model.");
  for (const auto& [m, s] : stats) {
    const std::string l = "model=\"" + Label(m) + "\"";
    w.out() << "loom_engine_requests_total{" << l << ",result=\"success\"} " << s.successes << "\n"
            << "loom_engine_requests_total{" << l << ",result=\"failure\"} " << s.failures << "\n"
            << "loom_engine_requests_total{" << l << ",result=\"rejected\"} " << s.rejected << "\n";
  }
}

void WorkerStatsOf(Writer& w, const std::vector<WorkerStats>& workers, double uptime) {
  w.Family("loom_worker_cores", "gauge", "Cores each worker of the plan owns.");
  for (size_t i = 0; i < workers.size(); ++i) {
    w.out() << "loom_worker_cores{worker=\"" << i << "\",cpus=\"" << FormatCpuList(workers[i].cpus)
            << "\"} " << workers[i].cpus.size() << "\n";
  }
  w.Family("loom_worker_busy_seconds_total", "counter",
           "Seconds each worker spent running batches.");
  for (size_t i = 0; i < workers.size(); ++i) {
    w.out() << "loom_worker_busy_seconds_total{worker=\"" << i << "\",cpus=\""
            << FormatCpuList(workers[i].cpus) << "\"} "
            << absl::StrFormat("%.6f", workers[i].busy_seconds) << "\n";
  }
  w.Family("loom_worker_busy_ratio", "gauge",
           "Share of the server's uptime each worker spent running batches.");
  for (size_t i = 0; i < workers.size(); ++i) {
    w.out() << "loom_worker_busy_ratio{worker=\"" << i << "\",cpus=\""
            << FormatCpuList(workers[i].cpus) << "\"} "
            << absl::StrFormat("%.6f", uptime > 0 ? workers[i].busy_seconds / uptime : 0) << "\n";
  }
}

}  // namespace

std::string DataPlane::Metrics() const {
  using Key = std::pair<std::string, std::string>;
  std::map<Key, std::pair<std::map<std::string, int64_t>, Histogram::Snapshot>> counters;
  std::map<std::string, int64_t> in_flight;
  std::vector<std::pair<std::string, std::string>> models;  // served name, engine name
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, c] : counters_) counters[key] = {c.outcomes, c.duration_us->Take()};
    in_flight = in_flight_by_protocol_;
    for (const auto& [name, e] : models_) {
      if (!e->pipeline) models.emplace_back(name, e->engine_name);
    }
  }
  Writer w;
  w.Family("loom_requests_total", "counter",
           "Inference requests answered, by model, protocol and outcome.");
  for (const auto& [key, c] : counters) {
    for (const auto& [outcome, n] : c.first) {
      w.out() << "loom_requests_total{model=\"" << Label(key.first) << "\",protocol=\""
              << key.second << "\",outcome=\"" << outcome << "\"} " << n << "\n";
    }
  }
  w.Family("loom_request_duration_seconds", "histogram",
           "Time from a request's arrival to its answer, at the server.");
  for (const auto& [key, c] : counters) {
    w.Histogram("loom_request_duration_seconds",
                absl::StrCat("model=\"", Label(key.first), "\",protocol=\"", key.second, "\""),
                RequestSeconds(c.second));
  }
  w.Family("loom_inflight_requests", "gauge",
           "Requests received and not yet answered, by protocol.");
  for (const auto& [protocol, n] : in_flight) {
    w.out() << "loom_inflight_requests{protocol=\"" << protocol << "\"} " << n << "\n";
  }
  w.Family("loom_inflight_bytes", "gauge", "Bytes of requests in flight (--max-inflight-mib).");
  w.out() << "loom_inflight_bytes " << budget_.used() << "\n";
  std::vector<std::pair<std::string, ModelStats>> stats;
  for (const auto& [name, engine_name] : models) {
    if (auto s = engine_->Stats(engine_name); s.ok()) stats.emplace_back(name, *s);
  }
  EngineStats(w, stats);
  const double uptime =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  WorkerStatsOf(w, engine_->Workers(), uptime);
  w.Family("loom_busy_threads", "gauge",
           "Threads running the engine's work now (never more than the cores).");
  w.out() << "loom_busy_threads " << engine_->BusyThreads() << "\n";
  w.Family("loom_model_ready", "gauge", "1 for each model the server can run now.");
  for (const std::string& m : ModelNames()) {
    w.out() << "loom_model_ready{model=\"" << Label(m) << "\"} 1\n";
  }
  w.Family("loom_process_resident_memory_bytes", "gauge", "Resident memory of the server process.");
  w.out() << "loom_process_resident_memory_bytes " << absl::StrFormat("%.0f", ResidentBytes())
          << "\n";
  w.Family("loom_http_accept_pauses_total", "counter",
           "Times HTTP accepting paused, out of descriptors or memory (idle connections closed).");
  w.out() << "loom_http_accept_pauses_total " << accept_pauses_.load(std::memory_order_relaxed)
          << "\n";
  w.Family("loom_calls_abandoned_total", "counter",
           "Calls cancelled, timed out or disconnected by their client before the answer, by "
           "protocol (dropped from the queue when still there).");
  for (bool grpc : {false, true}) {
    w.out() << "loom_calls_abandoned_total{protocol=\"" << (grpc ? "grpc" : "http") << "\"} "
            << abandoned(grpc) << "\n";
  }
  w.Family("loom_uptime_seconds", "gauge", "Seconds since the server started.");
  w.out() << "loom_uptime_seconds " << absl::StrFormat("%.3f", uptime) << "\n";
  return w.str();
}

}  // namespace loom::serve
