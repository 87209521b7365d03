// The pipeline file's loader: YAML → source, nodes (checked against each other and the models),
// sinks, and the engine (or naive sessions) for its models.
#include "pipeline/graph.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <opencv2/core.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/config.h"
#include "pipeline/services.h"

namespace loom::pipeline {
namespace {

constexpr int kMaxRowsPerRequest = 1 << 16;

namespace fs = std::filesystem;

struct CvThreadsState {
  std::mutex mu;
  int holders = 0;
  int previous = 0;
};
CvThreadsState& CvThreads() {
  static auto* state = new CvThreadsState();
  return *state;
}

// PipelineOptions::overrides onto the file's nodes: "NODE.KEY" -> a YAML value.
absl::Status ApplyOverrides(const YAML::Node& nodes,
                            const std::map<std::string, std::string>& overrides,
                            const std::string& file) {
  for (const auto& [target, value] : overrides) {
    const size_t dot = target.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == target.size()) {
      return absl::InvalidArgumentError(absl::StrCat("override '", target, "': expected NODE.KEY"));
    }
    const std::string node = target.substr(0, dot), key = target.substr(dot + 1);
    bool found = false;
    std::vector<std::string> names;
    for (YAML::Node n : nodes) {
      if (!n.IsMap() || !n["name"] || !n["name"].IsScalar()) continue;
      names.push_back(n["name"].Scalar());
      if (names.back() != node) continue;
      try {
        n[key] = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        return absl::InvalidArgumentError(
            absl::StrCat("override '", target, "': '", value, "' is not YAML: ", e.msg));
      }
      found = true;
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("override '", target, "': pipeline '", file, "' has no node '", node,
                       "' (its nodes: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

OpenCvThreadCap::OpenCvThreadCap() {
  CvThreadsState& s = CvThreads();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.holders++ == 0) {
    s.previous = cv::getNumThreads();
    cv::setNumThreads(1);
  }
}

OpenCvThreadCap::~OpenCvThreadCap() {
  CvThreadsState& s = CvThreads();
  std::lock_guard<std::mutex> lock(s.mu);
  if (--s.holders == 0) cv::setNumThreads(s.previous);
}

namespace {

// The file's engine config: its models run one frame per run unless the file says otherwise;
// PipelineOptions::model_paths replace the files of the models they name.
absl::StatusOr<EngineConfig> ReadEngineConfig(const YAML::Node& root, const std::string& yaml_path,
                                              const PipelineOptions& options) {
  LOOM_ASSIGN_OR_RETURN(
      EngineConfig config,
      ParseEngineConfig(root, yaml_path, {"source", "in_flight", "nodes", "sinks"}));
  for (const auto& [model, path] : options.model_paths) {
    auto it = std::find_if(config.models.begin(), config.models.end(),
                           [&](const ModelConfig& m) { return m.name == model; });
    if (it == config.models.end()) {
      std::vector<std::string> names;
      for (const ModelConfig& m : config.models) names.push_back(m.name);
      return absl::InvalidArgumentError(
          absl::StrCat("pipeline '", yaml_path, "' has no model '", model,
                       "' to replace (its models: ", absl::StrJoin(names, ", "), ")"));
    }
    it->path = path;
  }
  for (ModelConfig& m : config.models) {
    if (!m.max_batch_size) {
      m.max_batch_size = 1;  // no frame's output depends on another's batch...
      // ...while a frame's own rows run together where its infer node measured that it pays. (A
      // max_batch_size set in the YAML limits those requests too.)
      if (!m.max_request_rows) m.max_request_rows = kMaxRowsPerRequest;
    }
  }
  if (options.cores > 0) config.options.cores = options.cores;
  return config;
}

// The source (the file's, relative to `base`, or the options'), checked (it exists, it holds
// frames) before any model is loaded.
absl::Status ReadSource(const YAML::Node& root, const YamlReader& r, const std::string& base,
                        const PipelineOptions& options, Graph& g) {
  if (const YAML::Node source = root["source"]) {
    const YamlReader sr = r.Within("source: ");
    LOOM_RETURN_IF_ERROR(sr.Keys(source, {"path", "stride", "limit"}, "the source"));
    LOOM_ASSIGN_OR_RETURN(g.source.path, sr.String(source, "path", ""));
    LOOM_ASSIGN_OR_RETURN(int64_t stride, sr.Int(source, "stride", 1, 1 << 20, 1));
    g.source.stride = static_cast<int>(stride);
    LOOM_ASSIGN_OR_RETURN(g.source.limit, sr.Int(source, "limit", 0, int64_t{1} << 40, 0));
    if (!g.source.path.empty() && g.source.path[0] != '/') {
      g.source.path = (fs::path(base) / g.source.path).lexically_normal().string();
    }
  }
  if (!options.input.empty()) g.source.path = options.input;
  if (options.limit) g.source.limit = *options.limit;
  if (g.source.path.empty()) {
    if (options.require_source) {
      return r.Error(root, "no source: give 'source: {path: ...}' or --input");
    }
    return absl::OkStatus();
  }
  return FrameSource::Open(g.source).status();
}

absl::Status ReadInFlight(const YAML::Node& root, const YamlReader& r,
                          const PipelineOptions& options, Graph& g) {
  LOOM_ASSIGN_OR_RETURN(int64_t in_flight, r.Int(root, "in_flight", 1, kMaxInFlight, 4));
  g.in_flight = static_cast<int>(in_flight);
  if (options.in_flight) {
    if (*options.in_flight < 1 || *options.in_flight > kMaxInFlight) {
      return absl::InvalidArgumentError(
          absl::StrCat("in_flight must be in [1, ", kMaxInFlight, "], got ", *options.in_flight));
    }
    g.in_flight = *options.in_flight;
  }
  return absl::OkStatus();
}

// The nodes, in order: each may use the frame ("image") and the nodes before it, and is checked
// against the models' metadata (`context`) before any model loads.
absl::Status ReadNodes(const YAML::Node& root, const YamlReader& r, BuildContext& context,
                       Graph& g) {
  const YAML::Node nodes = root["nodes"];
  if (!nodes) return r.Error(root, "'nodes' must be a non-empty list, got nothing");
  LOOM_RETURN_IF_ERROR(r.List(nodes, "'nodes'"));
  LOOM_RETURN_IF_ERROR(ApplyOverrides(nodes, g.options.overrides, g.file));
  for (const YAML::Node& n : nodes) {
    if (!n.IsMap()) {
      return r.Error(n, "a node must be a mapping such as {name: a, type: preprocess, ...}");
    }
    LOOM_ASSIGN_OR_RETURN(std::string name, r.String(n, "name"));
    LOOM_ASSIGN_OR_RETURN(std::string type, r.String(n, "type"));
    if (name.empty() || context.Has(name)) {
      return r.Error(n["name"], "node name '" + name + "' is empty, used twice, or 'image'");
    }
    const NodeFactory* factory = FindNodeType(type);
    if (!factory) {
      const std::string nearest = NearestKey(type, NodeTypeNames());
      return r.Error(
          n["type"],
          absl::StrCat("node '", name, "': unknown node type '", type, "'",
                       nearest.empty() ? "" : absl::StrCat("; did you mean '", nearest, "'?"),
                       " (known: ", absl::StrJoin(NodeTypeNames(), ", "), ")"));
    }
    LOOM_ASSIGN_OR_RETURN(auto node, (*factory)(name, n, context));
    g.nodes.push_back(std::move(node));
  }
  return absl::OkStatus();
}

// The models, warmed up (and, by the engine, measured) on the shapes the graph sends them, behind
// the strategy's inference service.
absl::Status MakeInference(EngineConfig& config, const BuildContext& context,
                           const PipelineOptions& options, Graph& g) {
  for (ModelConfig& m : config.models) {
    auto it = context.warmups().find(m.name);
    if (it != context.warmups().end() && m.warmup_inputs.empty()) m.warmup_inputs = it->second;
  }
  switch (options.strategy) {
    case PipelineStrategy::kLoom: {
      g.cv_threads = std::make_unique<OpenCvThreadCap>();
      if (options.engine) {
        LOOM_ASSIGN_OR_RETURN(
            g.inference,
            MakeSharedEngineService(options.engine, options.model_prefix, config.models));
      } else {
        LOOM_ASSIGN_OR_RETURN(auto engine, Engine::Create(config.models, config.options));
        g.inference = MakeEngineService(std::move(engine));
      }
      break;
    }
    case PipelineStrategy::kSequential:
    case PipelineStrategy::kThreadPerModel: {
      const NaiveMode mode = options.strategy == PipelineStrategy::kSequential
                                 ? NaiveMode::kInline
                                 : NaiveMode::kThreadPerModel;
      LOOM_ASSIGN_OR_RETURN(g.inference, MakeNaiveService(config.models, mode));
      break;
    }
  }
  // Row batching measured now on the row shapes the graph declares (text lines by width class),
  // not on the first frame; one at a time, so that no measurement disturbs another.
  for (const auto& [model, shapes] : context.row_classes()) {
    for (const Shape& shape : shapes) g.inference->RowsPerRequest(model, shape);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Graph>> LoadGraph(const std::string& yaml_path,
                                                 const PipelineOptions& options) {
  LOOM_ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(yaml_path, "pipeline"));
  const YamlReader r(yaml_path);
  auto g = std::make_unique<Graph>();
  g->file = yaml_path;
  g->options = options;
  const std::string base = fs::path(yaml_path).parent_path().string();
  LOOM_ASSIGN_OR_RETURN(EngineConfig config, ReadEngineConfig(root, yaml_path, options));
  LOOM_RETURN_IF_ERROR(ReadSource(root, r, base, options, *g));
  LOOM_RETURN_IF_ERROR(ReadInFlight(root, r, options, *g));
  LOOM_ASSIGN_OR_RETURN(auto metadata, MakeModelInfoService(config.models));
  BuildContext context(yaml_path, base, metadata.get());
  context.Declare("image", {ValueType::kImage, std::nullopt, "image"});
  LOOM_RETURN_IF_ERROR(ReadNodes(root, r, context, *g));
  // Sinks are checked before the models load too; they are made (and their folders created)
  // only when this run writes.
  const YAML::Node sinks = root["sinks"];
  if (sinks) {
    LOOM_RETURN_IF_ERROR(
        MakeSinks(sinks, r, {.output_dir = options.output_dir, .open = false}).status());
  }
  LOOM_RETURN_IF_ERROR(MakeInference(config, context, options, *g));
  if (options.sinks && sinks) g->sinks = sinks;
  return g;
}

}  // namespace loom::pipeline
