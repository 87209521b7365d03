#include "serve/grpc_server.h"

#include <grpc/support/log.h>
#include <grpcpp/resource_quota.h>

#include <any>
#include <deque>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>

#include "core/cpu_set.h"
#include "serve/grpc_calls.h"
#include "serve/grpc_codec.h"

namespace loom::serve {
namespace {

// gRPC's log goes to Loom's, watched for the message that means a listener has stopped: gRPC
// 1.51 ends its accept loop when accept4 fails (out of descriptors, say) and never accepts on
// that port again. The planes of the servers running then are marked broken: their liveness
// fails, so that an orchestrator restarts the process.
std::mutex watch_mu;
std::vector<DataPlane*>& Watched() {                    // requires watch_mu
  static auto* planes = new std::vector<DataPlane*>();  // never destroyed: gRPC may log at exit
  return *planes;
}

void OnGrpcLog(gpr_log_func_args* args) {
  const std::string_view message = args->message != nullptr ? args->message : "";
  if (args->severity != GPR_LOG_SEVERITY_ERROR) {
    Log().debug("gRPC: {}", message);
    return;
  }
  Log().error("gRPC: {} ({}:{})", message, args->file != nullptr ? args->file : "?", args->line);
  if (message.find("Failed accept4") == std::string_view::npos) return;
  std::lock_guard<std::mutex> lock(watch_mu);
  for (DataPlane* plane : Watched()) {
    plane->MarkBroken(
        absl::StrCat("gRPC stopped accepting connections (", std::string(message), ")"));
  }
}

void Watch(DataPlane* plane) {
  static std::once_flag once;
  std::call_once(once, [] { gpr_set_log_function(OnGrpcLog); });
  std::lock_guard<std::mutex> lock(watch_mu);
  Watched().push_back(plane);
}

void Unwatch(DataPlane* plane) {
  std::lock_guard<std::mutex> lock(watch_mu);
  auto& watched = Watched();
  if (auto it = std::find(watched.begin(), watched.end(), plane); it != watched.end()) {
    watched.erase(it);  // this server's entry; another server of the plane keeps its own
  }
}

using namespace grpc_internal;  // NOLINT: this file is the server of those calls

using InferCall = Unary<pb::ModelInferRequest, pb::ModelInferResponse>;

// Handles the events of `cq` until it is shut down and drained.
void Poll(grpc::ServerCompletionQueue* cq) {
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
    auto* t = static_cast<Call::Tag*>(tag);
    try {
      t->call->Handle(t->event, ok);
    } catch (...) {  // no memory for the next call of a method: this queue asks for one less
      Log().error("gRPC: a call's event could not be handled");
    }
  }
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls.client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  LOOM_ASSIGN_OR_RETURN(std::string key, ReadSecretFile(tls.key, "--tls-key"));
  LOOM_ASSIGN_OR_RETURN(std::string cert, ReadSecretFile(tls.cert, "--tls-cert"));
  options.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  if (!tls.client_ca.empty()) {
    LOOM_ASSIGN_OR_RETURN(options.pem_root_certs, ReadSecretFile(tls.client_ca, "--tls-client-ca"));
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace

// The server: gRPC's async API, a completion queue per thread. A thread takes a call's events and
// handles the call there: metadata is answered at once; an inference is checked, parsed and
// handed to the data plane, which runs it on this thread when a worker of the model is idle,
// else queues it and answers from the worker; a load or unload goes to the plane's admin thread.
struct GrpcServer::Impl {
  Impl(DataPlane& plane, const Access& access) : plane(plane), access(access) {}
  ~Impl() {
    for (std::thread& t : threads) t.join();
  }

  template <typename Request, typename Response>
  void On(typename Unary<Request, Response>::Ask ask,
          typename Unary<Request, Response>::Handler handler, bool parse = true) {
    using U = Unary<Request, Response>;
    const int64_t max_bytes = plane.limits().max_admin_body_bytes;
    const auto* m = std::any_cast<typename U::Method>(
        &methods.emplace_back(typename U::Method{ask, std::move(handler), max_bytes, parse}));
    starters.push_back([m](const Queue& q) { U::Start(q, m); });
  }
  void RegisterHandlers();
  void RegisterRepository();
  void Infer(InferCall& c);
  // The repository API's gate: model control, then the admin credential.
  absl::Status Admin(const Call& c) const {
    if (plane.model_control() == ModelControl::kNone) {
      return absl::PermissionDeniedError(
          "the model repository API is off: start the server with --model-control explicit");
    }
    return access.CheckAdmin(c.Authorization(), false);
  }

  DataPlane& plane;
  const Access& access;
  RawService service;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  std::unique_ptr<grpc::Server> server;  // destroyed before its queues
  std::vector<std::thread> threads;
  std::shared_mutex accepting_mu;
  bool accepting = true;  // requires accepting_mu
  CallCount calls;
  std::vector<std::function<void(const Queue&)>> starters;  // one per method
  std::deque<std::any> methods;                             // the methods, at stable addresses
  int port = 0;
  bool stopped = false;
};

void GrpcServer::Impl::Infer(InferCall& c) {
  if (absl::Status s = access.CheckInference(c.Authorization()); !s.ok()) return c.Answer(s);
  const ServeLimits& limits = plane.limits();
  auto cost = ScanInferRequest(c.raw, limits);
  if (!cost.ok()) return c.Answer(cost.status());
  auto charge = std::make_shared<InflightBudget::Charge>(plane.budget().Open());
  if (absl::Status s = charge->Take(*cost + static_cast<int64_t>(c.raw.Length())); !s.ok()) {
    return c.AnswerGrpc(
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, std::string(s.message())));
  }
  if (!grpc::GenericDeserialize<grpc::ProtoBufferReader, pb::ModelInferRequest>(&c.raw, &c.request)
           .ok()) {
    return c.Answer(absl::InvalidArgumentError("the message is not a ModelInferRequest"));
  }
  auto parsed = FromProto(c.request, limits);
  if (!parsed.ok()) {
    plane.CountRejected(c.request.model_name(), "grpc", parsed.status());
    return c.Answer(parsed.status());
  }
  parsed->cancelled = c.cancelled();
  // The request message (whose bytes the inputs borrow) lives until the call is done.
  plane.Infer(std::move(*parsed), "grpc", [&c, charge](absl::StatusOr<InferResponse> r) mutable {
    try {
      charge->Release();  // the request's bytes are no longer held; the answer's are
      if (r.ok()) {
        charge->Hold(ResponseBytes(*r));
        ToProto(*r, c.response);
        c.hold = charge;  // until the answer is sent
      }
      c.Answer(r.status());
    } catch (const std::exception& e) {
      Log().error("gRPC answer: {}", e.what());
      c.Answer(absl::ResourceExhaustedError("the response could not be made"));
    }
  });
}

void GrpcServer::Impl::RegisterHandlers() {
  On<pb::ServerLiveRequest, pb::ServerLiveResponse>(&RawService::RequestServerLive,
                                                    [this](auto& c) {
                                                      c.response.set_live(plane.Live());
                                                      c.Answer(absl::OkStatus());
                                                    });
  On<pb::ServerReadyRequest, pb::ServerReadyResponse>(&RawService::RequestServerReady,
                                                      [this](auto& c) {
                                                        c.response.set_ready(plane.Ready());
                                                        c.Answer(absl::OkStatus());
                                                      });
  On<pb::ModelReadyRequest, pb::ModelReadyResponse>(&RawService::RequestModelReady, [this](
                                                                                        auto& c) {
    if (absl::Status s = access.CheckInference(c.Authorization()); !s.ok()) return c.Answer(s);
    const absl::Status s = plane.ModelReady(c.request.name(), c.request.version());
    if (s.code() == absl::StatusCode::kNotFound || s.code() == absl::StatusCode::kInvalidArgument) {
      return c.Answer(s);
    }
    c.response.set_ready(s.ok());
    c.Answer(absl::OkStatus());
  });
  On<pb::ServerMetadataRequest, pb::ServerMetadataResponse>(
      &RawService::RequestServerMetadata, [this](auto& c) {
        if (absl::Status s = access.CheckInference(c.Authorization()); !s.ok()) return c.Answer(s);
        const serve::ServerMetadata m = plane.Metadata();
        c.response.set_name(m.name);
        c.response.set_version(m.version);
        for (const std::string& e : m.extensions) c.response.add_extensions(e);
        c.Answer(absl::OkStatus());
      });
  On<pb::ModelMetadataRequest, pb::ModelMetadataResponse>(
      &RawService::RequestModelMetadata, [this](auto& c) {
        if (absl::Status s = access.CheckInference(c.Authorization()); !s.ok()) return c.Answer(s);
        auto m = plane.Metadata(c.request.name(), c.request.version());
        if (!m.ok()) return c.Answer(m.status());
        c.response.set_name(m->name);
        for (const std::string& v : m->versions) c.response.add_versions(v);
        c.response.set_platform(m->platform);
        auto add = [](const std::vector<TensorMetadata>& tensors, auto* field) {
          for (const TensorMetadata& t : tensors) {
            auto* out = field->Add();
            out->set_name(t.name);
            out->set_datatype(WireTypeName(t.type));
            for (int64_t d : t.shape) out->add_shape(d);
          }
        };
        add(m->inputs, c.response.mutable_inputs());
        add(m->outputs, c.response.mutable_outputs());
        c.Answer(absl::OkStatus());
      });
  On<pb::ModelInferRequest, pb::ModelInferResponse>(
      &RawService::RequestModelInfer, [this](InferCall& c) { Infer(c); }, /*parse=*/false);
  RegisterRepository();
}

void GrpcServer::Impl::RegisterRepository() {
  On<pb::RepositoryIndexRequest, pb::RepositoryIndexResponse>(
      &RawService::RequestRepositoryIndex, [this](auto& c) {
        if (absl::Status s = Admin(c); !s.ok()) return c.Answer(s);
        auto index = plane.Index(c.request.ready());
        if (!index.ok()) return c.Answer(index.status());
        for (const RepositoryEntry& e : *index) {
          auto* m = c.response.add_models();
          m->set_name(e.name);
          m->set_version(e.version);
          m->set_state(e.state);
          m->set_reason(e.reason);
        }
        c.Answer(absl::OkStatus());
      });
  // Loads and unloads take seconds (a model is loaded and measured): they queue for the plane's
  // admin thread, which answers them.
  auto admin = [this](auto& c, DataPlane::AdminOp op) {
    if (absl::Status s = Admin(c); !s.ok()) return c.Answer(s);
    plane.SubmitAdmin(op, c.request.model_name(), [&c](absl::Status s) { c.Answer(s); });
  };
  On<pb::RepositoryModelLoadRequest, pb::RepositoryModelLoadResponse>(
      &RawService::RequestRepositoryModelLoad,
      [admin](auto& c) { admin(c, DataPlane::AdminOp::kLoad); });
  On<pb::RepositoryModelUnloadRequest, pb::RepositoryModelUnloadResponse>(
      &RawService::RequestRepositoryModelUnload,
      [admin](auto& c) { admin(c, DataPlane::AdminOp::kUnload); });
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

int GrpcServer::DefaultThreads() {
  const int cores = static_cast<int>(UsableCpus().size());  // taskset and cgroups honoured
  return std::min(std::max(cores, 1), 16) + 2;
}

namespace {

void Configure(grpc::ServerBuilder& builder, const ServeLimits& limits,
               const GrpcServerOptions& options) {
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(limits.max_body_bytes, std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(-1);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_streams);
  // Messages come uncompressed: a compressed one would be inflated before its size is checked
  // (a 1 MB gzip of zeros becomes a gigabyte). Clients that compress get UNIMPLEMENTED.
  builder.AddChannelArgument(GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
                             1 << GRPC_COMPRESS_NONE);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, static_cast<int>(limits.max_header_bytes));
  // A connection that says nothing (or never finishes its handshake) is closed; idle and old ones
  // are asked to go away (clients reconnect), so that connections do not pile up.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(limits.header_timeout_ms));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(options.max_connection_idle.count()));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                             static_cast<int>(options.max_connection_age.count()));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 30000);
  // The transport's buffers: room for the in-flight budget and one largest message more.
  grpc::ResourceQuota quota("loom-serve");
  quota.Resize(static_cast<size_t>(limits.max_inflight_bytes + 2 * limits.max_body_bytes));
  builder.SetResourceQuota(quota);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(DataPlane& plane,
                                                              const Access& access,
                                                              const GrpcServerOptions& options) {
  const int threads = options.threads > 0 ? options.threads : DefaultThreads();
  auto impl = std::make_unique<Impl>(plane, access);
  LOOM_ASSIGN_OR_RETURN(auto credentials, Credentials(access.tls()));
  grpc::ServerBuilder builder;
  const std::string& host = options.host;
  const std::string address = host.find(':') != std::string::npos
                                  ? absl::StrCat("[", host, "]:", options.port)
                                  : absl::StrCat(host, ":", options.port);
  builder.AddListeningPort(address, credentials, &impl->port);
  builder.RegisterService(&impl->service);
  Configure(builder, plane.limits(), options);
  for (int i = 0; i < threads; ++i) impl->queues.push_back(builder.AddCompletionQueue());
  Watch(&plane);  // before it listens: its accept loop may fail from the start
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    Unwatch(&plane);
    if (impl->server) impl->server->Shutdown();
    for (auto& q : impl->queues) {
      q->Shutdown();
      Poll(q.get());
    }
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", address));
  }
  impl->RegisterHandlers();
  try {
    for (auto& q : impl->queues) {  // a queue's thread first, then its calls
      impl->threads.emplace_back(Poll, q.get());
      const Queue queue{&impl->service,   q.get(),      &impl->accepting_mu,
                        &impl->accepting, &impl->calls, &impl->plane};
      for (const auto& start : impl->starters) start(queue);
    }
  } catch (const std::exception& e) {
    auto server = std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
    server->Shutdown(std::chrono::milliseconds(0));
    return absl::UnavailableError(absl::StrCat("cannot start the gRPC threads: ", e.what()));
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

int GrpcServer::port() const { return impl_->port; }

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  Unwatch(&impl_->plane);
  {
    std::unique_lock<std::shared_mutex> lock(impl_->accepting_mu);
    impl_->accepting = false;  // no call asks for another from here on
  }
  // Returns once the connections are gone (calls still under way are cancelled past the grace);
  // the calls not matched yet come back from their queues as not ok.
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
  // A cancelled call may still wait for the engine (or a repository operation) to answer it: the
  // queues stay up, polled, until no call is left.
  impl_->calls.WaitForNone();
  for (auto& q : impl_->queues) q->Shutdown();  // each thread ends once its queue is drained
  for (std::thread& t : impl_->threads) t.join();
  // Queues without a thread (one could not be started; no call was asked for there) are drained.
  for (size_t i = impl_->threads.size(); i < impl_->queues.size(); ++i)
    Poll(impl_->queues[i].get());
  impl_->threads.clear();
}

}  // namespace loom::serve
