#include "serve/grpc_server.h"

#include <atomic>
#include <limits>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
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

// One ModelInfer call: parsed, submitted, answered when the engine answers; a cancel from the
// client marks the request so that the engine drops it if it is still queued.
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor(DataPlane& plane, const pb::ModelInferRequest* request, pb::ModelInferResponse* response)
      : response_(response) {
    auto parsed = FromProto(*request, plane.limits());
    if (!parsed.ok()) {
      plane.CountRejected(request->model_name(), "grpc", parsed.status());
      Finish(ToGrpc(parsed.status()));
      return;
    }
    parsed->cancelled = cancelled_;
    // The request message (whose bytes the inputs borrow) lives until OnDone, after Finish.
    plane.Infer(std::move(*parsed), "grpc", [this](absl::StatusOr<InferResponse> r) {
      if (r.ok()) ToProto(*r, *response_);
      Finish(ToGrpc(r.status()));
    });
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }

 private:
  pb::ModelInferResponse* response_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

class Service final : public pb::GRPCInferenceService::CallbackService {
 public:
  explicit Service(DataPlane& plane) : plane_(plane) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context, const pb::ServerLiveRequest*,
                                       pb::ServerLiveResponse* response) override {
    response->set_live(true);
    return Done(context, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context, const pb::ServerReadyRequest*,
                                        pb::ServerReadyResponse* response) override {
    response->set_ready(plane_.Ready());
    return Done(context, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context, const pb::ModelReadyRequest* request,
                                       pb::ModelReadyResponse* response) override {
    const absl::Status s = plane_.ModelReady(request->name(), request->version());
    if (s.code() == absl::StatusCode::kNotFound) return Done(context, s);
    response->set_ready(s.ok());
    return Done(context, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context, const pb::ServerMetadataRequest*,
                                           pb::ServerMetadataResponse* response) override {
    const serve::ServerMetadata m = plane_.Metadata();
    response->set_name(m.name);
    response->set_version(m.version);
    for (const std::string& e : m.extensions) response->add_extensions(e);
    return Done(context, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context, const pb::ModelMetadataRequest* request,
                                          pb::ModelMetadataResponse* response) override {
    auto m = plane_.Metadata(request->name(), request->version());
    if (!m.ok()) return Done(context, m.status());
    response->set_name(m->name);
    for (const std::string& v : m->versions) response->add_versions(v);
    response->set_platform(m->platform);
    auto add = [](const std::vector<TensorMetadata>& tensors, auto* field) {
      for (const TensorMetadata& t : tensors) {
        auto* out = field->Add();
        out->set_name(t.name);
        out->set_datatype(WireTypeName(t.type));
        for (int64_t d : t.shape) out->add_shape(d);
      }
    };
    add(m->inputs, response->mutable_inputs());
    add(m->outputs, response->mutable_outputs());
    return Done(context, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext*, const pb::ModelInferRequest* request,
                                       pb::ModelInferResponse* response) override {
    return new InferReactor(plane_, request, response);
  }

  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context, const pb::RepositoryIndexRequest* request,
                                            pb::RepositoryIndexResponse* response) override {
    for (const RepositoryEntry& e : plane_.Index(request->ready())) {
      auto* m = response->add_models();
      m->set_name(e.name);
      m->set_version(e.version);
      m->set_state(e.state);
      m->set_reason(e.reason);
    }
    return Done(context, absl::OkStatus());
  }

  // Loads and unloads take seconds (a model is loaded and measured): they run on a thread of
  // their own, not on gRPC's callback threads.
  grpc::ServerUnaryReactor* RepositoryModelLoad(grpc::CallbackServerContext* context,
                                                const pb::RepositoryModelLoadRequest* request,
                                                pb::RepositoryModelLoadResponse*) override {
    return Admin(context, [this, name = request->model_name()] { return plane_.Load(name); });
  }

  grpc::ServerUnaryReactor* RepositoryModelUnload(grpc::CallbackServerContext* context,
                                                  const pb::RepositoryModelUnloadRequest* request,
                                                  pb::RepositoryModelUnloadResponse*) override {
    return Admin(context, [this, name = request->model_name()] { return plane_.Unload(name); });
  }

  ~Service() override {
    for (std::thread& t : admin_threads_) t.join();
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const absl::Status& s) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpc(s));
    return reactor;
  }

  grpc::ServerUnaryReactor* Admin(grpc::CallbackServerContext* context, std::function<absl::Status()> work) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    std::lock_guard<std::mutex> lock(admin_mu_);
    try {
      admin_threads_.emplace_back([reactor, work = std::move(work)] {
        absl::Status s;
        try {
          s = work();
        } catch (const std::exception& e) {
          s = absl::InternalError(absl::StrCat("repository operation failed: ", e.what()));
        }
        reactor->Finish(ToGrpc(s));
      });
    } catch (const std::system_error& e) {
      reactor->Finish(ToGrpc(absl::UnavailableError(absl::StrCat("cannot start the repository operation: ", e.what()))));
    }
    return reactor;
  }

  DataPlane& plane_;
  std::mutex admin_mu_;
  std::vector<std::thread> admin_threads_;  // requires admin_mu_; joined at the end
};

}  // namespace

struct GrpcServer::Impl {
  explicit Impl(DataPlane& plane) : service(plane) {}
  Service service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  bool stopped = false;
};

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(DataPlane& plane, const std::string& host, int port) {
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
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", address));
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

int GrpcServer::port() const { return impl_->port; }

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() + grace);
  impl_->server->Wait();
}

}  // namespace loom::serve
