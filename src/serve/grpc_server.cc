#include "serve/grpc_server.h"

#include <any>
#include <condition_variable>
#include <atomic>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "grpc_service.grpc.pb.h"

namespace loom::serve {
namespace {

namespace pb = ::inference;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(GrpcCode(s)), std::string(s.message()));
}

// The `timeout` parameter (microseconds), if the request has one.
absl::Status ReadTimeout(const google::protobuf::Map<std::string, pb::InferParameter>& parameters,
                         std::optional<int64_t>& timeout_us) {
  auto it = parameters.find("timeout");
  if (it == parameters.end()) return absl::OkStatus();
  const pb::InferParameter& p = it->second;
  if (p.has_int64_param() && p.int64_param() >= 0) {
    timeout_us = p.int64_param();
  } else if (p.has_uint64_param()) {
    timeout_us = static_cast<int64_t>(std::min<uint64_t>(p.uint64_param(), uint64_t{1} << 50));
  } else {
    return absl::InvalidArgumentError("parameter 'timeout' must be a non-negative integer (microseconds)");
  }
  timeout_us = std::min<int64_t>(*timeout_us, int64_t{1} << 50);
  if (*timeout_us == 0) timeout_us.reset();  // 0: no timeout, as Triton reads it
  return absl::OkStatus();
}

// Copies typed contents into a fresh tensor, checking each value fits the datatype.
template <typename T, typename Field>
absl::Status CopyValues(const Field& field, Tensor& tensor, const std::string& name, const char* field_name) {
  T* out = static_cast<T*>(tensor.data());
  for (int i = 0; i < field.size(); ++i) {
    const auto v = field.Get(i);
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (v < static_cast<decltype(v)>(std::numeric_limits<T>::lowest()) ||
          v > static_cast<decltype(v)>(std::numeric_limits<T>::max())) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", field_name, "[", i, "] = ", v,
                                                       " is out of its datatype's range"));
      }
    }
    out[i] = static_cast<T>(v);
  }
  return absl::OkStatus();
}

absl::StatusOr<WireTensor> FromContents(const pb::ModelInferRequest::InferInputTensor& in, WireType type,
                                        const Shape& shape, const ServeLimits& limits) {
  int64_t elements = 0;
  LOOM_RETURN_IF_ERROR(CheckWireShape(in.name(), shape, limits, &elements));
  const pb::InferTensorContents& c = in.contents();
  // The field this datatype's values travel in, and how many it holds.
  int count = 0;
  const char* field = "";
  switch (type) {
    case WireType::kBool: count = c.bool_contents_size(); field = "bool_contents"; break;
    case WireType::kInt8: case WireType::kInt16: case WireType::kInt32: count = c.int_contents_size(); field = "int_contents"; break;
    case WireType::kInt64: count = c.int64_contents_size(); field = "int64_contents"; break;
    case WireType::kUInt8: case WireType::kUInt16: case WireType::kUInt32: count = c.uint_contents_size(); field = "uint_contents"; break;
    case WireType::kUInt64: count = c.uint64_contents_size(); field = "uint64_contents"; break;
    case WireType::kFp32: count = c.fp32_contents_size(); field = "fp32_contents"; break;
    case WireType::kFp64: count = c.fp64_contents_size(); field = "fp64_contents"; break;
    case WireType::kBytes: count = c.bytes_contents_size(); field = "bytes_contents"; break;
    case WireType::kFp16:
      return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': FP16 has no typed contents: send it in raw_input_contents"));
  }
  const int all = c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() + c.uint_contents_size() +
                  c.uint64_contents_size() + c.fp32_contents_size() + c.fp64_contents_size() + c.bytes_contents_size();
  if (all != count) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': datatype ", WireTypeName(type),
                                                   " takes its values in ", field, " only; the request fills other fields too"));
  }
  if (count != elements) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': shape ", ShapeToString(shape), " has ", elements,
                                                   " elements, ", field, " has ", count));
  }
  WireTensor t;
  t.name = in.name();
  t.type = type;
  t.shape = shape;
  if (type == WireType::kBytes) {
    t.bytes.assign(c.bytes_contents().begin(), c.bytes_contents().end());
    return t;
  }
  const std::optional<DType> dtype = ToDType(type);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': datatype ", WireTypeName(type),
                                                   " is not one Loom's models take"));
  }
  LOOM_ASSIGN_OR_RETURN(t.tensor, Tensor::TryAllocate(*dtype, shape));
  const std::string& n = in.name();
  switch (type) {
    case WireType::kBool: LOOM_RETURN_IF_ERROR(CopyValues<uint8_t>(c.bool_contents(), t.tensor, n, field)); break;
    case WireType::kInt8: LOOM_RETURN_IF_ERROR(CopyValues<int8_t>(c.int_contents(), t.tensor, n, field)); break;
    case WireType::kInt16: LOOM_RETURN_IF_ERROR(CopyValues<int16_t>(c.int_contents(), t.tensor, n, field)); break;
    case WireType::kInt32: LOOM_RETURN_IF_ERROR(CopyValues<int32_t>(c.int_contents(), t.tensor, n, field)); break;
    case WireType::kInt64: LOOM_RETURN_IF_ERROR(CopyValues<int64_t>(c.int64_contents(), t.tensor, n, field)); break;
    case WireType::kUInt8: LOOM_RETURN_IF_ERROR(CopyValues<uint8_t>(c.uint_contents(), t.tensor, n, field)); break;
    case WireType::kFp32: LOOM_RETURN_IF_ERROR(CopyValues<float>(c.fp32_contents(), t.tensor, n, field)); break;
    case WireType::kFp64: LOOM_RETURN_IF_ERROR(CopyValues<double>(c.fp64_contents(), t.tensor, n, field)); break;
    default: break;  // types without a dtype were refused above
  }
  return t;
}

bool HasContents(const pb::InferTensorContents& c) {
  return c.bool_contents_size() || c.int_contents_size() || c.int64_contents_size() || c.uint_contents_size() ||
         c.uint64_contents_size() || c.fp32_contents_size() || c.fp64_contents_size() || c.bytes_contents_size();
}

}  // namespace

// The request as the data plane takes it; raw inputs borrow the message's bytes.
absl::StatusOr<InferRequest> FromProto(const pb::ModelInferRequest& m, const ServeLimits& limits) {
  InferRequest r;
  r.model = m.model_name();
  r.version = m.model_version();
  r.id = m.id();
  LOOM_RETURN_IF_ERROR(ReadTimeout(m.parameters(), r.timeout_us));
  if (m.inputs_size() > limits.max_tensors || m.outputs_size() > limits.max_tensors) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", m.inputs_size(), " inputs and ", m.outputs_size(),
                                                   " outputs; the limit is ", limits.max_tensors, " (max_tensors)"));
  }
  const bool raw = m.raw_input_contents_size() > 0;
  if (raw && m.raw_input_contents_size() != m.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat("raw_input_contents has ", m.raw_input_contents_size(),
                                                   " entries for ", m.inputs_size(), " inputs: give one per input, or none"));
  }
  for (int i = 0; i < m.inputs_size(); ++i) {
    const auto& in = m.inputs(i);
    LOOM_ASSIGN_OR_RETURN(WireType type, ParseWireType(in.datatype()));
    if (in.shape_size() > limits.max_rank) {
      return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': rank ", in.shape_size(),
                                                     " is over the limit of ", limits.max_rank, " (max_rank)"));
    }
    const Shape shape(in.shape().begin(), in.shape().end());
    if (raw) {
      if (HasContents(in.contents())) {
        return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' has both contents and raw_input_contents"));
      }
      LOOM_ASSIGN_OR_RETURN(WireTensor t, TensorFromBytes(in.name(), type, shape, m.raw_input_contents(i), limits));
      r.inputs.push_back(std::move(t));
    } else {
      LOOM_ASSIGN_OR_RETURN(WireTensor t, FromContents(in, type, shape, limits));
      r.inputs.push_back(std::move(t));
    }
  }
  for (const auto& o : m.outputs()) r.outputs.push_back({o.name(), true});
  return r;
}

namespace {

void ToProto(const InferResponse& r, pb::ModelInferResponse& m) {
  m.set_model_name(r.model);
  m.set_model_version(r.version);
  m.set_id(r.id);
  std::string storage;
  for (const WireTensor& t : r.outputs) {
    auto* out = m.add_outputs();
    out->set_name(t.name);
    out->set_datatype(WireTypeName(t.type));
    for (int64_t d : t.shape) out->add_shape(d);
    const std::string_view bytes = TensorBytes(t, storage);
    m.add_raw_output_contents()->assign(bytes.data(), bytes.size());
  }
}

using AsyncService = pb::GRPCInferenceService::AsyncService;

// How many Call objects live. The server's shutdown returns once the connections are gone, not
// once every call is answered: a call the client cancelled may still wait for the engine. The
// queues are shut down only when no call is left to start an operation on them.
class CallCount {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++live_;
  }
  void Remove() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--live_ == 0) cv_.notify_all();
  }
  void WaitForNone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return live_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t live_ = 0;  // requires mu_
};

// What the calls of one completion queue share: the service, the queue, whether new calls may
// still be asked for (not once the server stops), and the count of live calls.
struct Queue {
  AsyncService* service = nullptr;
  grpc::ServerCompletionQueue* cq = nullptr;
  std::shared_mutex* accepting_mu = nullptr;
  const bool* accepting = nullptr;  // requires accepting_mu
  CallCount* calls = nullptr;
};

// One call, from the moment its method is asked for on a queue until it is answered and done.
// Its events come back from the queue as tags (Tag*): arrived (the call came, or not: the server
// stops), answered (Finish went out) and done (the call ended, or the client cancelled it). It is
// deleted when both of the last two have come, whichever thread delivers the last one.
class Call {
 public:
  enum class Event { kArrived, kAnswered, kDone };
  struct Tag {
    Call* call;
    Event event;
  };

  virtual ~Call() { queue_.calls->Remove(); }

  // On the queue's thread.
  void Handle(Event event, bool ok) {
    switch (event) {
      case Event::kArrived:
        if (!ok) {  // the server stops: this call never came, and no other tag of it will
          delete this;
          return;
        }
        pending_.store(2);  // answered and done
        // The next call of the method is asked for once this one is handled: while this thread
        // runs a model inline, gRPC gives new calls to the queues that asked.
        Arrived();
        AskForNext();
        return;
      case Event::kDone:
        if (context_.IsCancelled()) cancelled_->store(true);  // the engine drops it if still queued
        return Release();
      case Event::kAnswered:
        return Release();
    }
  }

 protected:
  explicit Call(const Queue& queue) : queue_(queue) {
    queue_.calls->Add();
    context_.AsyncNotifyWhenDone(&done_);
  }
  // Asks gRPC for the next call of the same method on the same queue.
  virtual void AskForNext() = 0;
  // Handles the call: fills the response, answers (now, or later from any thread).
  virtual void Arrived() = 0;

  // Whether new calls may be asked for; `ask` runs under the lock, so that the queue is not shut
  // down between the check and the request.
  template <typename F>
  void IfAccepting(F ask) {
    std::shared_lock<std::shared_mutex> lock(*queue_.accepting_mu);
    if (*queue_.accepting) ask();
  }

  Queue queue_;
  grpc::ServerContext context_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  Tag arrived_{this, Event::kArrived}, answered_{this, Event::kAnswered}, done_{this, Event::kDone};

 private:
  void Release() {
    if (pending_.fetch_sub(1) == 1) delete this;
  }
  std::atomic<int> pending_{0};
};

// A unary call of one method: its request, its response and the handler that answers it.
template <typename Request, typename Response>
class Unary final : public Call {
 public:
  using Ask = void (AsyncService::*)(grpc::ServerContext*, Request*, grpc::ServerAsyncResponseWriter<Response>*,
                                     grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Fills `call.response` and calls `call.Answer` exactly once, at once or later from any thread.
  using Handler = std::function<void(Unary& call)>;

  // Asks for the first call of the method on `queue`; each call that comes asks for the next.
  static void Start(const Queue& queue, Ask ask, const Handler* handler) { (new Unary(queue, ask, handler))->AskNow(); }

  // The first answer goes out; a later one (from a handler that failed after answering) is dropped.
  void Answer(const absl::Status& status) {
    if (answered_once_.exchange(true)) return;
    if (status.ok()) {
      writer_.Finish(response, grpc::Status::OK, &answered_);
    } else {
      writer_.FinishWithError(ToGrpc(status), &answered_);
    }
  }
  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }

  Request request;
  Response response;

 private:
  Unary(const Queue& queue, Ask ask, const Handler* handler) : Call(queue), ask_(ask), handler_(handler) {}
  void AskNow() { std::invoke(ask_, *queue_.service, &context_, &request, &writer_, queue_.cq, queue_.cq, &arrived_); }
  void AskForNext() override {
    IfAccepting([&] { (new Unary(queue_, ask_, handler_))->AskNow(); });
  }
  void Arrived() override {
    try {
      (*handler_)(*this);
    } catch (const std::exception& e) {  // a handler answers before it could throw, or not at all
      Answer(absl::InternalError(absl::StrCat("the call failed: ", e.what())));
    } catch (...) {
      Answer(absl::InternalError("the call failed"));
    }
  }

  Ask ask_;
  const Handler* handler_;
  std::atomic<bool> answered_once_{false};
  grpc::ServerAsyncResponseWriter<Response> writer_{&context_};
};

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

}  // namespace

// The server: gRPC's async API, a completion queue per thread. A thread takes a call's events and
// handles the call there: metadata is answered at once; an inference is parsed and handed to the
// data plane, which runs it on this thread when a worker of the model is idle, else queues it and
// answers from the worker. No hand-off to another gRPC thread on the way.
struct GrpcServer::Impl {
  explicit Impl(DataPlane& plane) : plane(plane) {}
  ~Impl() {
    for (std::thread& t : threads) t.join();
    for (std::thread& t : admin_threads) t.join();
  }

  void RegisterHandlers();
  // Loads and unloads take seconds (a model is loaded and measured): they run on a thread of
  // their own, not on a queue's.
  template <typename Call>
  void Admin(Call& call, std::function<absl::Status()> work);

  DataPlane& plane;
  AsyncService service;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  std::unique_ptr<grpc::Server> server;  // destroyed before its queues
  std::vector<std::thread> threads;
  std::shared_mutex accepting_mu;
  bool accepting = true;  // requires accepting_mu
  CallCount calls;
  std::vector<std::function<void(const Queue&)>> starters;  // one per method: asks for its first call
  std::deque<std::any> handlers;  // the methods' handlers, at stable addresses
  std::mutex admin_mu;
  std::vector<std::thread> admin_threads;  // requires admin_mu; joined at the end
  int port = 0;
  bool stopped = false;
};

template <typename Call>
void GrpcServer::Impl::Admin(Call& call, std::function<absl::Status()> work) {
  std::lock_guard<std::mutex> lock(admin_mu);
  try {
    admin_threads.emplace_back([&call, work = std::move(work)] {
      absl::Status s;
      try {
        s = work();
      } catch (const std::exception& e) {
        s = absl::InternalError(absl::StrCat("repository operation failed: ", e.what()));
      } catch (...) {
        s = absl::InternalError("repository operation failed");
      }
      try {
        call.Answer(s);
      } catch (...) {
        Log().error("gRPC: a repository operation's answer could not be sent");
      }
    });
  } catch (const std::system_error& e) {
    call.Answer(absl::UnavailableError(absl::StrCat("cannot start the repository operation: ", e.what())));
  }
}

void GrpcServer::Impl::RegisterHandlers() {
  // Registers `handler` for the method that `ask` asks for.
  auto on = [this](auto ask, auto handler) {
    using U = std::remove_reference_t<typename decltype(std::function(handler))::argument_type>;
    const auto* h = std::any_cast<typename U::Handler>(&handlers.emplace_back(typename U::Handler(handler)));
    starters.push_back([ask, h](const Queue& q) { U::Start(q, ask, h); });
  };
  on(&AsyncService::RequestServerLive, [](Unary<pb::ServerLiveRequest, pb::ServerLiveResponse>& c) {
    c.response.set_live(true);
    c.Answer(absl::OkStatus());
  });
  on(&AsyncService::RequestServerReady, [this](Unary<pb::ServerReadyRequest, pb::ServerReadyResponse>& c) {
    c.response.set_ready(plane.Ready());
    c.Answer(absl::OkStatus());
  });
  on(&AsyncService::RequestModelReady, [this](Unary<pb::ModelReadyRequest, pb::ModelReadyResponse>& c) {
    const absl::Status s = plane.ModelReady(c.request.name(), c.request.version());
    if (s.code() == absl::StatusCode::kNotFound) return c.Answer(s);
    c.response.set_ready(s.ok());
    c.Answer(absl::OkStatus());
  });
  on(&AsyncService::RequestServerMetadata, [this](Unary<pb::ServerMetadataRequest, pb::ServerMetadataResponse>& c) {
    const serve::ServerMetadata m = plane.Metadata();
    c.response.set_name(m.name);
    c.response.set_version(m.version);
    for (const std::string& e : m.extensions) c.response.add_extensions(e);
    c.Answer(absl::OkStatus());
  });
  on(&AsyncService::RequestModelMetadata, [this](Unary<pb::ModelMetadataRequest, pb::ModelMetadataResponse>& c) {
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
  on(&AsyncService::RequestModelInfer, [this](InferCall& c) {
    auto parsed = FromProto(c.request, plane.limits());
    if (!parsed.ok()) {
      plane.CountRejected(c.request.model_name(), "grpc", parsed.status());
      return c.Answer(parsed.status());
    }
    parsed->cancelled = c.cancelled();
    // The request message (whose bytes the inputs borrow) lives until the call is done.
    plane.Infer(std::move(*parsed), "grpc", [&c](absl::StatusOr<InferResponse> r) {
      try {
        if (r.ok()) ToProto(*r, c.response);
        c.Answer(r.status());
      } catch (const std::exception& e) {
        c.Answer(absl::ResourceExhaustedError(absl::StrCat("the response could not be made: ", e.what())));
      }
    });
  });
  on(&AsyncService::RequestRepositoryIndex,
     [this](Unary<pb::RepositoryIndexRequest, pb::RepositoryIndexResponse>& c) {
       for (const RepositoryEntry& e : plane.Index(c.request.ready())) {
         auto* m = c.response.add_models();
         m->set_name(e.name);
         m->set_version(e.version);
         m->set_state(e.state);
         m->set_reason(e.reason);
       }
       c.Answer(absl::OkStatus());
     });
  on(&AsyncService::RequestRepositoryModelLoad,
     [this](Unary<pb::RepositoryModelLoadRequest, pb::RepositoryModelLoadResponse>& c) {
       Admin(c, [this, name = c.request.model_name()] { return plane.Load(name); });
     });
  on(&AsyncService::RequestRepositoryModelUnload,
     [this](Unary<pb::RepositoryModelUnloadRequest, pb::RepositoryModelUnloadResponse>& c) {
       Admin(c, [this, name = c.request.model_name()] { return plane.Unload(name); });
     });
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

int GrpcServer::DefaultThreads() {
  const int cores = static_cast<int>(UsableCpus().size());  // taskset and cgroups honoured
  return std::min(std::max(cores, 1), 16) + 2;
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(DataPlane& plane, const std::string& host, int port,
                                                              int threads) {
  if (threads <= 0) threads = DefaultThreads();
  auto impl = std::make_unique<Impl>(plane);
  grpc::ServerBuilder builder;
  const std::string address = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                                                   : absl::StrCat(host, ":", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &impl->port);
  builder.RegisterService(&impl->service);
  const int64_t max_message = std::min<int64_t>(plane.limits().max_body_bytes, std::numeric_limits<int>::max());
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message));
  builder.SetMaxSendMessageSize(-1);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, plane.limits().max_connections);
  for (int i = 0; i < threads; ++i) impl->queues.push_back(builder.AddCompletionQueue());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    if (impl->server) impl->server->Shutdown();
    for (auto& q : impl->queues) {
      q->Shutdown();
      Poll(q.get());
    }
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", address));
  }
  impl->RegisterHandlers();
  try {
    for (auto& q : impl->queues) {  // a queue's thread first, then its calls: no call on a queue without one
      impl->threads.emplace_back(Poll, q.get());
      const Queue queue{&impl->service, q.get(), &impl->accepting_mu, &impl->accepting, &impl->calls};
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
  // Queues without a thread (one could not be started; no call was asked for there) are drained here.
  for (size_t i = impl_->threads.size(); i < impl_->queues.size(); ++i) Poll(impl_->queues[i].get());
  impl_->threads.clear();
}

}  // namespace loom::serve
