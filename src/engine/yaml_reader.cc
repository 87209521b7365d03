#include "engine/yaml_reader.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom {
namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string Shown(const YAML::Node& node) {
  if (node.IsScalar()) return absl::StrCat("'", node.Scalar(), "'");
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

}  // namespace

std::string NearestKey(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(1, key.size() / 3) + 1;
  for (const std::string& k : known) {
    const size_t d = EditDistance(key, k);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  return best;
}

absl::Status YamlError(const std::string& file, const YAML::Mark& mark,
                       const std::string& message) {
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
  } catch (const YAML::Exception& e) {
    return YamlError(path, e.mark, e.msg);
  }
}

YAML::Node YamlReader::Get(const YAML::Node& map, const std::string& key) {
  if (!map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  for (const auto& kv : map) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) return kv.second;
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

absl::Status YamlReader::Error(const YAML::Node& at, const std::string& message) const {
  return YamlError(file_, at.Mark(), context_ + message);
}

absl::Status YamlReader::Keys(const YAML::Node& node, const std::vector<std::string>& known,
                              const std::string& what) const {
  if (!node.IsMap())
    return Error(node, absl::StrCat(what, " must be a mapping, got ", Shown(node)));
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      return Error(kv.first, absl::StrCat("a key in ", what, " must be a name"));
    const std::string key = kv.first.Scalar();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::vector<std::string> sorted = known;
    std::sort(sorted.begin(), sorted.end());
    const std::string nearest = NearestKey(key, known);
    return Error(
        kv.first,
        absl::StrCat("unknown key '", key, "' in ", what,
                     nearest.empty() ? "" : absl::StrCat("; did you mean '", nearest, "'?"),
                     " (known: ", absl::StrJoin(sorted, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::Status YamlReader::List(const YAML::Node& node, const std::string& what,
                              bool allow_empty) const {
  if (!node.IsSequence() || (!allow_empty && node.size() == 0)) {
    return Error(node,
                 absl::StrCat(what, " must be a ", allow_empty ? "" : "non-empty ", "list, got ",
                              node.IsSequence() ? "an empty list" : Shown(node)));
  }
  return absl::OkStatus();
}

namespace {
// The scalar's value as an int64, or nothing when it is not one (yaml-cpp's error is not thrown
// on).
std::optional<int64_t> ScalarInt(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  try {
    return node.as<int64_t>();
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}
}  // namespace

absl::StatusOr<int64_t> YamlReader::IntValue(const YAML::Node& node, const std::string& what,
                                             int64_t min, int64_t max) const {
  const std::optional<int64_t> v = ScalarInt(node);
  if (!v || *v < min || *v > max) {
    return Error(node, absl::StrCat("'", what, "' must be an integer in [", min, ", ", max,
                                    "], got ", Shown(node)));
  }
  return *v;
}

absl::StatusOr<double> YamlReader::DoubleValue(const YAML::Node& node, const std::string& what,
                                               double min, double max) const {
  double v = 0;
  bool ok = node.IsScalar();
  if (ok) {
    try {
      v = node.as<double>();
    } catch (const YAML::Exception&) {
      ok = false;
    }
  }
  if (!ok || !std::isfinite(v) || v < min || v > max) {
    return Error(node, absl::StrCat("'", what, "' must be a number in [", min, ", ", max, "], got ",
                                    Shown(node)));
  }
  return v;
}

absl::StatusOr<std::string> YamlReader::StringValue(const YAML::Node& node,
                                                    const std::string& what) const {
  if (!node.IsScalar())
    return Error(node, absl::StrCat("'", what, "' must be a string, got ", Shown(node)));
  return node.Scalar();
}

absl::StatusOr<int64_t> YamlReader::Int(const YAML::Node& map, const std::string& key, int64_t min,
                                        int64_t max, std::optional<int64_t> fallback) const {
  const YAML::Node node = Get(map, key);
  if (!node) {
    if (fallback) return *fallback;
    return Error(map, absl::StrCat("missing '", key, "'"));
  }
  return IntValue(node, key, min, max);
}

absl::StatusOr<std::optional<int64_t>> YamlReader::IntOrAuto(const YAML::Node& map,
                                                             const std::string& key, int64_t min,
                                                             int64_t max) const {
  const YAML::Node node = Get(map, key);
  if (!node || (node.IsScalar() && node.Scalar() == "auto")) return std::optional<int64_t>();
  const std::optional<int64_t> v = ScalarInt(node);
  if (!v || *v < min || *v > max) {
    return Error(node, absl::StrCat("'", key, "' must be an integer in [", min, ", ", max,
                                    "] or 'auto', got ", Shown(node)));
  }
  return v;
}

absl::StatusOr<double> YamlReader::Double(const YAML::Node& map, const std::string& key, double min,
                                          double max, std::optional<double> fallback) const {
  const YAML::Node node = Get(map, key);
  if (!node) {
    if (fallback) return *fallback;
    return Error(map, absl::StrCat("missing '", key, "'"));
  }
  return DoubleValue(node, key, min, max);
}

absl::StatusOr<bool> YamlReader::Bool(const YAML::Node& map, const std::string& key,
                                      std::optional<bool> fallback) const {
  const YAML::Node node = Get(map, key);
  if (!node) {
    if (fallback) return *fallback;
    return Error(map, absl::StrCat("missing '", key, "'"));
  }
  bool v = false;
  bool ok = node.IsScalar();
  if (ok) {
    try {
      v = node.as<bool>();
    } catch (const YAML::Exception&) {
      ok = false;
    }
  }
  if (!ok) return Error(node, absl::StrCat("'", key, "' must be true or false, got ", Shown(node)));
  return v;
}

absl::StatusOr<std::string> YamlReader::String(const YAML::Node& map, const std::string& key,
                                               std::optional<std::string> fallback) const {
  const YAML::Node node = Get(map, key);
  if (!node) {
    if (fallback) return *fallback;
    return Error(map, absl::StrCat("missing '", key, "'"));
  }
  return StringValue(node, key);
}

absl::StatusOr<std::vector<int64_t>> YamlReader::Ints(const YAML::Node& map, const std::string& key,
                                                      int64_t min, int64_t max, size_t min_size,
                                                      size_t max_size) const {
  const YAML::Node node = Get(map, key);
  if (!node.IsSequence() || node.size() < min_size || node.size() > max_size) {
    return Error(node ? node : map,
                 absl::StrCat("'", key, "' must be a list of ", min_size,
                              min_size == max_size ? "" : absl::StrCat(" to ", max_size),
                              " integers, got ", Shown(node)));
  }
  std::vector<int64_t> out;
  for (const YAML::Node& v : node) {
    LOOM_ASSIGN_OR_RETURN(int64_t x, IntValue(v, key, min, max));
    out.push_back(x);
  }
  return out;
}

absl::StatusOr<std::vector<double>> YamlReader::Doubles(const YAML::Node& map,
                                                        const std::string& key, double min,
                                                        double max, size_t min_size,
                                                        size_t max_size) const {
  const YAML::Node node = Get(map, key);
  if (node.IsScalar()) {
    LOOM_ASSIGN_OR_RETURN(double x, DoubleValue(node, key, min, max));
    return std::vector<double>{x};
  }
  if (!node.IsSequence() || node.size() < min_size || node.size() > max_size) {
    return Error(node ? node : map,
                 absl::StrCat("'", key, "' must be a number or a list of ", min_size, " to ",
                              max_size, " numbers, got ", Shown(node)));
  }
  std::vector<double> out;
  for (const YAML::Node& v : node) {
    LOOM_ASSIGN_OR_RETURN(double x, DoubleValue(v, key, min, max));
    out.push_back(x);
  }
  return out;
}

absl::StatusOr<std::string> YamlReader::Choice(const YAML::Node& map, const std::string& key,
                                               const std::vector<std::string>& choices,
                                               std::optional<std::string> fallback) const {
  LOOM_ASSIGN_OR_RETURN(std::string v, String(map, key, fallback));
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    const std::string nearest = NearestKey(v, choices);
    return Error(
        Get(map, key),
        absl::StrCat("'", key, "' must be one of ", absl::StrJoin(choices, ", "), ", got '", v, "'",
                     nearest.empty() ? "" : absl::StrCat("; did you mean '", nearest, "'?")));
  }
  return v;
}

}  // namespace loom
