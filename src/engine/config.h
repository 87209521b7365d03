// Engine configuration from an already parsed YAML document (used by LoadEngineConfig and by
// pipelines, whose files embed a `models:` list and engine options).
#ifndef LOOM_ENGINE_CONFIG_H_
#define LOOM_ENGINE_CONFIG_H_

#include <set>
#include <string>

#include <yaml-cpp/yaml.h>

#include "loom/engine.h"

namespace loom {

// INVALID_ARGUMENT "FILE:LINE:COLUMN: MESSAGE" at `mark` ("FILE: MESSAGE" if it has none).
absl::Status YamlError(const std::string& file, const YAML::Mark& mark, const std::string& message);

// Parses a YAML (or JSON) file. NOT_FOUND "<what> file 'PATH' cannot be read"; a syntax error is
// INVALID_ARGUMENT with its line and column.
absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path, const std::string& what);

// Reads `models` and the engine options from `root`; `file` is named in errors and relative
// model paths are resolved against its folder. Keys of `root` outside `known_extra_keys` and the
// engine's own are errors.
absl::StatusOr<EngineConfig> ParseEngineConfig(const YAML::Node& root, const std::string& file,
                                               const std::set<std::string>& known_extra_keys = {});

}  // namespace loom

#endif  // LOOM_ENGINE_CONFIG_H_
