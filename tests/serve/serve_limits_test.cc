// `loom serve`'s bounds: JSON tensors read in one pass into their buffers (and a second one only
// for data that comes before its shape), BYTES without an object per element, the shared
// in-flight budget over HTTP and gRPC, and connections that cost a socket, not a thread: a
// thousand idle ones, the cap with its eviction of the longest idle, the header timeout, and a
// client that goes away having its queued request dropped.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpc_service.grpc.pb.h"
#include "runtime/synthetic_models.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/http_server.h"
#include "serve/json_tensors.h"
#include "tests/held_workers.h"
#include "tests/serve/serve_util.h"
#include "tests/test_util.h"

namespace loom::serve {
namespace {

using json = nlohmann::json;
namespace pb = inference;
using Clock = std::chrono::steady_clock;

constexpr const char* kGoodJson =
    R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})";

// A POST on the wire; `close`: the last request of its connection.
std::string HttpPost(const std::string& target, const std::string& body, bool close = true) {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         (close ? "Connection: close\r\n" : "") + "Content-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

TEST(JsonTensors, DataIsDecodedIntoItsTensorAndCharged) {
  ServeLimits limits;
  InflightBudget budget(1 << 20);
  InflightBudget::Charge charge = budget.Open();
  auto r = ParseJsonRequest(
      R"({"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]})",
      limits, &charge);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->decoded.count(0), 1u);
  const float* x = r->decoded[0].tensor.data_as<float>();
  EXPECT_EQ(x[0], 1.f);
  EXPECT_EQ(x[3], 4.5f);
  EXPECT_TRUE(r->header["inputs"][0]["data"].is_null());
  EXPECT_EQ(charge.bytes(), 16);
}

TEST(JsonTensors, DataBeforeItsShapeIsReadInASecondPass) {
  ServeLimits limits;
  InflightBudget budget(1 << 20);
  InflightBudget::Charge charge = budget.Open();
  auto r =
      ParseJsonRequest(R"({"inputs":[{"data":[7,8,9],"name":"x","datatype":"INT32","shape":[3]},)"
                       R"({"name":"s","datatype":"BYTES","shape":[3],"data":["a","bc",""]}]})",
                       limits, &charge);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decoded[0].tensor.data_as<int32_t>()[2], 9);
  // BYTES: the elements in one buffer, the protocol's length-prefixed form.
  const WireTensor& s = r->decoded[1];
  EXPECT_EQ(s.bytes.size(), 3u * 4 + 3);
  std::vector<std::string> elements;
  ForEachBytesElement(s.bytes, [&](std::string_view e) { elements.emplace_back(e); });
  EXPECT_EQ(elements, (std::vector<std::string>{"a", "bc", ""}));
}

TEST(JsonTensors, HostileShapesAreRefusedBeforeAnythingIsMade) {
  ServeLimits limits;
  InflightBudget budget(1 << 20);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","shape":[2],"data":[1]}]})",
       "twice"},
      {R"({"inputs":[{"name":"x","shape":[100000000],"datatype":"FP32","data":[1]}]})",
       "too small"},
      {R"({"inputs":[{"name":"x","shape":[3],"datatype":"UINT8","data":[1,-2,3]}]})", "range"},
      {R"({"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,"a"]}]})", "element 1"},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[{"a":1}]}]})", "array"},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":5}]})", "array"},
      {R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x)", "not valid JSON"},
      {"{\"p\":" + std::string(100, '[') + std::string(100, ']') + "}", "nested"},
  };
  for (const auto& [text, message] : cases) {
    SCOPED_TRACE(text.substr(0, 80));
    InflightBudget::Charge charge = budget.Open();
    auto r = ParseJsonRequest(text, limits, &charge);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.status().message()).find(message), std::string::npos) << r.status();
  }
  // A hundred thousand values outside the data: refused, not built.
  std::string many = R"({"parameters":{"x":[)";
  for (int i = 0; i < 100000; ++i) many += i ? ",0" : "0";
  many += "]}}";
  InflightBudget::Charge charge = budget.Open();
  EXPECT_FALSE(ParseJsonRequest(many, limits, &charge).ok());
  EXPECT_EQ(budget.used(), 0);
}

// A server of the Add model with `limits`, its routes and both front ends on loopback.
struct Served {
  explicit Served(ServeLimits limits, bool face = false) {
    EXPECT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
    DataPlaneOptions options;
    options.models = {{"add", dir.Path("add.onnx")}};
    if (face)
      options.models.push_back({"face", loom::testing::ModelPath(loom::testing::kBlazeFaceFront)});
    options.engine.measure_runs = 1;
    options.limits = limits;
    auto p = DataPlane::Create(options);
    EXPECT_TRUE(p.ok()) << p.status();
    plane = std::move(*p);
    auto h = HttpServer::Start(*plane, access, {});
    EXPECT_TRUE(h.ok()) << h.status();
    http = std::move(*h);
    auto g = GrpcServer::Start(*plane, access, {});
    EXPECT_TRUE(g.ok()) << g.status();
    grpc_server = std::move(*g);
  }
  std::string Health() {
    return testing::RawHttp(http->port(),
                            "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  std::string Infer() {
    return testing::RawHttp(http->port(), HttpPost("/v2/models/add/infer", kGoodJson));
  }

  loom::testing::ScratchDir dir;
  std::unique_ptr<DataPlane> plane;
  Access access;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<GrpcServer> grpc_server;
};

TEST(Budget, RequestsOverTheInflightBudgetAre503AndResourceExhausted) {
  ServeLimits limits;
  limits.max_inflight_bytes = 64 << 10;
  Served s(limits);
  const std::string header =
      R"({"inputs":[{"name":"x","shape":[25000,4],"datatype":"FP32","parameters":{"binary_data_size":400000}}]})";
  std::string request =
      "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: " +
      std::to_string(header.size()) +
      "\r\nContent-Length: " + std::to_string(header.size() + 400000) + "\r\n\r\n" + header +
      std::string(400000, '\0');
  const std::string r = testing::RawHttp(s.http->port(), request);
  EXPECT_EQ(r.rfind("HTTP/1.1 503", 0), 0u) << r.substr(0, 300);
  EXPECT_NE(r.find("--max-inflight-mib"), std::string::npos) << r.substr(0, 300);
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(s.grpc_server->port()), grpc::InsecureChannelCredentials()));
  pb::ModelInferRequest m;
  m.set_model_name("add");
  auto* in = m.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(25000);
  in->add_shape(4);
  m.add_raw_input_contents(std::string(400000, '\0'));
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  EXPECT_EQ(stub->ModelInfer(&context, m, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.Infer().find("200 OK"), std::string::npos);  // small ones go on
  EXPECT_EQ(s.plane->budget().used(), 0);
}

TEST(Budget, GrpcRepeatedFieldsAreCountedBeforeProtobufParsesThem) {
  Served s({});
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(s.grpc_server->port()), grpc::InsecureChannelCredentials()));
  pb::ModelInferRequest m;
  m.set_model_name("add");
  for (int i = 0; i < 10000; ++i) m.add_raw_input_contents("");  // 2 bytes each on the wire
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  const grpc::Status st = stub->ModelInfer(&context, m, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("raw inputs"), std::string::npos) << st.error_message();
}

TEST(Budget, ManyGrpcBytesElementsAreChargedBeforeTheyAreParsed) {
  ServeLimits limits;
  limits.max_inflight_bytes = 32 << 20;
  Served s(limits);
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(s.grpc_server->port()), grpc::InsecureChannelCredentials()));
  // A million empty BYTES elements: 2 MB on the wire, a string object each once parsed.
  pb::ModelInferRequest m;
  m.set_model_name("add");
  auto* in = m.add_inputs();
  in->set_name("x");
  in->set_datatype("BYTES");
  in->add_shape(1 << 20);
  auto* contents = in->mutable_contents()->mutable_bytes_contents();
  contents->Reserve(1 << 20);
  for (int i = 0; i < (1 << 20); ++i) contents->Add();
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  const grpc::Status st = stub->ModelInfer(&context, m, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-inflight-mib"), std::string::npos) << st.error_message();
  EXPECT_EQ(s.plane->budget().used(), 0);
}

TEST(Connections, ASilentGrpcConnectionIsClosedAtTheHandshakeTimeout) {
  ServeLimits limits;
  limits.header_timeout_ms = 200;
  Served s(limits);
  const int fd = testing::Connect(s.grpc_server->port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(testing::ReadAll(fd, 30).find("<no answer"), std::string::npos);  // closed by gRPC
  ::close(fd);
}

// Raises this process's descriptor limit to `n` if the hard limit allows; false otherwise.
bool RaiseFileLimit(rlim_t n) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return false;
  if (r.rlim_cur >= n) return true;
  if (r.rlim_max < n) return false;
  r.rlim_cur = n;
  return setrlimit(RLIMIT_NOFILE, &r) == 0;
}

// Connections: `n` sockets connected, each having sent `first` (nothing: idle), once the server
// has accepted every one of them and holds `expected`.
std::vector<int> OpenIdle(Served& s, int n, int expected, const std::string& first = "") {
  std::vector<int> fds;
  const int64_t before = s.http->accepted();
  for (int i = 0; i < n; ++i) {
    const int fd = testing::Connect(s.http->port());
    if (fd < 0) continue;
    if (!first.empty()) ::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
    fds.push_back(fd);
  }
  const auto until = Clock::now() + std::chrono::seconds(30);
  while ((s.http->accepted() < before + static_cast<int64_t>(fds.size()) ||
          s.http->connections() < expected) &&
         Clock::now() < until) {
    std::this_thread::yield();
  }
  return fds;
}

TEST(Connections, AThousandIdleSocketsCostNoThreadAndHealthAndInferenceGoOn) {
  if (!RaiseFileLimit(4096)) GTEST_SKIP() << "the file descriptor limit cannot reach 4096";
  ServeLimits limits;
  limits.header_timeout_ms = 60000;  // the idle sockets stay for the test
  Served s(limits);
  const int threads = testing::ThreadCount();
  std::vector<int> fds = OpenIdle(s, 1000, 1000);
  EXPECT_GE(s.http->connections(), 1000);
  EXPECT_LE(testing::ThreadCount(), threads + 1);
  // Health is answered while the thousand are held (how fast is `loom bench`'s business).
  const std::string health = s.Health();
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(s.Infer().find("200 OK"), std::string::npos);
  for (int fd : fds) ::close(fd);
}

TEST(Connections, AtTheCapTheLongestIdleConnectionMakesRoom) {
  if (!RaiseFileLimit(1024)) GTEST_SKIP() << "the file descriptor limit cannot reach 1024";
  ServeLimits limits;
  limits.max_connections = 32;
  limits.header_timeout_ms = 60000;
  Served s(limits);
  std::vector<int> fds = OpenIdle(s, 200, 32);
  // Idle ones are closed to make room (each no longer counted once chosen).
  EXPECT_EQ(s.http->connections(), 32);
  const std::string health = s.Health(), infer = s.Infer();
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(infer.find("200 OK"), std::string::npos) << infer;
  for (int fd : fds) ::close(fd);
}

TEST(Connections, SlowHeaderSendersAtTheCapLeaveRoomForHealthAndInference) {
  if (!RaiseFileLimit(1024)) GTEST_SKIP() << "the file descriptor limit cannot reach 1024";
  ServeLimits limits;
  limits.max_connections = 16;
  limits.header_timeout_ms = 60000;
  Served s(limits);
  // Each sends the start of a header, then nothing: the cap and the limited ones are full.
  std::vector<int> fds = OpenIdle(s, 16 + 64 + 20, 16, "GET /v2/health/live HTTP/1.1\r\nHo");
  const std::string health = s.Health(), infer = s.Infer();
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(infer.find("200 OK"), std::string::npos) << infer;
  for (int fd : fds) ::close(fd);
}

TEST(Connections, SlowBodySendersAtTheCapLeaveRoomForInference) {
  if (!RaiseFileLimit(1024)) GTEST_SKIP() << "the file descriptor limit cannot reach 1024";
  ServeLimits limits;
  limits.max_connections = 8;
  limits.read_timeout_ms = 60000;
  limits.body_rate_grace_ms = 0;  // judged on their rate at once
  Served s(limits);
  // Each announces a large body and sends a few bytes of it: far under the rate floor.
  std::vector<int> fds = OpenIdle(s, 8 + 64 + 8, 8,
                                  "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: application/json\r\nContent-Length: 1000000\r\n"
                                  "\r\n{\"inputs\"");
  const std::string health = s.Health(), infer = s.Infer();
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(infer.find("200 OK"), std::string::npos) << infer;
  for (int fd : fds) ::close(fd);
}

TEST(Connections, AnAcceptOutOfDescriptorsBacksOffAndAcceptsAgain) {
  Served s(ServeLimits{});
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // Few descriptors left: the clients' sockets and the server's take them all.
  int open_now = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) open_now += e.exists();
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(open_now + 40);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fds;
  for (int i = 0; i < 30; ++i) {
    const int fd = testing::Connect(s.http->port());
    if (fd >= 0) fds.push_back(fd);
  }
  // The server runs out while accepting them (10 descriptors are left to it): it backs off,
  // closing idle ones to make room, and so accepts them all.
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (s.http->accepted() < static_cast<int64_t>(fds.size()) && Clock::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(s.http->accepted(), static_cast<int64_t>(fds.size()));
  for (int fd : fds) ::close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  std::string health;
  for (int i = 0; i < 50 && health.find("200 OK") == std::string::npos; ++i) health = s.Health();
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(s.Infer().find("200 OK"), std::string::npos);
}

TEST(Connections, AGrpcListenerThatStopsMakesLivenessFail) {
  // gRPC (1.51) stops accepting for good when accept4 fails: liveness says so, and the process
  // can be restarted.
  Served s(ServeLimits{});
  EXPECT_NE(s.Health().find("200 OK"), std::string::npos);
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  int open_now = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) open_now += e.exists();
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(open_now + 40);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> fds;
  for (int i = 0; i < 60; ++i) {
    const int fd = testing::Connect(s.grpc_server->port());
    if (fd >= 0) fds.push_back(fd);
  }
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (s.plane->Live() && Clock::now() < until) std::this_thread::yield();
  for (int fd : fds) ::close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_FALSE(s.plane->Live());
  EXPECT_FALSE(s.plane->Ready());
  const std::string health = s.Health();
  EXPECT_EQ(health.rfind("HTTP/1.1 503", 0), 0u) << health;
  EXPECT_NE(health.find("gRPC stopped accepting"), std::string::npos) << health;
}

TEST(Grpc, ACompressedMessageIsRefusedBeforeItIsInflated) {
  Served s(ServeLimits{});
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(s.grpc_server->port()), grpc::InsecureChannelCredentials()));
  pb::ModelInferRequest m;
  m.set_model_name("add");
  auto* in = m.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(4);
  m.add_raw_input_contents(std::string(16, '\0'));
  grpc::ClientContext context;
  context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  pb::ModelInferResponse response;
  const grpc::Status st = stub->ModelInfer(&context, m, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
  grpc::ClientContext plain;
  EXPECT_TRUE(stub->ModelInfer(&plain, m, &response).ok());
}

TEST(Chunked, ATrailerOverTheLimitIs431AndTheBufferStaysBounded) {
  Served s(ServeLimits{});
  std::string request =
      "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
      absl::StrCat(absl::Hex(std::string(kGoodJson).size())) + "\r\n" + kGoodJson + "\r\n0\r\n";
  for (int i = 0; i < 20000; ++i) request += "X-Pad: " + std::string(40, 'a') + "\r\n";
  request += "\r\n";
  const std::string r = testing::RawHttp(s.http->port(), request);
  EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r.substr(0, 300);
  // A chunked request with a small trailer is answered.
  const std::string good =
      "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
      absl::StrCat(absl::Hex(std::string(kGoodJson).size())) + "\r\n" + kGoodJson +
      "\r\n0\r\nX-Note: fine\r\n\r\n";
  const std::string ok = testing::RawHttp(s.http->port(), good);
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok.substr(0, 300);
}

TEST(Framing, AmbiguousRequestsAreRefusedWithTheirReason) {
  Served s(ServeLimits{});
  const std::string body = kGoodJson;
  auto post = [&](const std::string& fields, const std::string& rest) {
    return testing::RawHttp(s.http->port(), "POST /v2/models/add/infer HTTP/1.1\r\n" + fields +
                                                "Connection: close\r\n\r\n" + rest);
  };
  const std::string chunk = absl::StrCat(absl::Hex(body.size())) + "\r\n" + body + "\r\n0\r\n\r\n";
  // Only chunked is a transfer coding this server reads.
  std::string r = post(
      "Host: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n", chunk);
  EXPECT_EQ(r.rfind("HTTP/1.1 501", 0), 0u) << r.substr(0, 300);
  // A chunked body needs the Content-Type too.
  r = post("Host: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n", chunk);
  EXPECT_EQ(r.rfind("HTTP/1.1 415", 0), 0u) << r.substr(0, 300);
  // A chunk size that is not a number is a 400, not a silent close.
  r = post("Host: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
           "zz\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
  // Host (or Origin) twice: which one would a check read?
  r = post("Host: x\r\nHost: y\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n",
           body);
  EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
  EXPECT_NE(r.find("more than once"), std::string::npos) << r.substr(0, 300);
  EXPECT_NE(s.Infer().find("200 OK"), std::string::npos);
}

TEST(Connections, ASilentConnectionIsClosedAtTheHeaderTimeout) {
  ServeLimits limits;
  limits.header_timeout_ms = 200;
  Served s(limits);
  const int fd = testing::Connect(s.http->port());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(testing::ReadAll(fd, 30), "");  // closed by the server, not by the 30 s wait
  ::close(fd);
  const int slow = testing::Connect(s.http->port());
  ASSERT_GE(slow, 0);
  ::send(slow, "GET /v2/health/live HTTP/1.1\r\n", 30, MSG_NOSIGNAL);
  EXPECT_EQ(testing::ReadAll(slow, 30), "");
  ::close(slow);
  EXPECT_NE(s.Health().find("200 OK"), std::string::npos);
}

TEST(Connections, PipelinedRequestsAreAnsweredInOrder) {
  Served s({});
  const std::string two = HttpPost("/v2/models/add/infer", kGoodJson, /*close=*/false) +
                          "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const std::string r = testing::RawHttp(s.http->port(), two);
  const size_t first = r.find("HTTP/1.1 200");
  ASSERT_NE(first, std::string::npos) << r;
  EXPECT_NE(r.find("\"live\":true", first), std::string::npos) << r;
  EXPECT_LT(r.find("model_name"), r.find("\"live\""));
}

TEST(Connections, AClientThatGoesAwayHasItsQueuedRequestDropped) {
  Served s({}, /*face=*/true);
  auto meta = s.plane->Metadata("face", "");
  ASSERT_TRUE(meta.ok()) << meta.status();
  Shape shape(meta->inputs[0].shape.begin(), meta->inputs[0].shape.end());
  for (int64_t& d : shape) d = std::max<int64_t>(d, 1);
  Tensor zeros = Tensor::Allocate(DType::kFloat32, shape);
  const ModelStats before = *s.plane->engine().Stats("face");
  const int64_t abandoned_before = s.plane->abandoned(/*grpc=*/false);
  // The workers are held, so the HTTP requests wait in the queue until they are released.
  std::optional<loom::testing::HeldWorkers> workers(std::in_place, s.plane->engine());
  ASSERT_TRUE(workers->held());
  json header = {{"inputs",
                  {{{"name", meta->inputs[0].name},
                    {"shape", shape},
                    {"datatype", "FP32"},
                    {"parameters", {{"binary_data_size", zeros.byte_size()}}}}}}};
  const std::string h = header.dump();
  const std::string body = h + std::string(zeros.byte_size(), '\0');
  const std::string request =
      "POST /v2/models/face/infer HTTP/1.1\r\nHost: x\r\n"
      "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: " +
      std::to_string(h.size()) + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
      body;
  constexpr int kClients = 8;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = testing::Connect(s.http->port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    fds.push_back(fd);
  }
  // The clients go away once every request is queued; the workers come back once the server
  // has seen every one go.
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (s.plane->engine().Stats("face")->queued < kClients && Clock::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(s.plane->engine().Stats("face")->queued, kClients);
  for (int fd : fds) ::close(fd);
  while (s.plane->abandoned(/*grpc=*/false) < abandoned_before + kClients && Clock::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(s.plane->abandoned(/*grpc=*/false), abandoned_before + kClients);
  workers.reset();
  ASSERT_TRUE(s.plane->WaitIdle(std::chrono::seconds(30)));
  const ModelStats after = *s.plane->engine().Stats("face");
  EXPECT_EQ(after.cancelled - before.cancelled, kClients);  // every one dropped from the queue
  EXPECT_EQ(after.successes, before.successes);             // none ran
  EXPECT_NE(s.Infer().find("200 OK"), std::string::npos);
}

}  // namespace
}  // namespace loom::serve
