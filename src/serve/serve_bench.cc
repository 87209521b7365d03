#include "serve/serve_bench.h"

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "core/tensor_util.h"
#include "grpc_service.grpc.pb.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/http_server.h"
#include "serve/security.h"

namespace loom::serve {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
namespace pb = inference;
using Clock = std::chrono::steady_clock;

absl::StatusOr<std::pair<std::string, std::string>> SplitAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': expected HOST:PORT"));
  return std::make_pair(address.substr(0, colon), address.substr(colon + 1));
}

// A keep-alive HTTP/1.1 client on one connection (one per client thread).
class HttpClient {
 public:
  absl::Status Connect(const std::string& address) {
    LOOM_ASSIGN_OR_RETURN(auto hp, SplitAddress(address));
    host_ = hp.first;
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(hp.first, hp.second, ec);
    if (!ec) asio::connect(socket_, endpoints, ec);
    if (ec)
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", address, ": ", ec.message()));
    socket_.set_option(tcp::no_delay(true), ec);
    return absl::OkStatus();
  }

  // `body` is sent from where it lies (a benchmark's client copies nothing it need not).
  absl::StatusOr<http::response<http::string_body>> Send(http::verb verb, const std::string& target,
                                                         std::string_view body,
                                                         int64_t header_length = -1) {
    http::request<http::span_body<const char>> req{verb, target, 11};
    req.set(http::field::host, host_);
    if (header_length >= 0) {
      req.set("Inference-Header-Content-Length", std::to_string(header_length));
      req.set(http::field::content_type, "application/octet-stream");
    } else {
      req.set(http::field::content_type, "application/json");
    }
    req.body() = {body.data(), body.size()};
    req.prepare_payload();
    boost::system::error_code ec;
    http::write(socket_, req, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("HTTP write: ", ec.message()));
    http::response_parser<http::string_body> parser;
    parser.body_limit(uint64_t{1} << 31);
    http::read(socket_, buffer_, parser, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("HTTP read: ", ec.message()));
    return parser.release();
  }

 private:
  asio::io_context io_;
  tcp::socket socket_{io_};
  beast::flat_buffer buffer_;
  std::string host_;
};

// What one request carries, in every encoding.
struct Workload {
  std::string model;
  NamedTensors inputs;      // in process
  std::string json_body;    // HTTP JSON
  std::string binary_body;  // HTTP binary: JSON header + raw bytes
  int64_t binary_header = 0;
  pb::ModelInferRequest grpc;
};

absl::StatusOr<Workload> MakeWorkload(const std::string& http_address, const std::string& model,
                                      int batch) {
  HttpClient client;
  LOOM_RETURN_IF_ERROR(client.Connect(http_address));
  std::string name = model;
  if (name.empty()) {
    LOOM_ASSIGN_OR_RETURN(
        auto index, client.Send(http::verb::post, "/v2/repository/index", "{\"ready\":true}"));
    json j = json::parse(index.body(), nullptr, false);
    if (!j.is_array() || j.empty()) {
      return absl::NotFoundError(
          "the server lists no ready model (its repository API may be "
          "off): name the model with --call");
    }
    name = j[0].value("name", "");
  }
  LOOM_ASSIGN_OR_RETURN(auto meta_response, client.Send(http::verb::get, "/v2/models/" + name, ""));
  if (meta_response.result_int() != 200) {
    return absl::NotFoundError(absl::StrCat("model '", name, "': ", meta_response.body()));
  }
  json meta = json::parse(meta_response.body(), nullptr, false);
  if (!meta.is_object() || !meta["inputs"].is_array())
    return absl::InternalError("the model's metadata has no inputs");
  Workload w;
  w.model = name;
  w.grpc.set_model_name(name);
  json header = {{"inputs", json::array()}, {"outputs", json::array()}};
  json body = {{"inputs", json::array()}};
  std::string raw;
  uint64_t seed = 1;
  for (const json& in : meta["inputs"]) {
    const std::string input = in.value("name", "");
    const std::string datatype = in.value("datatype", "");
    LOOM_ASSIGN_OR_RETURN(WireType type, ParseWireType(datatype));
    const std::optional<DType> dtype = ToDType(type);
    if (!dtype)
      return absl::UnimplementedError(
          absl::StrCat("input '", input, "': ", datatype, " is not benchmarked"));
    Shape shape;
    for (const json& d : in["shape"])
      shape.push_back(d.get<int64_t>() < 0 ? (shape.empty() ? batch : 1) : d.get<int64_t>());
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::TryAllocate(*dtype, shape));
    FillRandom(t, seed++);
    const std::string bytes(static_cast<const char*>(t.data()), t.byte_size());
    header["inputs"].push_back({{"name", input},
                                {"shape", shape},
                                {"datatype", datatype},
                                {"parameters", {{"binary_data_size", bytes.size()}}}});
    json data = json::array();
    if (*dtype == DType::kFloat32) {
      for (int64_t i = 0; i < t.element_count(); ++i) data.push_back(t.data_as<float>()[i]);
    } else if (*dtype == DType::kInt64) {
      for (int64_t i = 0; i < t.element_count(); ++i) data.push_back(t.data_as<int64_t>()[i]);
    } else if (*dtype == DType::kUInt8) {
      for (int64_t i = 0; i < t.element_count(); ++i) data.push_back(t.data_as<uint8_t>()[i]);
    } else {
      return absl::UnimplementedError(
          absl::StrCat("input '", input, "': JSON for ", datatype, " is not benchmarked"));
    }
    body["inputs"].push_back(
        {{"name", input}, {"shape", shape}, {"datatype", datatype}, {"data", std::move(data)}});
    raw += bytes;
    auto* g = w.grpc.add_inputs();
    g->set_name(input);
    g->set_datatype(datatype);
    for (int64_t d : shape) g->add_shape(d);
    w.grpc.add_raw_input_contents(bytes);
    w.inputs.push_back({input, std::move(t)});
  }
  for (const json& out : meta["outputs"]) {
    header["outputs"].push_back(
        {{"name", out.value("name", "")}, {"parameters", {{"binary_data", true}}}});
  }
  const std::string h = header.dump();
  w.binary_header = static_cast<int64_t>(h.size());
  w.binary_body = h + raw;
  w.json_body = body.dump();
  return w;
}

// Sums of the server's queue and compute histograms for the model (seconds and counts).
struct ServerSplit {
  double queue_s = 0, queued = 0;  // per request
  double compute_s = 0, runs = 0;  // per run (a batch)
};

ServerSplit ReadSplit(const std::string& http_address, const std::vector<Workload>& workloads) {
  ServerSplit s;
  HttpClient client;
  if (!client.Connect(http_address).ok()) return s;
  auto r = client.Send(http::verb::get, "/metrics", "");
  if (!r.ok()) return s;
  for (const Workload& w : workloads) {
    const std::string label = absl::StrCat("{model=\"", w.model, "\"} ");
    for (absl::string_view line : absl::StrSplit(r->body(), '\n')) {
      auto add = [&](const std::string& name, double& out) {
        const std::string prefix = name + label;
        if (line.substr(0, prefix.size()) == prefix)
          out += std::strtod(std::string(line.substr(prefix.size())).c_str(), nullptr);
      };
      add("loom_queue_duration_seconds_sum", s.queue_s);
      add("loom_compute_duration_seconds_sum", s.compute_s);
      add("loom_queue_duration_seconds_count", s.queued);
      add("loom_compute_duration_seconds_count", s.runs);
    }
  }
  return s;
}

struct RunResult {
  int64_t requests = 0, errors = 0;
  double seconds = 0;
  double client_cpu_s = 0;  // CPU time of the client threads (RUSAGE_THREAD)
  std::vector<double> latencies_us;
  std::string first_error;
};

bool IsHttp(const std::string& mode) { return mode.rfind("http-", 0) == 0; }
bool IsGrpc(const std::string& mode) { return mode.rfind("grpc", 0) == 0; }

// One request of `mode` from a client's connection; its error, or OK.
absl::Status CallOnce(const std::string& mode, const Workload& w, Engine* engine, HttpClient& http,
                      pb::GRPCInferenceService::Stub* stub) {
  if (mode == "inprocess") return engine->Infer(w.model, w.inputs).status();
  if (IsHttp(mode)) {
    const bool live = mode == "http-live", binary = mode == "http-binary";
    auto r = live ? http.Send(http::verb::get, "/v2/health/live", "")
                  : http.Send(http::verb::post, "/v2/models/" + w.model + "/infer",
                              binary ? w.binary_body : w.json_body, binary ? w.binary_header : -1);
    if (!r.ok()) return r.status();
    if (r->result_int() != 200) {
      return absl::InternalError(
          absl::StrCat("HTTP ", r->result_int(), ": ", r->body().substr(0, 200)));
    }
    return absl::OkStatus();
  }
  grpc::ClientContext context;
  grpc::Status g;
  if (mode == "grpc-live") {
    pb::ServerLiveResponse response;
    g = stub->ServerLive(&context, pb::ServerLiveRequest(), &response);
  } else {
    pb::ModelInferResponse response;
    g = stub->ModelInfer(&context, w.grpc, &response);
  }
  if (!g.ok())
    return absl::InternalError(absl::StrCat("gRPC ", g.error_code(), ": ", g.error_message()));
  return absl::OkStatus();
}

// `concurrency` closed-loop clients of one mode for `seconds`.
// A gRPC stub on a connection of its own (as a separate program's would be).
std::unique_ptr<pb::GRPCInferenceService::Stub> ClientStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  return pb::GRPCInferenceService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

RunResult RunMode(const std::string& mode, int concurrency, double seconds,
                  const std::vector<Workload>& workloads, Engine* engine,
                  const std::string& http_address, const std::string& grpc_address) {
  std::atomic<bool> stop{false};
  std::mutex mu;
  RunResult total;
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  auto client = [&](size_t which) {
    const Workload& w = workloads[which];
    std::vector<double> latencies;
    int64_t errors = 0;
    std::string error;
    HttpClient http;
    std::unique_ptr<pb::GRPCInferenceService::Stub> stub;
    absl::Status ready = absl::OkStatus();
    if (IsHttp(mode)) ready = http.Connect(http_address);
    if (IsGrpc(mode)) stub = ClientStub(grpc_address);
    const double cpu0 = ThreadCpuSeconds();
    while (ready.ok() && !stop.load(std::memory_order_relaxed)) {
      const auto t0 = Clock::now();
      absl::Status s;
      try {
        s = CallOnce(mode, w, engine, http, stub.get());
      } catch (const std::exception& e) {  // nothing leaves a client thread: an error of the run
        s = absl::InternalError(absl::StrCat(mode, ": ", e.what()));
      }
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (s.ok()) {
        latencies.push_back(us);
      } else {
        ++errors;
        if (error.empty()) error = s.ToString();
        if (errors > 100 && latencies.empty()) break;  // nothing works: stop early, reported
      }
    }
    if (!ready.ok()) {
      ++errors;
      error = ready.ToString();
    }
    const double cpu = ThreadCpuSeconds() - cpu0;
    std::lock_guard<std::mutex> lock(mu);
    total.client_cpu_s += cpu;
    total.latencies_us.insert(total.latencies_us.end(), latencies.begin(), latencies.end());
    total.errors += errors;
    if (total.first_error.empty()) total.first_error = error;
  };
  try {
    for (int c = 0; c < concurrency; ++c) {
      // Clients spread over the models.
      const size_t which = static_cast<size_t>(c) % workloads.size();
      threads.emplace_back([&, which] {
        try {
          client(which);
        } catch (const std::exception& e) {  // never std::terminate: the run reports it
          std::lock_guard<std::mutex> lock(mu);
          ++total.errors;
          if (total.first_error.empty())
            total.first_error = absl::StrCat(mode, " client: ", e.what());
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  } catch (const std::exception& e) {  // a client could not start: stop the others, report it
    std::lock_guard<std::mutex> lock(mu);
    ++total.errors;
    total.first_error =
        absl::StrCat(mode, ": cannot start client ", threads.size() + 1, ": ", e.what());
  }
  stop = true;
  for (auto& t : threads) t.join();
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  total.requests = static_cast<int64_t>(total.latencies_us.size());
  return total;
}

}  // namespace

namespace {

absl::Status CheckOptions(const ServeBenchOptions& o) {
  for (const std::string& m : o.modes) {
    if (m != "inprocess" && m != "http-binary" && m != "http-json" && m != "grpc" &&
        m != "http-live" && m != "grpc-live") {
      return absl::InvalidArgumentError(absl::StrCat(
          "mode '", m,
          "': expected inprocess, http-binary, http-json, grpc, http-live or grpc-live"));
    }
  }
  if (o.repeats < 1 || o.seconds <= 0 || o.concurrency.empty()) {
    return absl::InvalidArgumentError(
        "repeats >= 1, seconds > 0 and at least one concurrency level are needed");
  }
  return absl::OkStatus();
}

// A server of the options' models in this process, as `loom serve` runs it.
struct LocalServer {
  std::unique_ptr<DataPlane> plane;
  Access access;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<GrpcServer> grpc;
};

absl::Status StartLocal(const ServeBenchOptions& o, LocalServer& local) {
  DataPlaneOptions options;
  options.repository = o.repository;
  options.models = o.models;
  options.engine.cores = o.cores;
  LOOM_ASSIGN_OR_RETURN(local.plane, DataPlane::Create(options));
  LOOM_ASSIGN_OR_RETURN(local.http, HttpServer::Start(*local.plane, local.access, {}));
  LOOM_ASSIGN_OR_RETURN(local.grpc, GrpcServer::Start(*local.plane, local.access, {}));
  return absl::OkStatus();
}

ServeBenchRow Summarize(const std::string& mode, int concurrency,
                        const std::vector<RunResult>& runs,
                        const std::vector<ServerSplit>& splits) {
  const double cores = static_cast<double>(UsableCpus().size());
  ServeBenchRow row;
  row.mode = mode;
  row.concurrency = concurrency;
  std::vector<double> tput, p50, p90, p99;
  double machine_s = 0;  // core-seconds the runs had
  double client_cpu_s = 0;
  for (const RunResult& r : runs) {
    row.requests += r.requests;
    row.errors += r.errors;
    client_cpu_s += r.client_cpu_s;
    machine_s += r.seconds * cores;
    tput.push_back(static_cast<double>(r.requests) / r.seconds);
    p50.push_back(Percentile(r.latencies_us, 50));
    p90.push_back(Percentile(r.latencies_us, 90));
    p99.push_back(Percentile(r.latencies_us, 99));
  }
  ServerSplit total;
  for (const ServerSplit& s : splits) {
    total.queue_s += s.queue_s;
    total.queued += s.queued;
    total.compute_s += s.compute_s;
    total.runs += s.runs;
  }
  row.throughput = Median(tput);
  row.p50_us = Median(p50);
  row.p90_us = Median(p90);
  row.p99_us = Median(p99);
  if (mode != "inprocess" && row.requests > 0) {  // in process, the clients' threads run the models
    row.client_cpu_us = client_cpu_s / static_cast<double>(row.requests) * 1e6;
    row.client_cpu_share = machine_s > 0 ? client_cpu_s / machine_s : 0;
  }
  if (total.queued > 0) row.server_queue_us = total.queue_s / total.queued * 1e6;
  if (total.runs > 0) row.server_compute_us = total.compute_s / total.runs * 1e6;
  return row;
}

}  // namespace

absl::StatusOr<ServeBenchReport> RunServeBench(const ServeBenchOptions& o) {
  LOOM_RETURN_IF_ERROR(CheckOptions(o));
  LocalServer local;
  std::string http_address = o.http_address, grpc_address = o.grpc_address;
  ServeBenchReport report;
  std::vector<std::string> names = absl::StrSplit(o.model, ',', absl::SkipEmpty());
  if (http_address.empty()) {
    LOOM_RETURN_IF_ERROR(StartLocal(o, local));
    http_address = absl::StrCat("127.0.0.1:", local.http->port());
    grpc_address = absl::StrCat("127.0.0.1:", local.grpc->port());
    report.plan = local.plane->engine().DescribePlan();
    if (names.empty() && !local.plane->ModelNames().empty()) {
      names.push_back(local.plane->ModelNames().front());
    }
  }
  if (names.empty()) names.push_back("");
  std::vector<Workload> workloads;
  for (const std::string& name : names) {
    LOOM_ASSIGN_OR_RETURN(Workload w, MakeWorkload(http_address, name, o.batch));
    report.model += (report.model.empty() ? "" : ",") + w.model;
    workloads.push_back(std::move(w));
  }
  Engine* engine = local.plane ? &local.plane->engine() : nullptr;
  std::vector<std::string> modes;
  for (const std::string& m : o.modes) {
    if (m == "inprocess" && !engine) continue;  // a running server: no engine here to compare with
    if (IsGrpc(m) && grpc_address.empty()) continue;
    modes.push_back(m);
  }
  // Warm-up: every mode once at the highest concurrency (connections, thread pools, caches).
  const int top = *std::max_element(o.concurrency.begin(), o.concurrency.end());
  for (const std::string& m : modes) {
    RunResult r =
        RunMode(m, top, std::min(0.5, o.seconds), workloads, engine, http_address, grpc_address);
    if (r.requests == 0) {
      return absl::UnavailableError(absl::StrCat(m, ": no request succeeded: ", r.first_error));
    }
  }
  for (int c : o.concurrency) {
    std::map<std::string, std::vector<RunResult>> runs;
    std::map<std::string, std::vector<ServerSplit>> splits;
    for (int rep = 0; rep < o.repeats; ++rep) {
      for (const std::string& m : modes) {  // interleaved: each mode sees the machine as the others
        const ServerSplit before = ReadSplit(http_address, workloads);
        runs[m].push_back(RunMode(m, c, o.seconds, workloads, engine, http_address, grpc_address));
        const ServerSplit after = ReadSplit(http_address, workloads);
        splits[m].push_back({after.queue_s - before.queue_s, after.queued - before.queued,
                             after.compute_s - before.compute_s, after.runs - before.runs});
      }
    }
    for (const std::string& m : modes) report.rows.push_back(Summarize(m, c, runs[m], splits[m]));
  }
  if (local.grpc) local.grpc->Shutdown(std::chrono::milliseconds(100));
  if (local.http) local.http->Stop();
  return report;
}

std::string ServeBenchReport::Format() const {
  std::ostringstream out;
  if (!plan.empty()) out << plan << "\n";
  out << "model " << model
      << ": closed-loop clients; medians of the repeats; ratio and overhead against in-process "
      << "at the same concurrency\n";
  out << absl::StrFormat("%-12s %5s %10s %9s %9s %9s %8s %11s %10s %10s %10s %8s %7s\n", "mode",
                         "conc", "req/s", "p50 us", "p90 us", "p99 us", "x inproc", "p50 +us",
                         "queue us", "compute us", "client us", "client%", "errors");
  std::map<int, const ServeBenchRow*> inprocess;
  for (const ServeBenchRow& r : rows) {
    if (r.mode == "inprocess") inprocess[r.concurrency] = &r;
  }
  for (const ServeBenchRow& r : rows) {
    const bool live =
        r.mode == "http-live" || r.mode == "grpc-live";  // no model runs: nothing to compare
    const auto it = live ? inprocess.end() : inprocess.find(r.concurrency);
    const std::string ratio = it != inprocess.end() && it->second->throughput > 0
                                  ? absl::StrFormat("%.3f", r.throughput / it->second->throughput)
                                  : "-";
    const std::string overhead =
        it != inprocess.end() ? absl::StrFormat("%.1f", r.p50_us - it->second->p50_us) : "-";
    const bool has_client = r.mode != "inprocess";
    out << absl::StrFormat("%-12s %5d %10.1f %9.1f %9.1f %9.1f %8s %11s %10s %10s %10s %8s %7d\n",
                           r.mode, r.concurrency, r.throughput, r.p50_us, r.p90_us, r.p99_us, ratio,
                           overhead, live ? "-" : absl::StrFormat("%.1f", r.server_queue_us),
                           live ? "-" : absl::StrFormat("%.1f", r.server_compute_us),
                           has_client ? absl::StrFormat("%.1f", r.client_cpu_us) : "-",
                           has_client ? absl::StrFormat("%.1f", 100 * r.client_cpu_share) : "-",
                           r.errors);
  }
  out << "queue us: the engine's mean wait per request; compute us: its mean per run (a batch); "
         "both from /metrics "
         "over each mode's runs (in-process runs count there too)\n"
         "client us: the load generator's CPU per answered request; client%: its share of the "
         "cores this process may "
         "use (both pooled over the repeats); http-live, grpc-live: an empty round trip (health), "
         "the transport's own floor\n";
  return out.str();
}

std::string ServeBenchReport::Json() const {
  json rows_json = json::array();
  for (const ServeBenchRow& r : rows) {
    rows_json.push_back({{"mode", r.mode},
                         {"concurrency", r.concurrency},
                         {"requests", r.requests},
                         {"errors", r.errors},
                         {"throughput", r.throughput},
                         {"p50_us", r.p50_us},
                         {"p90_us", r.p90_us},
                         {"p99_us", r.p99_us},
                         {"server_queue_us", r.server_queue_us},
                         {"server_compute_us", r.server_compute_us},
                         {"client_cpu_us", r.client_cpu_us},
                         {"client_cpu_share", r.client_cpu_share}});
  }
  return json({{"model", model}, {"rows", rows_json}}).dump(2);
}

}  // namespace loom::serve
