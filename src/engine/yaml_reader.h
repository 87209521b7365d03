// YamlReader: every value Loom reads from a YAML (or JSON) file goes through here — the engine
// config, pipelines, their nodes, sources and sinks. Each read checks the node's kind and the
// value's type and range; an unknown key is refused with the nearest known one suggested. Errors
// point at the value: "FILE:LINE:COLUMN: node 'fi': unknown key 'sise'; did you mean 'size'?".
// yaml-cpp throws on a wrong kind (a subscript of a scalar, a bad conversion); nothing here lets
// such an exception out.
#ifndef LOOM_ENGINE_YAML_READER_H_
#define LOOM_ENGINE_YAML_READER_H_

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "loom/status.h"

namespace loom {

// The known key nearest to `key` (edit distance at most a third of its length), or empty.
std::string NearestKey(const std::string& key, const std::vector<std::string>& known);

// Parses a YAML (or JSON) file. NOT_FOUND "<what> file 'PATH' cannot be read"; a syntax error is
// INVALID_ARGUMENT with its line and column.
absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path, const std::string& what);

// INVALID_ARGUMENT "FILE:LINE:COLUMN: MESSAGE" at `mark` ("FILE: MESSAGE" if it has none).
absl::Status YamlError(const std::string& file, const YAML::Mark& mark, const std::string& message);

class YamlReader {
 public:
  // `file` names the file in errors; `context` prefixes every message ("node 'fi': ").
  explicit YamlReader(std::string file, std::string context = "")
      : file_(std::move(file)), context_(std::move(context)) {}

  // A reader for a part of the file whose errors say where they are ("node 'fi': ").
  YamlReader Within(const std::string& context) const { return YamlReader(file_, context); }

  absl::Status Error(const YAML::Node& at, const std::string& message) const;

  // `node` must be a mapping (`what` names it: "a model", "the source") whose keys are all known.
  absl::Status Keys(const YAML::Node& node, const std::vector<std::string>& known,
                    const std::string& what) const;
  // `node` must be a list (empty allowed only if `allow_empty`).
  absl::Status List(const YAML::Node& node, const std::string& what,
                    bool allow_empty = false) const;

  // Values of `map[key]`. Absent: the fallback, or an error naming the missing key when there is
  // none. Present: must be of the type and within [min, max].
  absl::StatusOr<int64_t> Int(const YAML::Node& map, const std::string& key, int64_t min,
                              int64_t max, std::optional<int64_t> fallback = std::nullopt) const;
  // An integer in [min, max] or the word `auto` (nullopt); absent: nullopt.
  absl::StatusOr<std::optional<int64_t>> IntOrAuto(const YAML::Node& map, const std::string& key,
                                                   int64_t min, int64_t max) const;
  absl::StatusOr<double> Double(const YAML::Node& map, const std::string& key, double min,
                                double max, std::optional<double> fallback = std::nullopt) const;
  absl::StatusOr<bool> Bool(const YAML::Node& map, const std::string& key,
                            std::optional<bool> fallback = std::nullopt) const;
  absl::StatusOr<std::string> String(const YAML::Node& map, const std::string& key,
                                     std::optional<std::string> fallback = std::nullopt) const;
  // A list of `min_size`..`max_size` integers in [min, max].
  absl::StatusOr<std::vector<int64_t>> Ints(const YAML::Node& map, const std::string& key,
                                            int64_t min, int64_t max, size_t min_size,
                                            size_t max_size) const;
  // One number or a list of `min_size`..`max_size` numbers in [min, max].
  absl::StatusOr<std::vector<double>> Doubles(const YAML::Node& map, const std::string& key,
                                              double min, double max, size_t min_size,
                                              size_t max_size) const;
  // A string from a closed set.
  absl::StatusOr<std::string> Choice(const YAML::Node& map, const std::string& key,
                                     const std::vector<std::string>& choices,
                                     std::optional<std::string> fallback = std::nullopt) const;

  // The same checks on a node itself (a list entry); `what` names it in errors.
  absl::StatusOr<int64_t> IntValue(const YAML::Node& node, const std::string& what, int64_t min,
                                   int64_t max) const;
  absl::StatusOr<double> DoubleValue(const YAML::Node& node, const std::string& what, double min,
                                     double max) const;
  absl::StatusOr<std::string> StringValue(const YAML::Node& node, const std::string& what) const;

 private:
  // map[key] when `map` is a mapping and has it; an undefined node otherwise.
  static YAML::Node Get(const YAML::Node& map, const std::string& key);

  std::string file_, context_;
};

}  // namespace loom

#endif  // LOOM_ENGINE_YAML_READER_H_
