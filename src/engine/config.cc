// LoadEngineConfig: the engine's YAML/JSON configuration (JSON is YAML), with errors that give the
// file, line, column and key.
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/config.h"
#include "loom/engine.h"

namespace loom {
namespace {

class ConfigReader {
 public:
  explicit ConfigReader(std::string path) : path_(std::move(path)) {}

  absl::Status Error(const YAML::Node& node, const std::string& message) const {
    return YamlError(path_, node.Mark(), message);
  }

  absl::Status CheckKeys(const YAML::Node& map, const std::set<std::string>& known,
                         const std::string& where) const {
    if (!map.IsMap()) return Error(map, absl::StrCat(where, " must be a mapping"));
    for (const auto& kv : map) {
      const std::string key = kv.first.as<std::string>();
      if (!known.count(key)) {
        return Error(kv.first, absl::StrCat("unknown key '", key, "' in ", where, " (known: ",
                                            absl::StrJoin(known, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  // An integer >= `min`, or "auto" (→ nullopt).
  absl::Status Int(const YAML::Node& map, const char* key, int64_t min,
                   std::optional<int64_t>& out) const {
    const YAML::Node node = map[key];
    if (!node) return absl::OkStatus();
    return IntValue(node, key, min, out);
  }

  absl::Status IntValue(const YAML::Node& node, const std::string& key, int64_t min,
                        std::optional<int64_t>& out) const {
    if (node.IsScalar() && node.Scalar() == "auto") {
      out.reset();
      return absl::OkStatus();
    }
    try {
      const int64_t v = node.as<int64_t>();
      if (v < min) return Error(node, absl::StrCat("'", key, "' must be >= ", min, ", got ", v));
      out = v;
      return absl::OkStatus();
    } catch (const YAML::Exception&) {
      return Error(node, absl::StrCat("'", key, "' must be an integer or 'auto', got '",
                                      node.IsScalar() ? node.Scalar() : "a non-scalar", "'"));
    }
  }

  absl::Status String(const YAML::Node& map, const char* key, std::string& out) const {
    const YAML::Node node = map[key];
    if (!node) return absl::OkStatus();
    if (!node.IsScalar()) return Error(node, absl::StrCat("'", key, "' must be a string"));
    out = node.Scalar();
    return absl::OkStatus();
  }

  absl::StatusOr<ModelConfig> Model(const YAML::Node& node) const {
    ModelConfig config;
    LOOM_RETURN_IF_ERROR(CheckKeys(node,
                                   {"name", "path", "backend", "instances", "threads",
                                    "max_batch_size", "preferred_batch_sizes", "max_queue_delay_us",
                                    "queue_capacity", "default_timeout_us", "weight"},
                                   "a model"));
    LOOM_RETURN_IF_ERROR(String(node, "name", config.name));
    LOOM_RETURN_IF_ERROR(String(node, "path", config.path));
    if (config.path.empty()) return Error(node, "a model needs 'path'");
    if (std::filesystem::path(config.path).is_relative()) {
      config.path = (std::filesystem::path(path_).parent_path() / config.path).lexically_normal().string();
    }
    std::string backend = "ort";
    LOOM_RETURN_IF_ERROR(String(node, "backend", backend));
    auto parsed = ParseBackend(backend);
    if (!parsed.ok()) return Error(node["backend"], std::string(parsed.status().message()));
    config.backend = *parsed;
    std::optional<int64_t> v;
    auto as_int = [](const std::optional<int64_t>& x) {
      return x ? std::optional<int>(static_cast<int>(*x)) : std::nullopt;
    };
    LOOM_RETURN_IF_ERROR(Int(node, "instances", 1, v));
    config.instances = as_int(v);
    v.reset();
    LOOM_RETURN_IF_ERROR(Int(node, "threads", 1, v));
    config.threads = as_int(v);
    v.reset();
    LOOM_RETURN_IF_ERROR(Int(node, "max_batch_size", 1, v));
    config.max_batch_size = as_int(v);
    v.reset();
    LOOM_RETURN_IF_ERROR(Int(node, "max_queue_delay_us", 0, config.max_queue_delay_us));
    LOOM_RETURN_IF_ERROR(Int(node, "queue_capacity", 1, v));
    config.queue_capacity = as_int(v);
    LOOM_RETURN_IF_ERROR(Int(node, "default_timeout_us", 1, config.default_timeout_us));
    if (const YAML::Node sizes = node["preferred_batch_sizes"]) {
      if (!sizes.IsSequence()) return Error(sizes, "'preferred_batch_sizes' must be a list");
      for (const YAML::Node& s : sizes) {
        std::optional<int64_t> size;
        LOOM_RETURN_IF_ERROR(IntValue(s, "preferred_batch_sizes", 1, size));
        if (!size) return Error(s, "'preferred_batch_sizes' entries must be integers");
        config.preferred_batch_sizes.push_back(static_cast<int>(*size));
      }
    }
    if (const YAML::Node weight = node["weight"]) {
      try {
        config.weight = weight.as<double>();
      } catch (const YAML::Exception&) {
        return Error(weight, "'weight' must be a number");
      }
      if (!(config.weight > 0)) return Error(weight, "'weight' must be > 0");
    }
    return config;
  }

  absl::StatusOr<EngineConfig> Read() const {
    LOOM_ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path_, "config"));
    return Parse(root, {});
  }

  absl::StatusOr<EngineConfig> Parse(const YAML::Node& root, std::set<std::string> known) const {
    EngineConfig config;
    for (const char* key : {"models", "cores", "hint", "measure_runs", "allow_spinning"}) known.insert(key);
    LOOM_RETURN_IF_ERROR(CheckKeys(root, known, "the config"));
    std::optional<int64_t> v;
    LOOM_RETURN_IF_ERROR(Int(root, "cores", 0, v));
    config.options.cores = static_cast<int>(v.value_or(0));
    v.reset();
    LOOM_RETURN_IF_ERROR(Int(root, "measure_runs", 1, v));
    config.options.measure_runs = static_cast<int>(v.value_or(config.options.measure_runs));
    std::string hint = "throughput";
    LOOM_RETURN_IF_ERROR(String(root, "hint", hint));
    if (hint == "latency") {
      config.options.hint = PlanHint::kLatency;
    } else if (hint != "throughput") {
      return Error(root["hint"], absl::StrCat("'hint' must be 'throughput' or 'latency', got '", hint, "'"));
    }
    if (const YAML::Node spin = root["allow_spinning"]) {
      if (spin.Scalar() != "auto") {
        try {
          config.options.allow_spinning = spin.as<bool>();
        } catch (const YAML::Exception&) {
          return Error(spin, "'allow_spinning' must be true, false or auto");
        }
      }
    }
    const YAML::Node models = root["models"];
    if (!models || !models.IsSequence() || models.size() == 0) {
      return Error(models ? models : root, "'models' must be a non-empty list");
    }
    for (const auto& node : models) {
      LOOM_ASSIGN_OR_RETURN(ModelConfig model, Model(node));
      config.models.push_back(std::move(model));
    }
    return config;
  }

 private:
  std::string path_;
};

}  // namespace

absl::Status YamlError(const std::string& file, const YAML::Mark& mark, const std::string& message) {
  return absl::InvalidArgumentError(
      mark.is_null() ? absl::StrCat(file, ": ", message)
                     : absl::StrCat(file, ":", mark.line + 1, ":", mark.column + 1, ": ", message));
}

absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path, const std::string& what) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return absl::NotFoundError(absl::StrCat(what, " file '", path, "' cannot be read"));
  } catch (const YAML::ParserException& e) {
    return YamlError(path, e.mark, e.msg);
  }
}

absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path) {
  return ConfigReader(path).Read();
}

absl::StatusOr<EngineConfig> ParseEngineConfig(const YAML::Node& root, const std::string& file,
                                               const std::set<std::string>& known_extra_keys) {
  return ConfigReader(file).Parse(root, known_extra_keys);
}

}  // namespace loom
