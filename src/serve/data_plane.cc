#include "serve/data_plane.h"

#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "engine/config.h"
#include "engine/yaml_reader.h"
#include "loom/pipeline.h"

namespace loom::serve {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = "1";  // every model has one version

bool KnownVersion(const std::string& v) { return v.empty() || v == kVersion; }

std::string Outcome(const absl::Status& s) {
  return s.ok() ? "success" : absl::AsciiStrToLower(absl::StatusCodeToString(s.code()));
}

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

// The model file of a repository folder: model.onnx, else its only .onnx.
absl::StatusOr<std::string> ModelFile(const fs::path& folder) {
  if (fs::exists(folder / "model.onnx")) return (folder / "model.onnx").string();
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (e.path().extension() == ".onnx") found.push_back(e.path().string());
  }
  if (found.size() == 1) return found[0];
  return absl::NotFoundError(absl::StrCat("model folder '", folder.string(), "' has ",
                                          found.empty() ? "no .onnx file" : "several .onnx files (name one model.onnx)",
                                          " and no pipeline.yaml"));
}

// The engine config of a model: a folder's config.yaml (its path defaulting to the folder's
// model), a bare folder's model, or an .onnx file given by --model.
absl::StatusOr<ModelConfig> ConfigFor(const std::string& name, const std::string& where) {
  ModelConfig config;
  std::error_code ec;
  if (fs::is_directory(where, ec) && fs::exists(fs::path(where) / "config.yaml")) {
    const std::string file = (fs::path(where) / "config.yaml").string();
    LOOM_ASSIGN_OR_RETURN(YAML::Node node, LoadYamlFile(file, "model config"));
    if (!node["path"]) {
      LOOM_ASSIGN_OR_RETURN(std::string path, ModelFile(where));
      node["path"] = path;
    }
    LOOM_ASSIGN_OR_RETURN(config, ParseModelConfig(node, YamlReader(file), where));
  } else if (fs::is_directory(where, ec)) {
    LOOM_ASSIGN_OR_RETURN(config.path, ModelFile(where));
  } else {
    config.path = where;
  }
  config.name = name;
  return config;
}

}  // namespace

// A YAML pipeline served as one model: an encoded image (BYTES) or a raw frame (UINT8 HxWxC) in,
// the frame's record (BYTES: JSON) out. Frames are submitted to the pipeline as requests arrive and
// their records routed back by frame index, in whatever order requests come.
class PipelineModel {
 public:
  static absl::StatusOr<std::shared_ptr<PipelineModel>> Load(const std::string& name, const std::string& yaml,
                                                            Engine* engine) {
    PipelineOptions options;
    options.sinks = false;
    options.require_source = false;
    options.engine = engine;
    options.model_prefix = name + ".";
    auto model = std::shared_ptr<PipelineModel>(new PipelineModel());
    LOOM_ASSIGN_OR_RETURN(model->pipeline_, Pipeline::Load(yaml, options));
    return model;
  }

  ~PipelineModel() { Close(); }

  // No new frames (they are answered UNAVAILABLE); the frames submitted are answered; the
  // pipeline's models leave the engine. Idempotent; never called from the dispatcher.
  void Close() {
    {
      std::lock_guard<std::mutex> submit(submit_mu_);  // waits for a Submit under way
      if (closed_) return;
      closed_ = true;
    }
    if (pipeline_) pipeline_->Finish();
    if (dispatcher_.joinable()) dispatcher_.join();
    pipeline_.reset();
  }

  using Done = std::function<void(absl::StatusOr<std::string>)>;
  // `done` is called exactly once, here or on the dispatcher thread.
  void Infer(const WireTensor& image, Done done) {
    absl::StatusOr<int64_t> index;
    std::unique_lock<std::mutex> submit(submit_mu_);
    if (closed_ || broken_) return done(absl::UnavailableError("the pipeline is unloaded"));
    if (image.type == WireType::kBytes) {
      if (image.bytes.size() != 1) {
        return done(absl::InvalidArgumentError(absl::StrCat("input '", image.name, "': one encoded image, got ",
                                                            image.bytes.size(), " BYTES elements")));
      }
      index = pipeline_->SubmitEncoded(image.bytes[0]);
    } else if (image.type == WireType::kUInt8 && (image.shape.size() == 3 || (image.shape.size() == 4 && image.shape[0] == 1))) {
      const size_t off = image.shape.size() - 3;
      ImageView view{static_cast<int>(image.shape[off + 1]), static_cast<int>(image.shape[off]),
                     static_cast<int>(image.shape[off + 2]), static_cast<const uint8_t*>(image.tensor.data()), 0};
      index = pipeline_->Submit(view);
    } else {
      return done(absl::InvalidArgumentError(absl::StrCat(
          "input '", image.name, "': a pipeline takes one encoded image (BYTES [1]) or one frame "
          "(UINT8 [H,W,C] BGR), got ", WireTypeName(image.type), " ", ShapeToString(image.shape))));
    }
    if (!index.ok()) return done(index.status());
    if (!dispatcher_.joinable()) {  // after the first Submit: before it, Next has no frames to wait for
      try {
        dispatcher_ = std::thread([this] { Dispatch(); });
      } catch (const std::system_error& e) {
        broken_ = true;
        return done(absl::UnavailableError(absl::StrCat("the pipeline cannot start its dispatcher: ", e.what())));
      }
    }
    std::optional<PipelineRecord> early;
    {
      std::lock_guard<std::mutex> lock(route_mu_);
      auto it = early_.find(*index);
      if (it != early_.end()) {
        early = std::move(it->second);
        early_.erase(it);
      } else {
        waiting_[*index] = std::move(done);
      }
    }
    submit.unlock();
    if (early) Answer(*early, done);
  }

 private:
  PipelineModel() = default;

  static void Answer(const PipelineRecord& r, const Done& done) {
    if (r.failed) return done(absl::InvalidArgumentError(absl::StrCat("the pipeline failed on this frame: ", r.error)));
    done(r.json);
  }

  void Dispatch() {
    try {
      while (auto r = pipeline_->Next(true)) {
        Done done;
        {
          std::lock_guard<std::mutex> lock(route_mu_);
          auto it = waiting_.find(r->frame);
          if (it == waiting_.end()) {
            early_[r->frame] = std::move(*r);
            continue;
          }
          done = std::move(it->second);
          waiting_.erase(it);
        }
        Answer(*r, done);
      }
    } catch (const std::exception& e) {
      // Nothing escapes this thread: the frames still waiting get the error, new ones are refused.
      Log().error("pipeline dispatcher: {}", e.what());
      broken_ = true;
    }
    std::map<int64_t, Done> left;
    {
      std::lock_guard<std::mutex> lock(route_mu_);
      left.swap(waiting_);
    }
    for (auto& [frame, done] : left) done(absl::UnavailableError("the pipeline stopped before this frame's record"));
  }

  std::unique_ptr<Pipeline> pipeline_;
  std::mutex submit_mu_;  // Submit and the registration of its frame; closed_
  bool closed_ = false;   // requires submit_mu_
  std::atomic<bool> broken_{false};
  std::mutex route_mu_;   // waiting_, early_
  std::map<int64_t, Done> waiting_;
  std::map<int64_t, PipelineRecord> early_;
  std::thread dispatcher_;
};

// What requests use of a loaded model is owned here (a copy of the model's description, the
// pipeline by shared_ptr), so that an unload or reload under way never pulls it from under them.
struct DataPlane::Entry {
  std::string name;
  std::string source;  // .onnx file or pipeline.yaml
  std::shared_ptr<const ModelInfo> info;  // an engine model
  std::shared_ptr<PipelineModel> pipeline;
};

DataPlane::DataPlane(DataPlaneOptions options) : options_(std::move(options)) {}

DataPlane::~DataPlane() {
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

absl::StatusOr<std::unique_ptr<DataPlane>> DataPlane::Create(DataPlaneOptions options) {
  auto plane = std::unique_ptr<DataPlane>(new DataPlane(std::move(options)));
  const DataPlaneOptions& o = plane->options_;
  // What to load: --model entries, then every folder of the repository.
  std::vector<std::pair<std::string, std::string>> sources = o.models;
  if (!o.repository.empty()) {
    std::error_code ec;
    if (!fs::is_directory(o.repository, ec)) {
      return absl::NotFoundError(absl::StrCat("model repository '", o.repository, "' is not a folder"));
    }
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(o.repository, ec)) {
      if (e.is_directory()) names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) sources.emplace_back(n, (fs::path(o.repository) / n).string());
  }
  // Plain models are planned together (one measurement of the mix); pipelines are added after.
  std::vector<ModelConfig> configs;
  std::vector<std::pair<std::string, std::string>> later;
  for (const auto& [name, where] : sources) {
    std::error_code ec;
    if (fs::is_directory(where, ec) && fs::exists(fs::path(where) / "pipeline.yaml")) {
      later.emplace_back(name, where);
      continue;
    }
    auto config = ConfigFor(name, where);
    if (!config.ok()) {  // one bad folder does not keep the others from serving
      plane->repository_errors_[name] = std::string(config.status().message());
      Log().error("model '{}' not loaded: {}", name, config.status().ToString());
      continue;
    }
    configs.push_back(std::move(*config));
  }
  auto engine = Engine::Create(configs, o.engine);
  if (!engine.ok()) {
    // One bad model must not keep the others from serving: load them one by one, and report it.
    Log().warn("loading every model at once failed ({}); loading them one by one", std::string(engine.status().message()));
    LOOM_ASSIGN_OR_RETURN(engine, Engine::Create({}, o.engine));
    for (const ModelConfig& c : configs) {
      if (absl::Status s = (*engine)->AddModel(c); !s.ok()) {
        plane->repository_errors_[c.name] = std::string(s.message());
        Log().error("model '{}' not loaded: {}", c.name, s.ToString());
      }
    }
  }
  plane->engine_ = std::move(*engine);
  for (const ModelConfig& c : configs) {
    if (plane->repository_errors_.count(c.name)) continue;
    auto entry = std::make_shared<Entry>();
    entry->name = c.name;
    entry->source = c.path;
    entry->info = std::make_shared<const ModelInfo>(*plane->engine_->FindModel(c.name));
    plane->models_[c.name] = entry;
  }
  for (const auto& [name, where] : later) {
    if (absl::Status s = plane->LoadLocked(name, where); !s.ok()) {
      plane->repository_errors_[name] = std::string(s.message());
      Log().error("pipeline '{}' not loaded: {}", name, s.ToString());
    }
  }
  plane->ready_ = plane->repository_errors_.empty();
  plane->ready_computed_ = true;
  Log().info("serving {} models ({} failed to load) on the plan:\n{}", plane->models_.size(),
             plane->repository_errors_.size(), plane->engine_->DescribePlan());
  return plane;
}

absl::Status DataPlane::LoadLocked(const std::string& name, const std::string& where) {
  auto entry = std::make_shared<Entry>();
  entry->name = name;
  std::error_code ec;
  if (fs::is_directory(where, ec) && fs::exists(fs::path(where) / "pipeline.yaml")) {
    entry->source = (fs::path(where) / "pipeline.yaml").string();
    LOOM_ASSIGN_OR_RETURN(entry->pipeline, PipelineModel::Load(name, entry->source, engine_.get()));
  } else {
    LOOM_ASSIGN_OR_RETURN(ModelConfig config, ConfigFor(name, where));
    entry->source = config.path;
    LOOM_RETURN_IF_ERROR(engine_->AddModel(config));
    entry->info = std::make_shared<const ModelInfo>(*engine_->FindModel(name));
  }
  std::lock_guard<std::mutex> lock(mu_);
  models_[name] = std::move(entry);
  repository_errors_.erase(name);
  // Ready again once every model that failed at start has been loaded since.
  if (ready_computed_) ready_ = repository_errors_.empty();
  return absl::OkStatus();
}

std::shared_ptr<DataPlane::Entry> DataPlane::Find(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second;
}

bool DataPlane::Ready() const { return ready_ && !draining_; }

absl::Status DataPlane::ModelReady(const std::string& model, const std::string& version) const {
  if (!Find(model) || !KnownVersion(version)) {
    return absl::NotFoundError(absl::StrCat("unknown model '", model, "'", version.empty() ? "" : " version " + version));
  }
  if (draining_) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

ServerMetadata DataPlane::Metadata() const {
  return {"loom", LOOM_VERSION_STRING, {"binary_tensor_data", "model_repository", "parameters"}};
}

absl::StatusOr<ModelMetadata> DataPlane::Metadata(const std::string& model, const std::string& version) const {
  std::shared_ptr<Entry> e = Find(model);
  if (!e || !KnownVersion(version)) {
    return absl::NotFoundError(absl::StrCat("unknown model '", model, "'", version.empty() ? "" : " version " + version));
  }
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

void DataPlane::Finish(const std::string& model, const std::string& protocol, Clock::time_point start,
                       const absl::Status& status, bool known) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (known) {
      Counters& c = counters_[{model, protocol}];
      ++c.outcomes[Outcome(status)];
      c.duration_us->Record(static_cast<uint64_t>(std::max<int64_t>(us, 0)));
    }
    --in_flight_by_protocol_[protocol];
  }
  if (--in_flight_ == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_cv_.notify_all();
  }
}

void DataPlane::CountRejected(const std::string& model, const std::string& protocol, const absl::Status& status) {
  if (!Find(model)) return;  // names from requests become labels only when they are models
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_[{model, protocol}].outcomes[Outcome(status)];
}

void DataPlane::Infer(InferRequest request, const std::string& protocol, Done done) {
  const auto start = Clock::now();
  const std::string model = request.model;
  ++in_flight_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++in_flight_by_protocol_[protocol];
  }
  std::shared_ptr<Entry> e = draining_ ? nullptr : Find(model);
  // Metrics are labelled only with the names of models (a request's name could be anything).
  const bool known = e && KnownVersion(request.version);
  // Every path answers through here, exactly once.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto answer = [this, model, protocol, start, known, once, done = std::move(done)](absl::StatusOr<InferResponse> r) {
    if (once->exchange(true)) return;
    Finish(model, protocol, start, r.status(), known);
    try {
      done(std::move(r));
    } catch (...) {
      Log().error("a response handler threw; the exception was dropped");
    }
  };
  if (draining_) return answer(absl::UnavailableError("the server is shutting down: request not accepted"));
  if (!known) {
    return answer(absl::NotFoundError(absl::StrCat("unknown model '", model, "'",
                                                   request.version.empty() ? "" : " version " + request.version)));
  }
  try {
    InferKnown(*e, std::move(request), answer);
  } catch (const std::exception& ex) {
    answer(absl::InternalError(absl::StrCat("model '", model, "': ", ex.what())));  // no-op if answered
  }
}

void DataPlane::InferKnown(const Entry& e, InferRequest request, const Answer& answer) {
  const std::string& model = e.name;
  if (e.pipeline) {
    if (request.inputs.size() != 1) {
      return answer(absl::InvalidArgumentError(absl::StrCat("pipeline '", model, "' takes one input (an image), got ",
                                                            request.inputs.size())));
    }
    std::shared_ptr<PipelineModel> pipeline = e.pipeline;  // held while submitting; not by the answer
    auto shared = std::make_shared<InferRequest>(std::move(request));
    pipeline->Infer(shared->inputs[0], [shared, answer](absl::StatusOr<std::string> json) {
      if (!json.ok()) return answer(json.status());
      InferResponse response;
      response.model = shared->model;
      response.version = kVersion;
      response.id = shared->id;
      WireTensor record;
      record.name = "record";
      record.type = WireType::kBytes;
      record.shape = {1};
      record.bytes = {std::move(*json)};
      response.outputs.push_back(std::move(record));
      response.binary.push_back(shared->outputs.empty() ? shared->binary_outputs : shared->outputs[0].binary);
      answer(std::move(response));
    });
    return;
  }
  const ModelInfo& info = *e.info;
  NamedTensors inputs;
  for (const WireTensor& t : request.inputs) {
    if (t.type == WireType::kBytes || !ToDType(t.type)) {
      return answer(absl::InvalidArgumentError(absl::StrCat("model '", model, "' input '", t.name, "': datatype ",
                                                            WireTypeName(t.type), " is not one its inputs take")));
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
  } else {
    for (const RequestedOutput& o : request.outputs) {
      const int i = info.FindOutput(o.name);
      if (i < 0) {
        std::vector<std::string> names;
        for (const TensorInfo& t : info.outputs) names.push_back("'" + t.name + "'");
        return answer(absl::InvalidArgumentError(absl::StrCat("model '", model, "' has no output '", o.name,
                                                              "'; its outputs are ", absl::StrJoin(names, ", "))));
      }
      selected.push_back(i);
      binary.push_back(o.binary);
    }
  }
  SubmitOptions options;
  if (request.timeout_us) {
    options.deadline = SaturatingAdd(Clock::now(), std::chrono::microseconds(std::max<int64_t>(*request.timeout_us, 0)));
  }
  options.cancelled = request.cancelled;
  auto meta = std::make_shared<InferRequest>();
  meta->model = request.model;
  meta->id = request.id;
  auto complete = [meta, selected, binary, answer](absl::StatusOr<InferResult> r) mutable {
                    if (!r.ok()) return answer(r.status());
                    for (int i : selected) {
                      if (static_cast<size_t>(i) >= r->outputs.size()) {  // reloaded as another model meanwhile
                        return answer(absl::UnavailableError("the model was reloaded while the request waited"));
                      }
                    }
                    InferResponse response;
                    try {  // the engine drops what a callback throws: answer it here instead
                      response.model = meta->model;
                      response.version = kVersion;
                      response.id = meta->id;
                      for (int i : selected) {
                        const NamedTensor& out = r->outputs[static_cast<size_t>(i)];
                        WireTensor t;
                        t.name = out.name;
                        t.type = FromDType(out.tensor.dtype());
                        t.shape = out.tensor.shape();
                        t.tensor = out.tensor;
                        response.outputs.push_back(std::move(t));
                      }
                      response.binary = binary;
                    } catch (const std::exception& e) {
                      return answer(absl::ResourceExhaustedError(
                          absl::StrCat("model '", meta->model, "': the response could not be made: ", e.what())));
                    }
                    answer(std::move(response));
  };
  // When a worker of the model is idle the request runs on this thread (no hand-off to a worker
  // and back): the front ends call from threads that may spend one run.
  options.run_inline_when_idle = true;
  engine_->Submit(model, std::move(inputs), options, std::move(complete));
}

absl::StatusOr<InferResponse> DataPlane::InferSync(InferRequest request, const std::string& protocol) {
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

std::vector<RepositoryEntry> DataPlane::Index(bool ready_only) const {
  std::vector<RepositoryEntry> out;
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> names;
  for (const auto& [name, e] : models_) names.insert(name);
  for (const auto& [name, why] : repository_errors_) names.insert(name);
  if (!options_.repository.empty()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options_.repository, ec)) {
      if (e.is_directory()) names.insert(e.path().filename().string());
    }
  }
  for (const std::string& name : names) {
    if (models_.count(name)) {
      out.push_back({name, kVersion, "READY", ""});
    } else if (!ready_only) {
      auto err = repository_errors_.find(name);
      out.push_back({name, "", "UNAVAILABLE", err != repository_errors_.end() ? err->second : "not loaded"});
    }
  }
  return out;
}

absl::Status DataPlane::Load(const std::string& model) {
  std::lock_guard<std::mutex> admin(admin_mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (model.empty() || model.find('/') != std::string::npos || model == "." || model == "..") {
    return absl::InvalidArgumentError(absl::StrCat("'", model, "' is not a model folder's name"));
  }
  if (options_.repository.empty()) return absl::FailedPreconditionError("the server has no model repository (--repository)");
  const fs::path where = fs::path(options_.repository) / model;
  std::error_code ec;
  if (!fs::is_directory(where, ec)) {
    return absl::NotFoundError(absl::StrCat("no model '", model, "' in the repository '", options_.repository, "'"));
  }
  if (Find(model)) LOOM_RETURN_IF_ERROR(Unload(model));  // a load of a loaded model reloads it
  absl::Status s = LoadLocked(model, where.string());
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    repository_errors_[model] = std::string(s.message());
  }
  return s;
}

absl::Status DataPlane::Unload(const std::string& model) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(model);
    if (it == models_.end()) return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
    e = std::move(it->second);
    models_.erase(it);  // new requests find no model; accepted ones drain below
  }
  if (e->pipeline) {
    e->pipeline->Close();  // answers its frames, removes its models from the engine
    return absl::OkStatus();
  }
  return engine_->RemoveModel(model);  // answers the requests it accepted
}

void DataPlane::BeginDrain() {
  draining_ = true;
  Log().info("draining: no new requests; {} in flight", in_flight_.load());
}

bool DataPlane::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

int64_t DataPlane::in_flight() const { return in_flight_; }

std::string DataPlane::Metrics() const {
  std::ostringstream out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  auto histogram = [&](const std::string& name, const std::string& labels, const Distribution& d) {
    for (size_t i = 0; i < d.upper_bounds.size(); ++i) {
      out << name << "_bucket{" << labels << ",le=\"" << absl::StrFormat("%g", d.upper_bounds[i]) << "\"} "
          << d.cumulative_counts[i] << "\n";
    }
    out << name << "_bucket{" << labels << ",le=\"+Inf\"} " << d.count << "\n";
    out << name << "_sum{" << labels << "} " << absl::StrFormat("%.9g", d.sum) << "\n";
    out << name << "_count{" << labels << "} " << d.count << "\n";
  };
  std::map<std::pair<std::string, std::string>, std::pair<std::map<std::string, int64_t>, Histogram::Snapshot>> counters;
  std::map<std::string, int64_t> in_flight;
  std::vector<std::string> models;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, c] : counters_) counters[key] = {c.outcomes, c.duration_us->Take()};
    in_flight = in_flight_by_protocol_;
    for (const auto& [name, e] : models_) models.push_back(name);
  }
  family("loom_requests_total", "counter", "Inference requests answered, by model, protocol and outcome.");
  for (const auto& [key, c] : counters) {
    for (const auto& [outcome, n] : c.first) {
      out << "loom_requests_total{model=\"" << Label(key.first) << "\",protocol=\"" << key.second
          << "\",outcome=\"" << outcome << "\"} " << n << "\n";
    }
  }
  family("loom_request_duration_seconds", "histogram", "Time from a request's arrival to its answer, at the server.");
  for (const auto& [key, c] : counters) {
    Distribution d;
    for (int k = 4; k <= 25; ++k) {
      const uint64_t bound = (uint64_t{1} << k) - 1;
      d.upper_bounds.push_back(static_cast<double>(bound) * 1e-6);
      d.cumulative_counts.push_back(c.second.CountAtMost(bound));
    }
    d.count = c.second.count;
    d.sum = static_cast<double>(c.second.sum) * 1e-6;
    histogram("loom_request_duration_seconds", absl::StrCat("model=\"", Label(key.first), "\",protocol=\"", key.second, "\""), d);
  }
  family("loom_inflight_requests", "gauge", "Requests received and not yet answered, by protocol.");
  for (const auto& [protocol, n] : in_flight) out << "loom_inflight_requests{protocol=\"" << protocol << "\"} " << n << "\n";
  std::vector<std::pair<std::string, ModelStats>> stats;
  for (const std::string& m : models) {
    if (auto s = engine_->Stats(m); s.ok()) stats.emplace_back(m, *s);
  }
  family("loom_queue_duration_seconds", "histogram", "Time requests waited in the engine's queue, by model.");
  for (const auto& [m, s] : stats) histogram("loom_queue_duration_seconds", "model=\"" + Label(m) + "\"", s.queue_seconds);
  family("loom_compute_duration_seconds", "histogram", "Time of each run (batch) of the model.");
  for (const auto& [m, s] : stats) histogram("loom_compute_duration_seconds", "model=\"" + Label(m) + "\"", s.compute_seconds);
  family("loom_batch_size", "histogram", "Rows per run of the model.");
  for (const auto& [m, s] : stats) histogram("loom_batch_size", "model=\"" + Label(m) + "\"", s.batch_rows);
  family("loom_queue_depth", "gauge", "Requests waiting in the model's queue now.");
  for (const auto& [m, s] : stats) out << "loom_queue_depth{model=\"" << Label(m) << "\"} " << s.queued << "\n";
  family("loom_engine_requests_total", "counter", "Requests the engine accepted, answered and refused, by model.");
  for (const auto& [m, s] : stats) {
    const std::string l = "model=\"" + Label(m) + "\"";
    out << "loom_engine_requests_total{" << l << ",result=\"success\"} " << s.successes << "\n"
        << "loom_engine_requests_total{" << l << ",result=\"failure\"} " << s.failures << "\n"
        << "loom_engine_requests_total{" << l << ",result=\"rejected\"} " << s.rejected << "\n";
  }
  const double uptime = std::chrono::duration<double>(Clock::now() - started_).count();
  const std::vector<WorkerStats> workers = engine_->Workers();
  family("loom_worker_cores", "gauge", "Cores each worker of the plan owns.");
  for (size_t w = 0; w < workers.size(); ++w) {
    out << "loom_worker_cores{worker=\"" << w << "\",cpus=\"" << FormatCpuList(workers[w].cpus) << "\"} "
        << workers[w].cpus.size() << "\n";
  }
  family("loom_worker_busy_seconds_total", "counter", "Seconds each worker spent running batches.");
  for (size_t w = 0; w < workers.size(); ++w) {
    out << "loom_worker_busy_seconds_total{worker=\"" << w << "\",cpus=\"" << FormatCpuList(workers[w].cpus) << "\"} "
        << absl::StrFormat("%.6f", workers[w].busy_seconds) << "\n";
  }
  family("loom_worker_busy_ratio", "gauge", "Share of the server's uptime each worker spent running batches.");
  for (size_t w = 0; w < workers.size(); ++w) {
    out << "loom_worker_busy_ratio{worker=\"" << w << "\",cpus=\"" << FormatCpuList(workers[w].cpus) << "\"} "
        << absl::StrFormat("%.6f", uptime > 0 ? workers[w].busy_seconds / uptime : 0) << "\n";
  }
  family("loom_busy_threads", "gauge", "Threads running the engine's work now (never more than the cores).");
  out << "loom_busy_threads " << engine_->BusyThreads() << "\n";
  family("loom_model_ready", "gauge", "1 for each model the server can run now.");
  for (const std::string& m : models) out << "loom_model_ready{model=\"" << Label(m) << "\"} 1\n";
  family("loom_process_resident_memory_bytes", "gauge", "Resident memory of the server process.");
  out << "loom_process_resident_memory_bytes " << absl::StrFormat("%.0f", ResidentBytes()) << "\n";
  family("loom_uptime_seconds", "gauge", "Seconds since the server started.");
  out << "loom_uptime_seconds " << absl::StrFormat("%.3f", uptime) << "\n";
  return out.str();
}

}  // namespace loom::serve
