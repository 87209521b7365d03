// `loom serve` in front of others: model control off by default, the admin credential (token or
// admin listener), the inference token, browser origins and Content-Type, names from requests,
// answers without file paths or exception text, reloads that no request notices, failed loads
// that change nothing, and repository operations on one bounded queue.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "grpc_service.grpc.pb.h"
#include "runtime/synthetic_models.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/routes.h"
#include "tests/serve/serve_util.h"
#include "tests/test_util.h"

namespace loom::serve {
namespace {

using json = nlohmann::json;
namespace pb = inference;
using testing::Head;

constexpr const char* kAdminToken = "admin-0123456789abcdef";
constexpr const char* kToken = "infer-0123456789abcdef";
constexpr const char* kGoodJson =
    R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})";

// A repository with the Add model (repo/add), a plane over it and its routes; a gRPC server on
// request.
struct Rig {
  explicit Rig(ModelControl control, SecurityOptions security = {}, bool grpc = false) {
    std::filesystem::create_directories(dir.Path("repo/add"));
    EXPECT_TRUE(WriteAddModel(dir.Path("repo/add/model.onnx"), 4).ok());
    if (!security.admin_token_file.empty())
      security.admin_token_file = dir.Write("admin", kAdminToken);
    if (!security.auth_token_file.empty()) security.auth_token_file = dir.Write("token", kToken);
    DataPlaneOptions options;
    options.repository = dir.Path("repo");
    options.engine.measure_runs = 1;
    options.model_control = control;
    auto p = DataPlane::Create(options);
    EXPECT_TRUE(p.ok()) << p.status();
    plane = std::move(*p);
    auto a = Access::Create(security);
    EXPECT_TRUE(a.ok()) << a.status();
    access = *a;
    routes = std::make_unique<HttpRoutes>(*plane, access, Listener::kMain);
    admin_routes = std::make_unique<HttpRoutes>(*plane, access, Listener::kAdmin);
    if (grpc) {
      auto g = GrpcServer::Start(*plane, access, {});
      EXPECT_TRUE(g.ok()) << g.status();
      server = std::move(*g);
      stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
          "127.0.0.1:" + std::to_string(server->port()), grpc::InsecureChannelCredentials()));
    }
  }
  ~Rig() {
    if (server) server->Shutdown(std::chrono::milliseconds(0));
  }
  HttpResponse Call(HttpRequestHead head, const std::string& body = "",
                    const std::string& authorization = "", bool admin_listener = false) {
    head.authorization = authorization;
    return HandleHttp(admin_listener ? *admin_routes : *routes, head, body);
  }
  HttpResponse Infer(const std::string& authorization = "") {
    return Call(Head("POST", "/v2/models/add/infer"), kGoodJson, authorization);
  }
  grpc::Status Unload(const std::string& name, const std::string& authorization = "") {
    grpc::ClientContext context;
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    pb::RepositoryModelUnloadRequest request;
    request.set_model_name(name);
    pb::RepositoryModelUnloadResponse response;
    return stub->RepositoryModelUnload(&context, request, &response);
  }

  loom::testing::ScratchDir dir;
  std::unique_ptr<DataPlane> plane;
  Access access;
  std::unique_ptr<HttpRoutes> routes, admin_routes;
  std::unique_ptr<GrpcServer> server;
  std::unique_ptr<pb::GRPCInferenceService::Stub> stub;
};

std::string ErrorOf(const HttpResponse& r) {
  json j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r.body;
}

bool HasHeader(const HttpResponse& r, const std::string& name, const std::string& value) {
  for (const auto& [n, v] : r.headers) {
    if (n == name && v == value) return true;
  }
  return false;
}

TEST(ModelControl, OffByDefaultTheRepositoryApiIsRefusedOverHttpAndGrpc) {
  Rig rig(ModelControl::kNone, {}, /*grpc=*/true);
  for (const char* target : {"/v2/repository/models/add/unload", "/v2/repository/models/add/load",
                             "/v2/repository/index"}) {
    SCOPED_TRACE(target);
    const HttpResponse r = rig.Call(Head("POST", target), "{}");
    EXPECT_EQ(r.status, 403);
    EXPECT_NE(ErrorOf(r).find("--model-control explicit"), std::string::npos) << ErrorOf(r);
  }
  const grpc::Status s = rig.Unload("add");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("--model-control"), std::string::npos) << s.error_message();
  EXPECT_EQ(rig.plane->Unload("add").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(rig.Infer().status, 200);  // still served
}

TEST(ModelControl, ExplicitTakesTheAdminTokenAndNothingElse) {
  SecurityOptions security;
  security.admin_token_file = "admin";
  Rig rig(ModelControl::kExplicit, security, /*grpc=*/true);
  const auto unload = Head("POST", "/v2/repository/models/add/unload");
  HttpResponse r = rig.Call(unload);
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_TRUE(HasHeader(r, "WWW-Authenticate", "Bearer"));
  EXPECT_EQ(rig.Call(unload, "", "Bearer wrong-token-0123456789").status, 401);
  EXPECT_EQ(rig.Call(unload, "", std::string("Basic ") + kAdminToken).status, 401);
  EXPECT_EQ(rig.Infer().status, 200);  // inference needs no token here
  EXPECT_EQ(rig.Unload("add").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(rig.Unload("add", "Bearer nope-0123456789abcdef").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(rig.Infer().status, 200);
  r = rig.Call(unload, "", std::string("Bearer ") + kAdminToken);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.Infer().status, 404);
  r = rig.Call(Head("POST", "/v2/repository/models/add/load"), "{}",
               std::string("bearer ") + kAdminToken);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.Infer().status, 200);
  EXPECT_TRUE(rig.Unload("add", std::string("Bearer ") + kAdminToken).ok());
}

TEST(ModelControl, TheAdminListenerServesTheRepositoryApiAndNothingElse) {
  SecurityOptions security;
  security.admin_listener = true;
  Rig rig(ModelControl::kExplicit, security);
  const auto unload = Head("POST", "/v2/repository/models/add/unload");
  HttpResponse r = rig.Call(unload);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(ErrorOf(r).find("--admin-port"), std::string::npos) << ErrorOf(r);
  EXPECT_EQ(rig.Call(Head("POST", "/v2/models/add/infer"), kGoodJson, "", true).status, 404);
  EXPECT_EQ(rig.Call(Head("GET", "/v2/health/ready"), "", "", true).status, 200);
  r = rig.Call(unload, "", "", /*admin_listener=*/true);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rig.Infer().status, 404);
}

TEST(Tokens, TheInferenceTokenGuardsEverythingButHealth) {
  SecurityOptions security;
  security.auth_token_file = "token";
  Rig rig(ModelControl::kNone, security, /*grpc=*/true);
  const std::string bearer = std::string("Bearer ") + kToken;
  EXPECT_EQ(rig.Call(Head("GET", "/v2/health/live")).status, 200);
  EXPECT_EQ(rig.Call(Head("GET", "/v2/health/ready")).status, 200);
  for (const char* target : {"/v2", "/v2/models/add", "/v2/models/add/ready", "/metrics"}) {
    SCOPED_TRACE(target);
    EXPECT_EQ(rig.Call(Head("GET", target)).status, 401);
    EXPECT_EQ(rig.Call(Head("GET", target), "", bearer).status, 200);
  }
  EXPECT_EQ(rig.Infer().status, 401);
  EXPECT_EQ(rig.Infer("Bearer " + std::string(kToken) + "x").status, 401);
  EXPECT_EQ(rig.Infer(bearer).status, 200);
  // gRPC: liveness and readiness open, the rest behind the token.
  {
    grpc::ClientContext context;
    pb::ServerLiveResponse live;
    EXPECT_TRUE(rig.stub->ServerLive(&context, pb::ServerLiveRequest(), &live).ok());
  }
  pb::ModelInferRequest request;
  request.set_model_name("add");
  auto* in = request.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(4);
  request.add_raw_input_contents(std::string(16, '\0'));
  for (const std::string& auth : {std::string(), bearer}) {
    grpc::ClientContext context;
    if (!auth.empty()) context.AddMetadata("authorization", auth);
    pb::ModelInferResponse response;
    const grpc::Status s = rig.stub->ModelInfer(&context, request, &response);
    EXPECT_EQ(s.error_code(),
              auth.empty() ? grpc::StatusCode::UNAUTHENTICATED : grpc::StatusCode::OK)
        << s.error_message();
  }
}

TEST(Tokens, ATooShortTokenFileIsRefusedAtStart) {
  loom::testing::ScratchDir dir;
  SecurityOptions security;
  security.auth_token_file = dir.Write("short", "abc\n");
  auto a = Access::Create(security);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string(a.status().message()).find("--auth-token-file"), std::string::npos);
}

TEST(Origin, ACrossOriginTextPlainPostIsRefusedAndAnAllowedOriginGetsCors) {
  SecurityOptions security;
  security.admin_listener = true;
  security.allow_origins = {"https://app.example"};
  Rig rig(ModelControl::kExplicit, security);
  // A web page's form POST to the admin listener on loopback: refused, nothing unloaded.
  HttpRequestHead page = Head("POST", "/v2/repository/models/add/unload", "text/plain");
  page.origin = "http://evil.example";
  HttpResponse r = rig.Call(page, "x", "", /*admin_listener=*/true);
  EXPECT_EQ(r.status, 403) << r.body;
  page.content_type = "application/json";
  EXPECT_EQ(rig.Call(page, "{}", "", true).status, 403);
  EXPECT_EQ(rig.Infer().status, 200);
  // The allowed origin: answered, with the CORS headers; its preflight too.
  HttpRequestHead app = Head("POST", "/v2/models/add/infer");
  app.origin = "https://app.example";
  r = rig.Call(app, kGoodJson);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(HasHeader(r, "Access-Control-Allow-Origin", "https://app.example"));
  HttpRequestHead preflight = Head("OPTIONS", "/v2/models/add/infer");
  preflight.origin = "https://app.example";
  r = rig.Call(preflight);
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(HasHeader(r, "Access-Control-Allow-Origin", "https://app.example"));
  preflight.origin = "http://evil.example";
  EXPECT_EQ(rig.Call(preflight).status, 403);
}

TEST(Origin, AllowHostRefusesOtherNamesAsDnsRebindingWouldSend) {
  SecurityOptions security;
  security.allow_hosts = {"localhost", "127.0.0.1", "[::1]"};
  Rig rig(ModelControl::kNone, security);
  HttpRequestHead get = Head("GET", "/v2/models/add");
  for (const char* host : {"localhost:8000", "127.0.0.1", "LOCALHOST", "[::1]:8000"}) {
    get.host = host;
    EXPECT_EQ(rig.Call(get).status, 200) << host;
  }
  // Other names, no name, and names with a port that is not a number are refused.
  for (const char* host : {"evil.example:8000", "", "localhost:evil.example",
                           "localhost:", "[::1]evil", "[::1", "[::1]:", "localhost:123456"}) {
    get.host = host;
    EXPECT_EQ(rig.Call(get).status, 403) << host;
  }
  HttpRequestHead health = Head("GET", "/v2/health/ready");
  health.host = "10.0.0.7:8000";  // probes come by address
  EXPECT_EQ(rig.Call(health).status, 200);
}

TEST(ContentType, PostBodiesMustBeJsonOrBinaryTensors) {
  Rig rig(ModelControl::kNone);
  for (const char* type :
       {"text/plain", "application/x-www-form-urlencoded", "", "multipart/form-data"}) {
    SCOPED_TRACE(type);
    HttpRequestHead head = Head("POST", "/v2/models/add/infer", type);
    const HttpResponse r = rig.Call(head, kGoodJson);
    EXPECT_EQ(r.status, 415) << r.body;
  }
  EXPECT_EQ(
      rig.Call(Head("POST", "/v2/models/add/infer", "application/json; charset=utf-8"), kGoodJson)
          .status,
      200);
  EXPECT_EQ(rig.Call(Head("POST", "/v2/models/add/infer", "Application/JSON"), kGoodJson).status,
            200);
}

TEST(Names, MadeUpNamesLeaveNoTraceInTheIndex) {
  Rig rig(ModelControl::kExplicit);
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(rig.plane->Load("nosuch" + std::to_string(i)).ok());
  EXPECT_FALSE(rig.plane->Load("../repo").ok());
  auto index = rig.plane->Index(false);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->size(), 1u);  // 'add' only
}

TEST(Errors, APathOutsideTheRepositoryKeepsOnlyItsFileName) {
  Rig rig(ModelControl::kExplicit);
  std::filesystem::create_directories(rig.dir.Path("repo/far"));
  const std::string elsewhere = rig.dir.Path("elsewhere/secret/model.onnx");
  rig.dir.Write("repo/far/config.yaml", "path: " + elsewhere + "\n");
  const absl::Status s = rig.plane->Load("far");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().find(rig.dir.Path("elsewhere")), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("far"), std::string::npos) << s.message();
}

TEST(ModelControl, AnEmptyRepositoryTakesItsFirstModel) {
  // A server whose every model failed to load starts with none, and still loads one later.
  loom::testing::ScratchDir dir;
  std::filesystem::create_directories(dir.Path("repo/add"));
  dir.Write("repo/add/model.onnx", "not yet");
  DataPlaneOptions options;
  options.repository = dir.Path("repo");
  options.engine.measure_runs = 1;
  options.model_control = ModelControl::kExplicit;
  auto plane = DataPlane::Create(options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  ASSERT_TRUE(WriteAddModel(dir.Path("repo/add/model.onnx"), 4).ok());
  ASSERT_TRUE((*plane)->Load("add").ok());
  Access access;
  HttpRoutes routes(**plane, access, Listener::kMain);
  EXPECT_EQ(HandleHttp(routes, Head("POST", "/v2/models/add/infer"), kGoodJson).status, 200);
}

TEST(Outputs, AnOutputRequestedTwiceIsAnInvalidArgument) {
  Rig rig(ModelControl::kNone, {}, /*grpc=*/true);
  const std::string twice =
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],)"
      R"("outputs":[{"name":"y"},{"name":"y"}]})";
  const HttpResponse r = rig.Call(Head("POST", "/v2/models/add/infer"), twice);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(ErrorOf(r).find("twice"), std::string::npos) << r.body;
  pb::ModelInferRequest m;
  m.set_model_name("add");
  auto* in = m.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(4);
  m.add_raw_input_contents(std::string(16, '\0'));
  for (int i = 0; i < 2; ++i) m.add_outputs()->set_name("y");
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  const grpc::Status st = rig.stub->ModelInfer(&context, m, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(rig.plane->budget().used(), 0);
}

TEST(Errors, ARequestDroppedForItsClientIsNotABadRequest) {
  EXPECT_EQ(HttpStatus(absl::CancelledError("the client went away")), 499);
  EXPECT_EQ(HttpStatus(absl::InvalidArgumentError("bad")), 400);
}

TEST(ModelControl, RepositoryBodiesAreSmallAndShallow) {
  SecurityOptions security;
  security.admin_listener = true;
  Rig rig(ModelControl::kExplicit, security);
  const HttpRequestHead index = Head("POST", "/v2/repository/index");
  HttpResponse r = rig.Call(index, std::string(1 << 20, '['), "", true);  // a nested megabyte
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(ErrorOf(r).find("max_admin_body_bytes"), std::string::npos) << r.body;
  r = rig.Call(index, std::string(1000, '[') + std::string(1000, ']'), "", true);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(rig.Call(index, R"({"ready":true})", "", true).status, 200);
}

TEST(Names, ControlCharactersAndLongNamesAreInvalidArguments) {
  Rig rig(
      ModelControl::kExplicit,
      [] {
        SecurityOptions s;
        s.admin_listener = true;
        return s;
      }(),
      /*grpc=*/true);
  const std::vector<std::string> targets = {"/v2/models/face%00junk", "/v2/models/a%01b/ready",
                                            "/v2/models/" + std::string(300, 'm'),
                                            "/v2/models/a%0Ab/versions/1"};
  for (const std::string& target : targets) {
    SCOPED_TRACE(target);
    EXPECT_EQ(rig.Call(Head("GET", target)).status, 400);
  }
  EXPECT_EQ(rig.Call(Head("POST", "/v2/models/face%00junk/infer"), kGoodJson).status, 400);
  const HttpResponse load =
      rig.Call(Head("POST", "/v2/repository/models/face%00junk/load"), "", "", true);
  EXPECT_EQ(load.status, 400) << load.body;
  pb::ModelInferRequest request;
  request.set_model_name(std::string("add\0x", 5));
  grpc::ClientContext context;
  pb::ModelInferResponse response;
  EXPECT_EQ(rig.stub->ModelInfer(&context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(rig.plane->Load(std::string("add\x7f", 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rig.Infer().status, 200);
}

TEST(Errors, AnswersNameModelsNeverFilePathsNorExceptionText) {
  Rig rig(ModelControl::kExplicit, [] {
    SecurityOptions s;
    s.admin_listener = true;
    return s;
  }());
  const std::string root = rig.dir.Path("repo");
  std::filesystem::create_directories(rig.dir.Path("repo/junk"));
  rig.dir.Write("repo/junk/model.onnx", "not an onnx model");
  std::filesystem::create_directories(rig.dir.Path("repo/dirmodel/model.onnx"));  // a folder
  std::filesystem::create_directories(rig.dir.Path("repo/empty"));
  for (const char* name : {"junk", "dirmodel", "empty"}) {
    SCOPED_TRACE(name);
    const HttpResponse r = rig.Call(
        Head("POST", std::string("/v2/repository/models/") + name + "/load"), "", "", true);
    EXPECT_GE(r.status, 400);
    EXPECT_EQ(r.body.find(root), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("basic_filebuf"), std::string::npos) << r.body;
    EXPECT_NE(ErrorOf(r).find(name), std::string::npos) << r.body;
  }
  const HttpResponse index = rig.Call(Head("POST", "/v2/repository/index"), "{}", "", true);
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body.find(root), std::string::npos) << index.body;
  EXPECT_TRUE(rig.plane->Ready());  // failed loads at run time leave it ready
}

TEST(Reload, FourClientsNeverMissTheModelWhileItIsReloaded) {
  Rig rig(ModelControl::kExplicit);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, other{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      while (!stop) {
        InferRequest r;
        r.model = "add";
        WireTensor t;
        t.name = "x";
        t.shape = {1, 4};
        t.tensor = Tensor::Allocate(DType::kFloat32, {1, 4});
        r.inputs.push_back(std::move(t));
        auto answer = rig.plane->InferSync(std::move(r), "test");
        if (answer.ok()) {
          ++ok;
        } else {
          ++other;
          ADD_FAILURE() << answer.status();
        }
      }
    });
  }
  for (int i = 0; i < 6; ++i) {  // each reload while the clients' requests come and go
    const int seen = ok + other;
    const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (ok + other < seen + 8 && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
    EXPECT_TRUE(rig.plane->Load("add").ok());
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(rig.plane->engine().ModelNames().size(), 1u) << "the old copies left the engine";
}

TEST(Reload, AFailedLoadLeavesTheModelsAndTheReadinessAsTheyWere) {
  Rig rig(ModelControl::kExplicit);
  ASSERT_TRUE(rig.plane->Ready());
  std::filesystem::create_directories(rig.dir.Path("repo/notonnx"));
  rig.dir.Write("repo/notonnx/model.onnx", "garbage");
  EXPECT_FALSE(rig.plane->Load("notonnx").ok());
  EXPECT_TRUE(rig.plane->Ready());
  rig.dir.Write("repo/add/config.yaml", "max_batch_size: -3\n");  // a reload that fails
  EXPECT_FALSE(rig.plane->Load("add").ok());
  EXPECT_TRUE(rig.plane->Ready());
  EXPECT_EQ(rig.Infer().status, 200);  // the old copy still serves
  std::filesystem::remove(rig.dir.Path("repo/add/config.yaml"));
  EXPECT_TRUE(rig.plane->Load("add").ok());
  EXPECT_EQ(rig.Infer().status, 200);
}

TEST(Admin, ThousandsOfGrpcRepositoryCallsQueueOnOneThread) {
  SecurityOptions security;
  security.admin_token_file = "admin";
  Rig rig(ModelControl::kExplicit, security, /*grpc=*/true);
  // One call first: the client's own threads start with its first call.
  EXPECT_EQ(rig.Unload("warm-up", std::string("Bearer ") + kAdminToken).error_code(),
            grpc::StatusCode::NOT_FOUND);
  const int threads_before = testing::ThreadCount();
  constexpr int kCalls = 2000;
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts(kCalls);
  std::vector<pb::RepositoryModelUnloadResponse> responses(kCalls);
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<pb::RepositoryModelUnloadResponse>>>
      calls;
  for (int i = 0; i < kCalls; ++i) {
    contexts[i] = std::make_unique<grpc::ClientContext>();
    contexts[i]->AddMetadata("authorization", std::string("Bearer ") + kAdminToken);
    pb::RepositoryModelUnloadRequest request;
    request.set_model_name("made-up-" + std::to_string(i));
    calls.push_back(rig.stub->AsyncRepositoryModelUnload(contexts[i].get(), request, &cq));
    calls.back()->Finish(&responses[i], &statuses[i],
                         reinterpret_cast<void*>(static_cast<intptr_t>(i)));
  }
  int answered = 0, peak_threads = 0;
  void* tag;
  bool got;
  while (answered < kCalls && cq.Next(&tag, &got)) {
    const grpc::Status& s = statuses[static_cast<size_t>(reinterpret_cast<intptr_t>(tag))];
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::NOT_FOUND ||
                s.error_code() == grpc::StatusCode::UNAVAILABLE)
        << s.error_message();
    peak_threads = std::max(peak_threads, testing::ThreadCount());
    ++answered;
  }
  EXPECT_EQ(answered, kCalls);
  // gRPC's client may add a few threads of its own under load; a thread per call would be 2,000.
  EXPECT_LE(peak_threads, threads_before + 16) << "a thread per call?";
  EXPECT_EQ(rig.Infer().status, 200);
}

}  // namespace
}  // namespace loom::serve
