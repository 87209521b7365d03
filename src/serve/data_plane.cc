#include "serve/data_plane.h"

#include <condition_variable>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/log.h"
#include "serve/entry.h"

namespace loom::serve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = "1";  // every model has one version

bool KnownVersion(const std::string& v) { return v.empty() || v == kVersion; }

std::string Outcome(const absl::Status& s) {
  return s.ok() ? "success" : absl::AsciiStrToLower(absl::StatusCodeToString(s.code()));
}

absl::Status UnknownModel(const std::string& model, const std::string& version) {
  return absl::NotFoundError(
      absl::StrCat("unknown model '", model, "'", version.empty() ? "" : " version " + version));
}

// The model and version names of a request, checked before they are looked up or echoed.
absl::Status CheckModelNames(const std::string& model, const std::string& version,
                             const ServeLimits& limits) {
  LOOM_RETURN_IF_ERROR(CheckName("model", model, limits));
  if (!version.empty()) LOOM_RETURN_IF_ERROR(CheckName("version", version, limits));
  return absl::OkStatus();
}

}  // namespace

DataPlane::DataPlane(DataPlaneOptions options)
    : options_(std::move(options)), budget_(options_.limits.max_inflight_bytes) {}

DataPlane::~DataPlane() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (admin_thread_.joinable()) admin_thread_.join();
  std::map<std::string, std::shared_ptr<Entry>> models;
  {
    std::lock_guard<std::mutex> lock(mu_);
    models.swap(models_);
  }
  // Pipelines first, here, while the engine and this plane are whole: they answer their frames
  // and remove their models from the engine.
  for (auto& [name, e] : models) {
    if (e->pipeline) e->pipeline->Close();
  }
  if (engine_) engine_->Shutdown();
}

std::shared_ptr<DataPlane::Entry> DataPlane::Find(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second;
}

std::vector<std::string> DataPlane::ModelNames() const {
  std::vector<std::string> names;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, e] : models_) names.push_back(name);
  return names;
}

void DataPlane::MarkBroken(std::string why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return;
    broken_why_ = std::move(why);
    broken_ = true;
  }
  Log().error("{}: liveness now fails, so that the server is restarted", Broken());
}

std::string DataPlane::Broken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return broken_why_;
}

bool DataPlane::Ready() const {
  if (announced_ || draining_ || broken_) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return start_failures_.empty();
}

absl::Status DataPlane::ModelReady(const std::string& model, const std::string& version) const {
  LOOM_RETURN_IF_ERROR(CheckModelNames(model, version, options_.limits));
  if (!Find(model) || !KnownVersion(version)) return UnknownModel(model, version);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

ServerMetadata DataPlane::Metadata() const {
  return {"loom", LOOM_VERSION_STRING, {"binary_tensor_data", "model_repository", "parameters"}};
}

absl::StatusOr<ModelMetadata> DataPlane::Metadata(const std::string& model,
                                                  const std::string& version) const {
  LOOM_RETURN_IF_ERROR(CheckModelNames(model, version, options_.limits));
  std::shared_ptr<Entry> e = Find(model);
  if (!e || !KnownVersion(version)) return UnknownModel(model, version);
  ModelMetadata m;
  m.name = model;
  m.versions = {kVersion};
  if (e->pipeline) {
    m.platform = "loom_pipeline";
    m.inputs = {{"image", WireType::kBytes, {1}}};
    m.outputs = {{"record", WireType::kBytes, {1}}};
    return m;
  }
  m.platform = "onnxruntime_onnx";
  auto describe = [](const std::vector<TensorInfo>& tensors, std::vector<TensorMetadata>& out) {
    for (const TensorInfo& t : tensors) {
      TensorMetadata tm{t.name, FromDType(t.dtype), {}};
      for (const Dim& d : t.shape) tm.shape.push_back(d.is_dynamic() ? -1 : d.value);
      out.push_back(std::move(tm));
    }
  };
  describe(e->info->inputs, m.inputs);
  describe(e->info->outputs, m.outputs);
  return m;
}

void DataPlane::Finish(const std::string& model, const std::string& protocol,
                       Clock::time_point start, const absl::Status& status, bool known) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (known) {
      Counters& c = counters_[{model, protocol}];
      ++c.outcomes[Outcome(status)];
      c.duration_us->Record(static_cast<uint64_t>(std::max<int64_t>(us.count(), 0)));
    }
    --in_flight_by_protocol_[protocol];
  }
  if (--in_flight_ == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_cv_.notify_all();
  }
}

void DataPlane::CountRejected(const std::string& model, const std::string& protocol,
                              const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!models_.count(model)) return;  // names from requests become labels only when served
  ++counters_[{model, protocol}].outcomes[Outcome(status)];
}

void DataPlane::Infer(InferRequest request, const std::string& protocol, Done done) {
  const auto start = Clock::now();
  const std::string model = request.model;
  const absl::Status names = CheckModelNames(model, request.version, options_.limits);
  ++in_flight_;
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++in_flight_by_protocol_[protocol];
    auto it = draining_ || !names.ok() ? models_.end() : models_.find(model);
    if (it != models_.end()) {
      e = it->second;
      e->users.fetch_add(1);  // retired entries are no longer in models_, and this holds mu_
    }
  }
  EntryUse use(e);
  // Metrics are labelled only with the names of served models.
  const bool known = e && KnownVersion(request.version);
  // Every path answers through here, exactly once.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto answer = [this, model, protocol, start, known, once,
                 done = std::move(done)](absl::StatusOr<InferResponse> r) {
    if (once->exchange(true)) return;
    Finish(model, protocol, start, r.status(), known);
    try {
      done(std::move(r));
    } catch (...) {
      Log().error("a response handler threw; the exception was dropped");
    }
  };
  if (!names.ok()) return answer(names);
  if (draining_) {
    return answer(absl::UnavailableError("the server is shutting down: request not accepted"));
  }
  if (!known) return answer(UnknownModel(model, request.version));
  try {
    if (e->pipeline) {
      InferPipeline(*e, std::move(request), answer);
    } else {
      InferKnown(*e, std::move(request), answer);
    }
  } catch (const std::exception& ex) {
    Log().error("model '{}': {}", model, ex.what());
    answer(absl::InternalError(absl::StrCat("model '", model, "': the request failed")));
  }
}

void DataPlane::InferPipeline(const Entry& e, InferRequest request, const Answer& answer) {
  if (request.inputs.size() != 1) {
    return answer(absl::InvalidArgumentError(absl::StrCat(
        "pipeline '", e.name, "' takes one input (an image), got ", request.inputs.size())));
  }
  std::shared_ptr<PipelineModel> pipeline = e.pipeline;  // held while submitting, not after
  auto shared = std::make_shared<InferRequest>(std::move(request));
  pipeline->Infer(shared->inputs[0], [shared, answer](absl::StatusOr<std::string> json) {
    if (!json.ok()) return answer(json.status());
    InferResponse response{shared->model, kVersion, shared->id, {}, {}};
    std::string wire;
    AppendBytesElement(wire, *json);
    response.outputs.push_back(OwnedBytesTensor("record", {1}, std::move(wire)));
    response.binary.push_back(shared->outputs.empty() ? shared->binary_outputs
                                                      : shared->outputs[0].binary);
    answer(std::move(response));
  });
}

void DataPlane::InferKnown(const Entry& e, InferRequest request, const Answer& answer) {
  const ModelInfo& info = *e.info;
  NamedTensors inputs;
  for (const WireTensor& t : request.inputs) {
    if (t.type == WireType::kBytes || !ToDType(t.type)) {
      return answer(absl::InvalidArgumentError(absl::StrCat("model '", e.name, "' input '", t.name,
                                                            "': datatype ", WireTypeName(t.type),
                                                            " is not one its inputs take")));
    }
    inputs.push_back({t.name, t.tensor});
  }
  // Which outputs, in which form.
  std::vector<int> selected;
  std::vector<bool> binary;
  if (request.outputs.empty()) {
    for (size_t i = 0; i < info.outputs.size(); ++i) {
      selected.push_back(static_cast<int>(i));
      binary.push_back(request.binary_outputs);
    }
  }
  for (const RequestedOutput& o : request.outputs) {
    const int i = info.FindOutput(o.name);
    if (i < 0) {
      std::vector<std::string> names;
      for (const TensorInfo& t : info.outputs) names.push_back("'" + t.name + "'");
      return answer(absl::InvalidArgumentError(absl::StrCat("model '", e.name, "' has no output '",
                                                            o.name, "'; its outputs are ",
                                                            absl::StrJoin(names, ", "))));
    }
    if (std::find(selected.begin(), selected.end(), i) != selected.end()) {
      // Each copy would be another copy of the tensor in the answer.
      return answer(absl::InvalidArgumentError(
          absl::StrCat("output '", o.name, "' of model '", e.name, "' is requested twice")));
    }
    selected.push_back(i);
    binary.push_back(o.binary);
  }
  SubmitOptions options;
  if (request.timeout_us) {
    options.deadline = SaturatingAdd(
        Clock::now(), std::chrono::microseconds(std::max<int64_t>(*request.timeout_us, 0)));
  }
  options.cancelled = request.cancelled;
  auto complete = [model = request.model, id = request.id, selected = std::move(selected),
                   binary = std::move(binary), answer](absl::StatusOr<InferResult> r) {
    if (!r.ok()) return answer(r.status());
    InferResponse response{model, kVersion, id, {}, {}};
    try {  // the engine drops what a callback throws: answer it here instead
      for (int i : selected) {
        const NamedTensor& out = r->outputs.at(static_cast<size_t>(i));
        WireTensor t;
        t.name = out.name;
        t.type = FromDType(out.tensor.dtype());
        t.shape = out.tensor.shape();
        t.tensor = out.tensor;
        response.outputs.push_back(std::move(t));
      }
      response.binary = binary;
    } catch (const std::exception& ex) {
      Log().error("model '{}': the response could not be made: {}", model, ex.what());
      return answer(absl::ResourceExhaustedError(
          absl::StrCat("model '", model, "': the response could not be made")));
    }
    answer(std::move(response));
  };
  // When a worker of the model is idle the request runs on this thread (no hand-off to a worker
  // and back): the front ends call from threads that may spend one run.
  options.run_inline_when_idle = true;
  engine_->Submit(e.engine_name, std::move(inputs), options, std::move(complete));
}

absl::StatusOr<InferResponse> DataPlane::InferSync(InferRequest request,
                                                   const std::string& protocol) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<absl::StatusOr<InferResponse>> result;
  Infer(std::move(request), protocol, [&](absl::StatusOr<InferResponse> r) {
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(r);
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return result.has_value(); });
  return std::move(*result);
}

void DataPlane::AnnounceDrain() {
  announced_ = true;
  Log().info("drain announced: not ready; requests still served");
}

void DataPlane::BeginDrain() {
  announced_ = true;
  draining_ = true;
  Log().info("draining: no new requests; {} in flight", in_flight_.load());
}

bool DataPlane::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

int64_t DataPlane::in_flight() const { return in_flight_; }

}  // namespace loom::serve
