// `loom serve`'s server in process: the routes and every kind of bad request, answered
// with the right status and a message while the server goes on serving; limits over real sockets
// (oversized body, oversized header, a very slow client); gRPC typed and raw tensors and its status
// codes; and a seeded mutation fuzzer over valid HTTP and gRPC requests on loopback.
//
// LOOM_FUZZ_REQUESTS sets the fuzzer's request count (default 10,000 over HTTP and gRPC together);
// scripts/fuzz_serve runs it with 100,000 under ASan+UBSan.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "grpc_service.grpc.pb.h"
#include "runtime/synthetic_models.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/http_server.h"
#include "serve/routes.h"
#include "tests/held_workers.h"
#include "tests/serve/serve_util.h"
#include "tests/test_util.h"

namespace loom::serve {
namespace {

using json = nlohmann::json;
namespace pb = inference;
using testing::Head;

// One server for the whole suite: an Add model (y = x + 1, [N, 4] f32) and BlazeFace.
class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new loom::testing::ScratchDir();
    std::filesystem::create_directories(dir_->Path("repo/add"));
    ASSERT_TRUE(WriteAddModel(dir_->Path("repo/add/model.onnx"), 4).ok());
    // A fixed max_batch_size: an auto one is measured, and a loaded machine may make it 1.
    dir_->Write("repo/add/config.yaml", "max_batch_size: 8\n");
    DataPlaneOptions options;
    options.repository = dir_->Path("repo");
    options.models = {{"face", loom::testing::ModelPath(loom::testing::kBlazeFaceFront)}};
    options.engine.measure_runs = 1;
    options.limits.max_body_bytes = 1 << 20;
    options.limits.max_header_bytes = 4096;
    options.limits.read_timeout_ms = 500;
    options.limits.header_timeout_ms = 500;
    auto plane = DataPlane::Create(options);
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = plane->release();
    access_ = new Access();
    routes_ = new HttpRoutes(*plane_, *access_, Listener::kMain);
    auto http = HttpServer::Start(*plane_, *access_, {});
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = http->release();
    auto grpc = GrpcServer::Start(*plane_, *access_, {});
    ASSERT_TRUE(grpc.ok()) << grpc.status();
    grpc_ = grpc->release();
  }
  static void TearDownTestSuite() {
    delete grpc_;
    delete http_;
    delete routes_;
    delete access_;
    delete plane_;
    delete dir_;
  }

  static HttpResponse Post(const std::string& target, const std::string& body,
                           std::optional<std::string> header_length = std::nullopt) {
    HttpRequestHead head =
        Head("POST", target, header_length ? "application/octet-stream" : "application/json");
    head.header_length = std::move(header_length);
    return HandleHttp(*routes_, head, body);
  }
  static HttpResponse Get(const std::string& target) {
    return HandleHttp(*routes_, Head("GET", target), "");
  }
  static std::string ErrorOf(const HttpResponse& r) {
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") ? j["error"].get<std::string>()
                                                : "<no error field: " + r.body + ">";
  }
  // The server still answers a good request correctly.
  static void ExpectStillServing() {
    const HttpResponse r = Post("/v2/models/add/infer", kGoodJson);
    ASSERT_EQ(r.status, 200) << r.body;
    json j = json::parse(r.body);
    EXPECT_EQ(j["outputs"][0]["data"], json({2.0, 3.0, 4.0, 5.0}));
  }

  static std::unique_ptr<pb::GRPCInferenceService::Stub> Stub() {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_->port()),
                                       grpc::InsecureChannelCredentials());
    return pb::GRPCInferenceService::NewStub(channel);
  }

  static std::string RawHttp(const std::string& bytes, int chunk = 0, int pause_ms = 0,
                             bool half_close = false) {
    return testing::RawHttp(http_->port(), bytes, chunk, pause_ms, half_close);
  }

  static inline const std::string kGoodJson =
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})";
  static inline loom::testing::ScratchDir* dir_ = nullptr;
  static inline DataPlane* plane_ = nullptr;
  static inline Access* access_ = nullptr;
  static inline HttpRoutes* routes_ = nullptr;
  static inline HttpServer* http_ = nullptr;
  static inline GrpcServer* grpc_ = nullptr;
};

TEST_F(Server, HealthMetadataAndInferInJson) {
  EXPECT_EQ(Get("/v2/health/live").status, 200);
  EXPECT_EQ(Get("/v2/health/ready").status, 200);
  json server = json::parse(Get("/v2").body);
  EXPECT_EQ(server["name"], "loom");
  EXPECT_TRUE(server["extensions"].is_array());
  json meta = json::parse(Get("/v2/models/add").body);
  EXPECT_EQ(meta["inputs"][0]["name"], "x");
  EXPECT_EQ(meta["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 4}));  // the dynamic batch is -1
  EXPECT_EQ(Get("/v2/models/add/versions/1").status, 200);
  EXPECT_EQ(Get("/v2/models/add/ready").status, 200);
  ExpectStillServing();
  // Several rows, and the request's id echoed.
  const HttpResponse r = Post(
      "/v2/models/add/infer",
      R"({"id":"r7","inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[0,0,0,0],[1,1,1,1]]}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["id"], "r7");
  EXPECT_EQ(j["outputs"][0]["shape"], json({2, 4}));
  EXPECT_EQ(j["outputs"][0]["data"], json({1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0}));
}

TEST_F(Server, BinaryTensorsInAndOut) {
  const float x[4] = {1.5f, 2.5f, 3.5f, 4.5f};
  const std::string header =
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],)"
      R"("outputs":[{"name":"y","parameters":{"binary_data":true}}]})";
  const std::string body = header + std::string(reinterpret_cast<const char*>(x), sizeof(x));
  const HttpResponse r = Post("/v2/models/add/infer", body, std::to_string(header.size()));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_GE(r.header_length, 0);
  json j = json::parse(r.body.substr(0, static_cast<size_t>(r.header_length)));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 16);
  ASSERT_EQ(r.body.size(), static_cast<size_t>(r.header_length) + 16);
  float y[4];
  std::memcpy(y, r.body.data() + r.header_length, sizeof(y));
  EXPECT_EQ(y[0], 2.5f);
  EXPECT_EQ(y[3], 5.5f);
}

TEST_F(Server, EveryBadRequestIsAnsweredWithItsStatusAndTheServerGoesOn) {
  struct Case {
    const char* what;
    std::string target, body;
    std::optional<std::string> header_length;
    int status;
    const char* message;  // a part of the error
  };
  const std::string x16(16, '\0');
  const std::vector<Case> cases = {
      {"malformed JSON", "/v2/models/add/infer", R"({"inputs":[)", {}, 400, "not valid JSON"},
      {"empty body", "/v2/models/add/infer", "", {}, 400, "not valid JSON"},
      {"unknown model", "/v2/models/nope/infer", kGoodJson, {}, 404, "unknown model 'nope'"},
      {"unknown version", "/v2/models/add/versions/9/infer", kGoodJson, {}, 404, "version 9"},
      {"unknown input",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
       {},
       400,
       "'z'"},
      {"unknown output",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"q"}]})",
       {},
       400,
       "'q'"},
      {"wrong datatype name",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FLOAT32","data":[1,2,3,4]}]})",
       {},
       400,
       "FLOAT32"},
      {"datatype the model does not take",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]})",
       {},
       400,
       "x"},
      {"shape vs data length",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]})",
       {},
       400,
       "x"},
      {"negative dim",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
       {},
       400,
       "x"},
      {"overflowing dims",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[4294967296,4294967296,4],"datatype":"FP32","data":[1]}]})",
       {},
       400,
       "x"},
      {"rank over the limit",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,1,1,1,1,1,1,1,1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
       {},
       400,
       "at most 8 dims"},
      {"duplicate inputs",
       "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
       {},
       400,
       "x"},
      {"binary header length beyond the body", "/v2/models/add/infer", kGoodJson, "100000", 400,
       "Inference-Header-Content-Length"},
      {"binary header length not a number", "/v2/models/add/infer", kGoodJson, "12x", 400,
       "Inference-Header-Content-Length"},
      {"binary size that lies", "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":64}}]})" +
           x16,
       std::to_string(
           std::string(
               R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":64}}]})")
               .size()),
       400, "x"},
      {"binary size vs shape", "/v2/models/add/infer",
       R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":8}}]})" +
           x16,
       std::to_string(
           std::string(
               R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":8}}]})")
               .size()),
       400, "x"},
      {"deep JSON",
       "/v2/models/add/infer",
       std::string(200, '[') + std::string(200, ']'),
       {},
       400,
       "nested"},
      {"a non-v2 path", "/v1/models/add:predict", kGoodJson, {}, 404, "no route"},
      {"inputs not an array", "/v2/models/add/infer", R"({"inputs":{"x":1}})", {}, 400, "inputs"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const HttpResponse r = Post(c.target, c.body, c.header_length);
    EXPECT_EQ(r.status, c.status) << r.body;
    EXPECT_NE(ErrorOf(r).find(c.message), std::string::npos) << ErrorOf(r);
  }
  EXPECT_EQ(HandleHttp(*routes_, Head("DELETE", "/v2/models/add"), "").status, 405);
  ExpectStillServing();
}

TEST_F(Server, OverLimitsOnTheWireAreRefusedAndNamed) {
  // A body over max_body_bytes (1 MiB here): 413, nothing of it read into memory.
  std::string big =
      "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 2000000\r\n\r\n";
  big += std::string(2000000, ' ');
  std::string r = RawHttp(big);
  EXPECT_NE(r.find("413"), std::string::npos) << r.substr(0, 200);
  EXPECT_NE(r.find("max_body_bytes"), std::string::npos);
  // A header over max_header_bytes: 431.
  r = RawHttp("GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n");
  EXPECT_NE(r.find("431"), std::string::npos) << r.substr(0, 200);
  // Not HTTP at all: 400.
  r = RawHttp("\x01\x02\x03 garbage\r\n\r\n");
  EXPECT_NE(r.find("400"), std::string::npos) << r.substr(0, 200);
  ExpectStillServing();
}

TEST_F(Server, AVerySlowClientIsCutOffAndHoldsNoWorker) {
  // One byte every 100 ms against a read timeout of 500 ms for the whole request: the connection
  // is closed before the request is complete, and the server answers others meanwhile.
  const std::string request =
      "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(40, 'a') + "\r\n\r\n";
  std::thread slow([&] {
    const std::string r = RawHttp(request, 1, 100);
    EXPECT_EQ(r.find("200 OK"), std::string::npos) << "a request trickled over 5 s was answered";
  });
  // A client that sends half a header and then nothing: closed by the server at the deadline
  // (500 ms), long before this client's own 5 s receive timeout.
  EXPECT_EQ(RawHttp("GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"), "");
  const std::string fast =
      RawHttp("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(fast.find("200"), std::string::npos);
  slow.join();
  ExpectStillServing();
}

TEST_F(Server, GrpcTypedAndRawTensorsAndStatusCodes) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    pb::ServerLiveResponse live;
    ASSERT_TRUE(stub->ServerLive(&context, pb::ServerLiveRequest(), &live).ok());
    EXPECT_TRUE(live.live());
  }
  {
    grpc::ClientContext context;
    pb::ModelMetadataRequest request;
    request.set_name("face");
    pb::ModelMetadataResponse meta;
    ASSERT_TRUE(stub->ModelMetadata(&context, request, &meta).ok());
    ASSERT_EQ(meta.inputs_size(), 1);
    EXPECT_EQ(meta.inputs(0).datatype(), "FP32");
    EXPECT_EQ(meta.outputs_size(), 4);
  }
  auto infer = [&](const pb::ModelInferRequest& request, pb::ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->ModelInfer(&context, request, response);
  };
  pb::ModelInferRequest request;
  request.set_model_name("add");
  auto* in = request.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(4);
  for (float v : {1.f, 2.f, 3.f, 4.f}) in->mutable_contents()->add_fp32_contents(v);
  pb::ModelInferResponse response;
  grpc::Status s = infer(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  float y[4];
  ASSERT_EQ(response.raw_output_contents(0).size(), sizeof(y));
  std::memcpy(y, response.raw_output_contents(0).data(), sizeof(y));
  EXPECT_EQ(y[0], 2.f);
  EXPECT_EQ(y[3], 5.f);

  // Raw contents of the wrong size: INVALID_ARGUMENT naming the input.
  pb::ModelInferRequest raw = request;
  raw.mutable_inputs(0)->clear_contents();
  raw.add_raw_input_contents(std::string(12, '\0'));
  s = infer(raw, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("'x'"), std::string::npos) << s.error_message();
  // Unknown model: NOT_FOUND.
  pb::ModelInferRequest unknown = request;
  unknown.set_model_name("nope");
  EXPECT_EQ(infer(unknown, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  // Typed contents of another type than the datatype: INVALID_ARGUMENT.
  pb::ModelInferRequest mixed = request;
  mixed.mutable_inputs(0)->mutable_contents()->add_int64_contents(1);
  EXPECT_EQ(infer(mixed, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A message over max_body_bytes (1 MiB): RESOURCE_EXHAUSTED from gRPC itself.
  pb::ModelInferRequest huge = request;
  huge.mutable_inputs(0)->clear_contents();
  huge.add_raw_input_contents(std::string(2 << 20, '\0'));
  EXPECT_EQ(infer(huge, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Still serving.
  s = infer(request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// One row of zeros for `model`'s first input, as a gRPC inference request.
pb::ModelInferRequest ZerosRequest(DataPlane& plane, const std::string& model) {
  auto meta = plane.Metadata(model, "");
  EXPECT_TRUE(meta.ok()) << meta.status();
  pb::ModelInferRequest request;
  if (!meta.ok()) return request;
  request.set_model_name(model);
  auto* in = request.add_inputs();
  in->set_name(meta->inputs[0].name);
  in->set_datatype("FP32");
  int64_t elements = 1;
  for (int64_t d : meta->inputs[0].shape) {
    in->add_shape(std::max<int64_t>(d, 1));  // one row of a dynamic batch dim
    elements *= std::max<int64_t>(d, 1);
  }
  request.add_raw_input_contents(std::string(static_cast<size_t>(elements) * sizeof(float), '\0'));
  return request;
}

// `calls` inference calls that the client cancels once the engine holds every one of them
// queued (its workers must be held meanwhile). Each call is answered CANCELLED to the client;
// returns once the server has seen every cancel, so that each request is marked cancelled.
void QueueThenCancel(DataPlane& plane, int port, const pb::ModelInferRequest& request, int calls) {
  auto stub = pb::GRPCInferenceService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  const std::string& model = request.model_name();
  const int64_t queued_before = plane.engine().Stats(model)->queued;
  const int64_t abandoned_before = plane.abandoned(/*grpc=*/true);
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<pb::ModelInferResponse> responses(static_cast<size_t>(calls));
  std::vector<grpc::Status> statuses(static_cast<size_t>(calls));
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<pb::ModelInferResponse>>> readers;
  for (int i = 0; i < calls; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    readers.push_back(stub->AsyncModelInfer(contexts.back().get(), request, &cq));
    readers.back()->Finish(&responses[static_cast<size_t>(i)], &statuses[static_cast<size_t>(i)],
                           reinterpret_cast<void*>(static_cast<intptr_t>(i)));
  }
  // A thread takes the answers (polling the queue also moves the calls' bytes).
  std::atomic<int> answered{0};
  std::thread answers([&] {
    void* tag;
    bool got;
    while (answered < calls && cq.Next(&tag, &got)) {
      const grpc::Status& st = statuses[static_cast<size_t>(reinterpret_cast<intptr_t>(tag))];
      EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED) << st.error_message();
      ++answered;
    }
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (plane.engine().Stats(model)->queued < queued_before + calls &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(plane.engine().Stats(model)->queued, queued_before + calls);
  for (auto& c : contexts) c->TryCancel();
  answers.join();
  EXPECT_EQ(answered, calls);
  while (plane.abandoned(/*grpc=*/true) < abandoned_before + calls &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  EXPECT_EQ(plane.abandoned(/*grpc=*/true), abandoned_before + calls);
}

// Calls cancelled by their client while their requests wait in the engine's queue are dropped
// there (counted as cancelled, never run); every call is answered and the server goes on.
TEST_F(Server, CancelledGrpcCallsAreDroppedFromTheQueue) {
  const pb::ModelInferRequest request = ZerosRequest(*plane_, "face");
  const ModelStats before = *plane_->engine().Stats("face");
  constexpr int kCalls = 16;
  {
    loom::testing::HeldWorkers workers(plane_->engine());  // the calls wait in the queue
    ASSERT_TRUE(workers.held());
    QueueThenCancel(*plane_, grpc_->port(), request, kCalls);
  }
  ASSERT_TRUE(plane_->WaitIdle(std::chrono::seconds(30)));
  const ModelStats after = *plane_->engine().Stats("face");
  EXPECT_EQ(after.cancelled - before.cancelled, kCalls);  // every one dropped from the queue
  EXPECT_EQ(after.successes, before.successes);           // none ran
  ExpectStillServing();
}

// Shutdown while calls their clients cancelled still wait in the engine's queue: the server waits
// for the engine to answer them before its completion queues go (answering on a queue that was
// shut down would abort the process), and returns.
TEST(ServeShutdown, CallsCancelledWhileQueuedAreAnsweredBeforeTheQueuesGo) {
  DataPlaneOptions options;
  options.models = {{"face", loom::testing::ModelPath(loom::testing::kBlazeFaceFront)}};
  options.engine.measure_runs = 1;
  auto plane = DataPlane::Create(options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  Access access;
  auto server = GrpcServer::Start(**plane, access, {});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  constexpr int kCalls = 8;
  loom::testing::HeldWorkers workers((*plane)->engine());
  ASSERT_TRUE(workers.held());
  QueueThenCancel(**plane, port, ZerosRequest(**plane, "face"), kCalls);
  // Shutdown begins (its port closes) while they wait; the workers are released after that.
  auto shutdown =
      std::async(std::launch::async, [&] { (*server)->Shutdown(std::chrono::milliseconds(0)); });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int fd;
  while ((fd = testing::Connect(port)) >= 0 && std::chrono::steady_clock::now() < until) {
    ::close(fd);
    std::this_thread::yield();
  }
  EXPECT_LT(fd, 0) << "the gRPC port never closed";
  EXPECT_EQ((*plane)->engine().Stats("face")->queued, kCalls);
  workers.Release();
  ASSERT_EQ(shutdown.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ((*plane)->engine().Stats("face")->cancelled, kCalls);
  EXPECT_TRUE((*plane)->WaitIdle(std::chrono::seconds(30)));
}

TEST(ServeRepository, UnloadAndReloadWhileRequestsRunAnswersEveryOne) {
  // A model and a pipeline unloaded and reloaded again and again while 4 threads send to both:
  // every request is answered (a result, or NOT_FOUND/UNAVAILABLE while the model is away), and
  // nothing a request uses is freed under it.
  loom::testing::ScratchDir dir;
  std::filesystem::create_directories(dir.Path("repo/add"));
  std::filesystem::create_directories(dir.Path("repo/faces"));
  ASSERT_TRUE(WriteAddModel(dir.Path("repo/add/model.onnx"), 4).ok());
  dir.Write(
      "repo/faces/pipeline.yaml",
      "models:\n  - {name: face, path: " +
          loom::testing::ModelPath(loom::testing::kBlazeFaceFront) +
          "}\nin_flight: 2\nnodes:\n"
          "  - {name: face_in, type: preprocess, model: face, scale: 0.0078431, mean: 127.5}\n"
          "  - {name: face, type: infer, model: face, input: face_in}\n"
          "  - {name: faces, type: blazeface, input: face, model: face, threshold: 0.5, iou: "
          "0.3}\n");
  DataPlaneOptions options;
  options.repository = dir.Path("repo");
  options.engine.measure_runs = 1;
  options.model_control = ModelControl::kExplicit;
  auto plane = DataPlane::Create(options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  const std::string jpeg = loom::testing::ReadFile(loom::testing::DataPath("messi5.jpg"));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, away{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      while (!stop) {
        InferRequest r;
        WireTensor t;
        if (c % 2 == 0) {
          r.model = "add";
          t.name = "x";
          t.type = WireType::kFp32;
          t.shape = {1, 4};
          t.tensor = Tensor::Allocate(DType::kFloat32, {1, 4});
        } else {
          r.model = "faces";
          std::string wire;
          AppendBytesElement(wire, jpeg);
          t = OwnedBytesTensor("image", {1}, std::move(wire));
        }
        r.inputs.push_back(std::move(t));
        auto answer = (*plane)->InferSync(std::move(r), "test");
        if (answer.ok()) {
          ++ok;
        } else if (answer.status().code() == absl::StatusCode::kNotFound ||
                   answer.status().code() == absl::StatusCode::kUnavailable) {
          ++away;
        } else {
          ++other;
          ADD_FAILURE() << answer.status();
        }
      }
    });
  }
  for (int i = 0; i < 4; ++i) {
    for (const char* model : {"add", "faces"}) {
      // Each change while the clients' requests come and go.
      const int seen = ok + away + other;
      const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
      while (ok + away + other < seen + 8 && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
      EXPECT_TRUE((*plane)->Unload(model).ok());
      EXPECT_TRUE((*plane)->Load(model).ok());
    }
  }
  EXPECT_TRUE((*plane)->Load("add").ok());  // a load of a loaded model reloads it
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE((*plane)->Ready());
}

TEST(ServeRepository, ABadFolderIsReportedTheOthersServeAndAFixedOneLoadsAndMakesTheServerReady) {
  loom::testing::ScratchDir dir;
  std::filesystem::create_directories(dir.Path("repo/add"));
  std::filesystem::create_directories(dir.Path("repo/bad"));
  ASSERT_TRUE(WriteAddModel(dir.Path("repo/add/model.onnx"), 4).ok());
  ASSERT_TRUE(WriteAddModel(dir.Path("repo/bad/model.onnx"), 4).ok());
  dir.Write("repo/bad/config.yaml", "max_batch_size: -3\n");
  DataPlaneOptions options;
  options.repository = dir.Path("repo");
  options.engine.measure_runs = 1;
  options.model_control = ModelControl::kExplicit;
  auto plane = DataPlane::Create(options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  EXPECT_FALSE((*plane)->Ready());  // a model of the repository did not load
  bool reported = false;
  auto index = (*plane)->Index(false);
  ASSERT_TRUE(index.ok()) << index.status();
  for (const RepositoryEntry& e : *index) {
    if (e.name == "bad") {
      EXPECT_EQ(e.state, "UNAVAILABLE");
      EXPECT_NE(e.reason.find("max_batch_size"), std::string::npos) << e.reason;
      reported = true;
    }
  }
  EXPECT_TRUE(reported);
  EXPECT_TRUE((*plane)->ModelReady("add", "").ok());
  EXPECT_EQ((*plane)->ModelReady("bad", "").code(), absl::StatusCode::kNotFound);
  dir.Write("repo/bad/config.yaml", "max_batch_size: 4\n");
  ASSERT_TRUE((*plane)->Load("bad").ok());
  EXPECT_TRUE((*plane)->Ready());
}

// ------------------------------------------------------------------------------------------------
// The fuzzer: seeded mutations of valid requests (bytes flipped, inserted, deleted, truncated,
// duplicated; numbers in the JSON replaced by hostile ones; header lengths that lie), sent over
// loopback. Every one must be answered (any status), and good requests answered right afterwards.

std::string MutateBytes(std::string s, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t at = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 6) {
      case 0:
        if (!s.empty()) s[at] = static_cast<char>(rng());
        break;
      case 1:
        s.insert(at, 1, "{}[]\":,-0123456789eE.x\\"[rng() % 24]);
        break;
      case 2:
        if (!s.empty()) s.erase(at, 1 + rng() % 8);
        break;
      case 3:
        s.resize(at);
        break;
      case 4:
        s.insert(at, s.substr(at, rng() % 32));
        break;
      default: {
        static const char* kNumbers[] = {
            "-1",    "0",   "4294967296",           "9223372036854775807", "-9223372036854775808",
            "1e308", "NaN", "18446744073709551615", "2147483648",          "65536"};
        const size_t digit = s.find_first_of("0123456789", at);
        if (digit != std::string::npos) s.replace(digit, 1, kNumbers[rng() % 10]);
      }
    }
  }
  return s;
}

int FuzzRequests() {
  const char* env = std::getenv("LOOM_FUZZ_REQUESTS");
  const int n = env ? std::atoi(env) : 10000;
  return std::max(n, 10);
}

TEST_F(Server, SeededFuzzerOverHttpAndGrpcFindsNoCrashAndLeavesTheServerServing) {
  const int total = FuzzRequests();
  const float x[4] = {1, 2, 3, 4};
  const std::string binary_header =
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]})";
  const std::vector<std::pair<std::string, std::optional<std::string>>> seeds = {
      {kGoodJson, std::nullopt},
      {binary_header + std::string(reinterpret_cast<const char*>(x), 16),
       std::to_string(binary_header.size())},
      {R"({"id":"a","parameters":{"timeout":1000000},"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}],"outputs":[{"name":"y"}]})",
       std::nullopt},
  };
  std::mt19937_64 rng(20261123);
  std::map<int, int> statuses;
  // Most through the HTTP handler directly (fast), a share over real sockets (the parser too).
  const int over_socket = total / 20, grpc_count = total / 5;
  const int direct = total - over_socket - grpc_count;
  for (int i = 0; i < direct; ++i) {
    const auto& [body, header_length] = seeds[rng() % seeds.size()];
    std::optional<std::string> hl = header_length;
    if (hl && rng() % 4 == 0) hl = MutateBytes(*hl, rng);
    const HttpResponse r =
        Post(rng() % 50 == 0 ? MutateBytes("/v2/models/add/infer", rng) : "/v2/models/add/infer",
             MutateBytes(body, rng), hl);
    ++statuses[r.status];
    ASSERT_GE(r.status, 200);
    ASSERT_LT(r.status, 600);
    if (r.status >= 400) {
      ASSERT_NE(ErrorOf(r).find("<no error"), 0u) << r.body;
    }
  }
  for (int i = 0; i < over_socket; ++i) {
    const auto& [body, header_length] = seeds[rng() % seeds.size()];
    std::string head =
        "POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/json\r\n";
    if (header_length) head += "Inference-Header-Content-Length: " + *header_length + "\r\n";
    const std::string wire = MutateBytes(
        head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body, rng);
    const std::string r = RawHttp(wire, 0, 0, /*half_close=*/true);
    // An answer, or a closed connection for bytes that are not a complete request.
    if (!r.empty()) {
      ASSERT_EQ(r.rfind("HTTP/1.1 ", 0), 0u) << r.substr(0, 100);
    }
  }
  auto stub = Stub();
  pb::ModelInferRequest seed;
  seed.set_model_name("add");
  auto* in = seed.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(4);
  seed.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x), 16));
  const std::string seed_bytes = seed.SerializeAsString();
  int grpc_parsed = 0;
  for (int i = 0; i < grpc_count; ++i) {
    pb::ModelInferRequest m;
    if (rng() % 4 == 0) {
      // Bytes mutated: most are no longer a message, which gRPC never delivers.
      if (!m.ParseFromString(MutateBytes(seed_bytes, rng))) continue;
    } else {
      // Fields mutated: every one a message the server must answer.
      m = seed;
      auto* t = m.mutable_inputs(0);
      switch (rng() % 8) {
        case 0:
          t->set_shape(static_cast<int>(rng() % 2), static_cast<int64_t>(rng()) >> (rng() % 64));
          break;
        case 1:
          t->add_shape(static_cast<int64_t>(rng() % 5) - 1);
          break;
        case 2:
          t->set_datatype(std::vector<std::string>{"FP16", "INT64", "BYTES", "BOOL", "UINT64",
                                                   "fp32", ""}[rng() % 7]);
          break;
        case 3:
          m.mutable_raw_input_contents(0)->resize(rng() % 64);
          break;
        case 4:
          m.add_raw_input_contents(std::string(rng() % 32, 'x'));
          break;
        case 5:
          *m.add_inputs() = *t;
          break;
        case 6:
          t->mutable_contents()->add_fp32_contents(1.0f);
          break;
        default:
          (*m.mutable_parameters())["timeout"].set_int64_param(static_cast<int64_t>(rng()));
      }
      if (rng() % 8 == 0) m.add_outputs()->set_name(rng() % 2 ? "y" : "z");
    }
    ++grpc_parsed;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    pb::ModelInferResponse response;
    const grpc::Status s = stub->ModelInfer(&context, m, &response);
    ASSERT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << "a fuzzed gRPC request was never answered";
    ASSERT_NE(s.error_code(), grpc::StatusCode::UNKNOWN) << s.error_message();
  }
  std::string summary;
  for (const auto& [status, count] : statuses) {
    summary += ' ';
    summary += std::to_string(status);
    summary += ':';
    summary += std::to_string(count);
  }
  std::cout << "fuzzed " << direct << " HTTP requests in process (statuses" << summary << "), "
            << over_socket << " over sockets, " << grpc_parsed << " gRPC messages\n";
  ExpectStillServing();
  pb::ModelInferResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->ModelInfer(&context, seed, &response).ok());
}

}  // namespace
}  // namespace loom::serve
