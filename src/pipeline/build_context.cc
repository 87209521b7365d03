// What a node factory reads its YAML entry with (BuildContext: errors that say where, keys
// checked against the known ones, inputs typed against what earlier nodes produce, labels and
// paths relative to the pipeline file), and the names of the value types in its messages.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/yaml_reader.h"
#include "pipeline/node.h"

namespace loom::pipeline {

const char* ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kImage:
      return "image";
    case ValueType::kTensor:
      return "tensor";
    case ValueType::kOutputs:
      return "model outputs";
    case ValueType::kDetections:
      return "detections";
    case ValueType::kTextBoxes:
      return "text boxes";
    case ValueType::kCrops:
      return "crops";
    case ValueType::kTexts:
      return "texts";
    case ValueType::kLines:
      return "line segments";
  }
  return "?";
}

absl::Status BuildContext::Error(const YAML::Node& at, const std::string& node,
                                 const std::string& message) const {
  return YamlError(file_, at.Mark(), absl::StrCat("node '", node, "': ", message));
}

absl::Status BuildContext::Keys(const YAML::Node& params, const std::string& node,
                                std::vector<std::string> known) const {
  known.push_back("name");
  known.push_back("type");
  return Reader(node).Keys(params, known, "the node");
}

absl::StatusOr<ValueSpec> BuildContext::Value(const YAML::Node& at, const std::string& node,
                                              const std::string& value, ValueType type) const {
  auto it = values_.find(value);
  if (it == values_.end()) {
    return Error(at, node, absl::StrCat("'", value, "' is not an earlier node"));
  }
  if (it->second.type != type) {
    return Error(at, node,
                 absl::StrCat("expects ", ValueTypeName(type), ", but node '", value, "' produces ",
                              ValueTypeName(it->second.type)));
  }
  return it->second;
}

absl::StatusOr<ValueSpec> BuildContext::Input(const YAML::Node& params, const std::string& node,
                                              const std::string& port,
                                              const std::vector<ValueType>& types) const {
  std::string value;
  const YAML::Node named = params.IsMap() ? params[port] : YAML::Node();
  if (named) {
    if (!named.IsScalar()) return Error(named, node, "'" + port + "' must name a node");
    value = named.Scalar();
  } else if (types.front() == ValueType::kImage) {
    value = "image";  // the frame itself
  } else {
    return Error(params, node, "missing input '" + port + "'");
  }
  auto it = values_.find(value);
  if (it == values_.end()) {
    return Error(
        named ? named : params, node,
        absl::StrCat("input '", port, "' names '", value, "', which is not an earlier node"));
  }
  if (std::find(types.begin(), types.end(), it->second.type) == types.end()) {
    std::vector<std::string> names;
    for (ValueType t : types) names.push_back(ValueTypeName(t));
    return Error(
        named ? named : params, node,
        absl::StrCat("input '", port, "' expects ", absl::StrJoin(names, " or "), ", but node '",
                     value, "' produces ", ValueTypeName(it->second.type)));
  }
  return it->second;
}

absl::StatusOr<std::vector<std::string>> BuildContext::Labels(const YAML::Node& params,
                                                              const std::string& node,
                                                              const std::string& key) const {
  std::vector<std::string> labels;
  const YAML::Node l = params.IsMap() ? params[key] : YAML::Node();
  if (!l) return labels;
  const YamlReader r = Reader(node);
  if (l.IsSequence()) {
    for (const YAML::Node& e : l) {
      LOOM_ASSIGN_OR_RETURN(std::string label, r.StringValue(e, key));
      labels.push_back(std::move(label));
    }
    return labels;
  }
  LOOM_ASSIGN_OR_RETURN(std::string path, r.String(params, key));
  std::ifstream in(Path(path));
  if (!in) return Error(l, node, "label file '" + Path(path) + "' cannot be read");
  for (std::string line; std::getline(in, line);) labels.push_back(line);
  return labels;
}

std::string BuildContext::Path(const std::string& relative) const {
  if (relative.empty() || relative[0] == '/') return relative;
  return (std::filesystem::path(base_dir_) / relative).lexically_normal().string();
}

}  // namespace loom::pipeline
