// Engine configuration from an already parsed YAML document (used by LoadEngineConfig and by
// pipelines, whose files embed a `models:` list and engine options).
#ifndef LOOM_ENGINE_CONFIG_H_
#define LOOM_ENGINE_CONFIG_H_

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "engine/yaml_reader.h"
#include "loom/engine.h"

namespace loom {

// Reads `models` and the engine options from `root`; `file` is named in errors and relative
// model paths are resolved against its folder. Keys of `root` outside `extra_keys` and the
// engine's own are errors.
absl::StatusOr<EngineConfig> ParseEngineConfig(const YAML::Node& root, const std::string& file,
                                               const std::vector<std::string>& extra_keys = {});

// The model keys ParseEngineConfig knows, and one model entry alone (a model repository's
// per-model config); relative paths against `base_dir`.
const std::vector<std::string>& ModelConfigKeys();
absl::StatusOr<ModelConfig> ParseModelConfig(const YAML::Node& node, const YamlReader& reader,
                                             const std::string& base_dir);

}  // namespace loom

#endif  // LOOM_ENGINE_CONFIG_H_
