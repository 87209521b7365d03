// LoadEngineConfig: the engine's YAML/JSON configuration (JSON is YAML). Every value is read
// through YamlReader: typed, bounded, unknown keys refused, errors at file:line:column.
#include "engine/config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "sched/core_planner.h"

namespace loom {
namespace {

constexpr int64_t kMaxHourUs = int64_t{3600} * 1'000'000;

absl::StatusOr<std::optional<int>> OptionalInt(const YamlReader& r, const YAML::Node& node,
                                               const std::string& key, int64_t min, int64_t max) {
  LOOM_ASSIGN_OR_RETURN(std::optional<int64_t> v, r.IntOrAuto(node, key, min, max));
  return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
}

}  // namespace

const std::vector<std::string>& ModelConfigKeys() {
  static const auto* keys = new std::vector<std::string>{"name",
                                                         "path",
                                                         "backend",
                                                         "instances",
                                                         "threads",
                                                         "max_batch_size",
                                                         "preferred_batch_sizes",
                                                         "max_queue_delay_us",
                                                         "queue_capacity",
                                                         "default_timeout_us",
                                                         "weight"};
  return *keys;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const YAML::Node& node, const YamlReader& r,
                                             const std::string& base_dir) {
  ModelConfig config;
  LOOM_RETURN_IF_ERROR(r.Keys(node, ModelConfigKeys(), "a model"));
  LOOM_ASSIGN_OR_RETURN(config.name, r.String(node, "name", ""));
  LOOM_ASSIGN_OR_RETURN(config.path, r.String(node, "path", ""));
  if (config.path.empty()) return r.Error(node, "a model needs 'path'");
  if (std::filesystem::path(config.path).is_relative()) {
    config.path = (std::filesystem::path(base_dir) / config.path).lexically_normal().string();
  }
  LOOM_ASSIGN_OR_RETURN(std::string backend, r.Choice(node, "backend", BackendSpellings(), "ort"));
  config.backend = *ParseBackend(backend);
  const int64_t kMaxCount = sched::kMaxPlannedCount;
  LOOM_ASSIGN_OR_RETURN(config.instances, OptionalInt(r, node, "instances", 1, kMaxCount));
  LOOM_ASSIGN_OR_RETURN(config.threads, OptionalInt(r, node, "threads", 1, kMaxCount));
  LOOM_ASSIGN_OR_RETURN(config.max_batch_size, OptionalInt(r, node, "max_batch_size", 1, 1 << 16));
  LOOM_ASSIGN_OR_RETURN(config.max_queue_delay_us,
                        r.IntOrAuto(node, "max_queue_delay_us", 0, kMaxHourUs));
  LOOM_ASSIGN_OR_RETURN(config.queue_capacity, OptionalInt(r, node, "queue_capacity", 1, 1 << 20));
  LOOM_ASSIGN_OR_RETURN(config.default_timeout_us,
                        r.IntOrAuto(node, "default_timeout_us", 1, kMaxHourUs));
  if (node["preferred_batch_sizes"]) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> sizes,
                          r.Ints(node, "preferred_batch_sizes", 1, 1 << 16, 0, 64));
    for (int64_t s : sizes) config.preferred_batch_sizes.push_back(static_cast<int>(s));
  }
  LOOM_ASSIGN_OR_RETURN(config.weight, r.Double(node, "weight", 1e-6, 1e6, 1.0));
  return config;
}

absl::StatusOr<EngineConfig> ParseEngineConfig(const YAML::Node& root, const std::string& file,
                                               const std::vector<std::string>& extra_keys) {
  const YamlReader r(file);
  EngineConfig config;
  std::vector<std::string> known = {"models", "cores", "hint", "measure_runs", "allow_spinning"};
  known.insert(known.end(), extra_keys.begin(), extra_keys.end());
  LOOM_RETURN_IF_ERROR(r.Keys(root, known, "the file"));
  LOOM_ASSIGN_OR_RETURN(int64_t cores, r.Int(root, "cores", 0, sched::kMaxPlannedCount, 0));
  config.options.cores = static_cast<int>(cores);
  LOOM_ASSIGN_OR_RETURN(int64_t runs,
                        r.Int(root, "measure_runs", 1, 1000, config.options.measure_runs));
  config.options.measure_runs = static_cast<int>(runs);
  LOOM_ASSIGN_OR_RETURN(std::string hint,
                        r.Choice(root, "hint", {"adaptive", "throughput", "latency"}, "adaptive"));
  config.options.hint = hint == "latency"      ? PlanHint::kLatency
                        : hint == "throughput" ? PlanHint::kThroughput
                                               : PlanHint::kAdaptive;
  if (root["allow_spinning"] &&
      !(root["allow_spinning"].IsScalar() && root["allow_spinning"].Scalar() == "auto")) {
    LOOM_ASSIGN_OR_RETURN(config.options.allow_spinning, r.Bool(root, "allow_spinning"));
  }
  const YAML::Node models = root["models"];
  if (!models) return r.Error(root, "'models' must be a non-empty list, got nothing");
  LOOM_RETURN_IF_ERROR(r.List(models, "'models'"));
  const std::string base = std::filesystem::path(file).parent_path().string();
  for (const YAML::Node& node : models) {
    LOOM_ASSIGN_OR_RETURN(ModelConfig model, ParseModelConfig(node, r, base));
    config.models.push_back(std::move(model));
  }
  return config;
}

absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path, "config"));
  return ParseEngineConfig(root, path);
}

}  // namespace loom
