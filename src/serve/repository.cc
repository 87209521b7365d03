// DataPlane's model repository: what is loaded at start, loads and unloads at run time (one at a
// time, on the admin thread), reloads beside the served copy, and the index.
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/log.h"
#include "engine/config.h"
#include "engine/yaml_reader.h"
#include "serve/data_plane.h"
#include "serve/entry.h"

namespace loom::serve {
namespace {

namespace fs = std::filesystem;

// The model file of a repository folder: model.onnx, else its only .onnx.
absl::StatusOr<std::string> ModelFile(const fs::path& folder) {
  if (fs::exists(folder / "model.onnx")) return (folder / "model.onnx").string();
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (e.path().extension() == ".onnx") found.push_back(e.path().string());
  }
  if (found.size() == 1) return found[0];
  return absl::NotFoundError(
      absl::StrCat("model folder '", folder.string(), "' has ",
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

bool IsPipelineFolder(const std::string& where) {
  std::error_code ec;
  return fs::is_directory(where, ec) && fs::exists(fs::path(where) / "pipeline.yaml", ec);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataPlane>> DataPlane::Create(DataPlaneOptions options) {
  auto plane = std::unique_ptr<DataPlane>(new DataPlane(std::move(options)));
  const DataPlaneOptions& o = plane->options_;
  // What to load: --model entries, then every folder of the repository.
  std::vector<std::pair<std::string, std::string>> sources = o.models;
  if (!o.repository.empty()) {
    std::error_code ec;
    if (!fs::is_directory(o.repository, ec)) {
      return absl::NotFoundError(
          absl::StrCat("model repository '", o.repository, "' is not a folder"));
    }
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(o.repository, ec)) {
      if (e.is_directory()) names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      sources.emplace_back(n, (fs::path(o.repository) / n).string());
    }
  }
  std::vector<std::pair<std::string, std::string>> pipelines;
  LOOM_RETURN_IF_ERROR(plane->LoadPlainModels(sources, pipelines));
  for (const auto& [name, where] : pipelines) {
    auto entry = plane->MakeEntry(name, where, name);
    if (!entry.ok()) {
      plane->load_errors_[name] = plane->Scrub(std::string(entry.status().message()));
      plane->start_failures_.insert(name);
      Log().error("pipeline '{}' not loaded: {}", name, entry.status().ToString());
      continue;
    }
    plane->models_[name] = std::move(*entry);
  }
  Log().info("serving {} models ({} failed to load) on the plan:\n{}", plane->models_.size(),
             plane->start_failures_.size(), plane->engine_->DescribePlan());
  try {
    plane->admin_thread_ = std::thread([p = plane.get()] { p->AdminLoop(); });
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat("cannot start the admin thread: ", e.what()));
  }
  return plane;
}

// Plain models are planned together (one measurement of the mix); pipelines are left for later.
absl::Status DataPlane::LoadPlainModels(
    const std::vector<std::pair<std::string, std::string>>& sources,
    std::vector<std::pair<std::string, std::string>>& pipelines) {
  std::vector<ModelConfig> configs;
  auto failed = [&](const std::string& name, const absl::Status& s) {
    load_errors_[name] = Scrub(std::string(s.message()));
    start_failures_.insert(name);
    Log().error("model '{}' not loaded: {}", name, s.ToString());
  };
  for (const auto& [name, where] : sources) {
    if (IsPipelineFolder(where)) {
      pipelines.emplace_back(name, where);
      continue;
    }
    auto config = ConfigFor(name, where);
    if (!config.ok()) {  // one bad folder does not keep the others from serving
      failed(name, config.status());
      continue;
    }
    configs.push_back(std::move(*config));
  }
  auto engine = Engine::Create(configs, options_.engine);
  if (!engine.ok()) {
    // One bad model must not keep the others from serving: load them one by one, and report it.
    Log().warn("loading every model at once failed ({}); loading them one by one",
               std::string(engine.status().message()));
    LOOM_ASSIGN_OR_RETURN(engine, Engine::Create({}, options_.engine));
    for (const ModelConfig& c : configs) {
      if (absl::Status s = (*engine)->AddModel(c); !s.ok()) failed(c.name, s);
    }
  }
  engine_ = std::move(*engine);
  for (const ModelConfig& c : configs) {
    if (start_failures_.count(c.name)) continue;
    auto entry = std::make_shared<Entry>();
    entry->name = c.name;
    entry->engine_name = c.name;
    entry->info = std::make_shared<const ModelInfo>(*engine_->FindModel(c.name));
    models_[c.name] = entry;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<DataPlane::Entry>> DataPlane::MakeEntry(
    const std::string& name, const std::string& where, const std::string& engine_name) {
  auto entry = std::make_shared<Entry>();
  entry->name = name;
  entry->engine_name = engine_name;
  if (IsPipelineFolder(where)) {
    const std::string yaml = (fs::path(where) / "pipeline.yaml").string();
    LOOM_ASSIGN_OR_RETURN(entry->pipeline,
                          PipelineModel::Load(engine_name + ".", yaml, engine_.get()));
    return entry;
  }
  LOOM_ASSIGN_OR_RETURN(ModelConfig config, ConfigFor(name, where));
  config.name = engine_name;
  LOOM_RETURN_IF_ERROR(engine_->AddModel(config));
  entry->info = std::make_shared<const ModelInfo>(*engine_->FindModel(engine_name));
  return entry;
}

// A name for a new copy of `name` in the engine that no model (or pipeline's model) has.
std::string DataPlane::FreeEngineName(const std::string& name) const {
  const std::vector<std::string> taken = engine_->ModelNames();
  for (int64_t n = reloads_ + 1;; ++n) {
    const std::string candidate = absl::StrCat(name, "@", n);
    const bool used = std::any_of(taken.begin(), taken.end(), [&](const std::string& t) {
      return t == candidate || t.rfind(candidate + ".", 0) == 0;
    });
    if (!used) return candidate;
  }
}

std::string DataPlane::Scrub(std::string message) const {
  // Paths of the repository become paths inside it; --model paths become the model's name.
  std::vector<std::pair<std::string, std::string>> paths;
  if (!options_.repository.empty()) {
    std::error_code ec;
    for (fs::path root :
         {fs::path(options_.repository), fs::weakly_canonical(options_.repository, ec),
          fs::absolute(options_.repository, ec)}) {
      std::string prefix = root.lexically_normal().string();
      if (prefix.empty()) continue;
      if (prefix.back() != '/') prefix += '/';
      paths.emplace_back(prefix, "");
    }
  }
  for (const auto& [name, path] : options_.models) paths.emplace_back(path, name);
  std::sort(paths.begin(), paths.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (const auto& [from, to] : paths) message = absl::StrReplaceAll(message, {{from, to}});
  // Any other absolute path (a config pointing outside the repository) keeps its file name only.
  std::string out;
  for (size_t i = 0; i < message.size();) {
    const bool starts =
        message[i] == '/' && (i == 0 || std::string_view(" \t\n'\"(=:[<").find(message[i - 1]) !=
                                            std::string_view::npos);
    if (!starts) {
      out += message[i++];
      continue;
    }
    size_t end = i;
    while (end < message.size() && message[end] != ' ' && message[end] != '\'' &&
           message[end] != '"' && message[end] != ')' && message[end] != ',') {
      ++end;
    }
    const std::string_view path(message.data() + i, end - i);
    const size_t last = path.find_last_of('/');
    out += last == 0 ? std::string(path) : ".../" + std::string(path.substr(last + 1));
    i = end;
  }
  return out;
}

absl::StatusOr<std::vector<RepositoryEntry>> DataPlane::Index(bool ready_only) const {
  if (options_.model_control == ModelControl::kNone) {
    return absl::PermissionDeniedError(
        "the model repository API is off: start the server with --model-control explicit");
  }
  std::set<std::string> names;
  if (!options_.repository.empty()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options_.repository, ec)) {
      if (e.is_directory(ec)) names.insert(e.path().filename().string());
    }
  }
  std::vector<RepositoryEntry> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, e] : models_) names.insert(name);
  for (const auto& [name, why] : load_errors_) names.insert(name);
  for (const std::string& name : names) {
    if (models_.count(name)) {
      out.push_back({name, "1", "READY", ""});
    } else if (!ready_only) {
      auto err = load_errors_.find(name);
      out.push_back(
          {name, "", "UNAVAILABLE", err != load_errors_.end() ? err->second : "not loaded"});
    }
  }
  return out;
}

absl::Status DataPlane::Load(const std::string& model) {
  if (options_.model_control == ModelControl::kNone) {
    return absl::PermissionDeniedError(
        "loading models is off: start the server with --model-control explicit");
  }
  LOOM_RETURN_IF_ERROR(CheckName("model", model, options_.limits));
  std::lock_guard<std::mutex> admin(admin_mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down");
  absl::Status s;
  try {
    s = LoadChecked(model);
  } catch (const std::exception& e) {
    Log().error("loading model '{}': {}", model, e.what());
    s = absl::InternalError(absl::StrCat("model '", model, "' could not be loaded"));
  }
  // A failure is remembered (the index shows it) for a model folder that exists, never for any
  // name a client makes up.
  std::error_code ec;
  if (!s.ok() && !options_.repository.empty() && model.find('/') == std::string::npos &&
      model != "." && model != ".." &&
      fs::is_directory(fs::path(options_.repository) / model, ec)) {
    std::lock_guard<std::mutex> lock(mu_);
    load_errors_[model] = std::string(s.message());
  }
  return s;
}

absl::Status DataPlane::LoadChecked(const std::string& model) {
  if (model.find('/') != std::string::npos || model == "." || model == "..") {
    return absl::InvalidArgumentError(absl::StrCat("'", model, "' is not a model folder's name"));
  }
  if (options_.repository.empty()) {
    return absl::FailedPreconditionError("the server has no model repository (--repository)");
  }
  const fs::path where = fs::path(options_.repository) / model;
  std::error_code ec;
  if (!fs::is_directory(where, ec)) {
    return absl::NotFoundError(absl::StrCat("no model '", model, "' in the repository"));
  }
  std::shared_ptr<Entry> old = Find(model);
  // A load of a served model builds the new copy beside it, then swaps: requests never miss it.
  const std::string engine_name = old ? FreeEngineName(model) : model;
  auto entry = MakeEntry(model, where.string(), engine_name);
  if (!entry.ok()) {
    Log().error("model '{}' not loaded: {}", model, entry.status().ToString());
    return absl::Status(entry.status().code(),
                        absl::StrCat("model '", model, "' could not be loaded: ",
                                     Scrub(std::string(entry.status().message()))));
  }
  if (old) ++reloads_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    models_[model] = std::move(*entry);
    load_errors_.erase(model);
    start_failures_.erase(model);
  }
  Log().info("model '{}' {}", model, old ? "reloaded" : "loaded");
  return old ? Retire(old) : absl::OkStatus();
}

absl::Status DataPlane::Retire(const std::shared_ptr<Entry>& e) {
  e->retired = true;
  {
    std::unique_lock<std::mutex> lock(e->mu);
    e->cv.wait(lock, [&] { return e->users.load() == 0; });
  }
  if (e->pipeline) {
    e->pipeline->Close();  // answers its frames, removes its models from the engine
    return absl::OkStatus();
  }
  return engine_->RemoveModel(e->engine_name);  // answers the requests it accepted
}

absl::Status DataPlane::Unload(const std::string& model) {
  if (options_.model_control == ModelControl::kNone) {
    return absl::PermissionDeniedError(
        "unloading models is off: start the server with --model-control explicit");
  }
  LOOM_RETURN_IF_ERROR(CheckName("model", model, options_.limits));
  std::lock_guard<std::mutex> admin(admin_mu_);
  std::shared_ptr<Entry> e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The operator does not want it served: a failure at start no longer keeps the server unready.
    start_failures_.erase(model);
    auto it = models_.find(model);
    if (it == models_.end())
      return absl::NotFoundError(absl::StrCat("unknown model '", model, "'"));
    e = std::move(it->second);
    models_.erase(it);  // new requests find no model; accepted ones drain below
  }
  absl::Status s = Retire(e);
  if (!s.ok()) {
    Log().error("unloading model '{}': {}", model, s.ToString());
    return absl::Status(s.code(), absl::StrCat("model '", model, "' could not be unloaded"));
  }
  Log().info("model '{}' unloaded", model);
  return absl::OkStatus();
}

void DataPlane::SubmitAdmin(AdminOp op, std::string model, std::function<void(absl::Status)> done) {
  absl::Status refused;
  if (options_.model_control == ModelControl::kNone) {
    refused = absl::PermissionDeniedError(
        "the model repository API is off: start the server with --model-control explicit");
  } else if (absl::Status s = CheckName("model", model, options_.limits); !s.ok()) {
    refused = s;
  } else if (draining_) {
    refused = absl::UnavailableError("the server is shutting down");
  } else {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_ || static_cast<int>(queue_.size()) >= options_.admin_queue) {
      refused = absl::UnavailableError(absl::StrCat(
          "the repository queue is full (", options_.admin_queue, " operations): try again later"));
    } else {
      queue_.push_back({op, std::move(model), std::move(done)});
      queue_cv_.notify_one();
      return;
    }
  }
  done(refused);
}

void DataPlane::AdminLoop() {
  for (;;) {
    AdminTask task;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      if (stopping_) {
        lock.unlock();
        task.done(absl::UnavailableError("the server is shutting down"));
        continue;
      }
    }
    absl::Status s;
    try {
      s = task.op == AdminOp::kLoad ? Load(task.model) : Unload(task.model);
    } catch (const std::exception& e) {
      Log().error("repository operation on '{}': {}", task.model, e.what());
      s = absl::InternalError("the repository operation failed");
    }
    try {
      task.done(s);
    } catch (...) {
      Log().error("a repository operation's answer could not be sent");
    }
  }
}

}  // namespace loom::serve
