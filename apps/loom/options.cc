#include "apps/loom/options.h"

#include "absl/strings/str_cat.h"

namespace loom::cli {

absl::StatusOr<std::pair<std::string, std::string>> ParseNamePath(const std::string& flag, const std::string& value,
                                                                  const std::string& form) {
  const size_t eq = value.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", value, "': expected ", form));
  }
  return std::make_pair(value.substr(0, eq), value.substr(eq + 1));
}

absl::StatusOr<std::map<std::string, std::string>> ParseNamePaths(const std::string& flag,
                                                                  const std::vector<std::string>& values,
                                                                  const std::string& form) {
  std::map<std::string, std::string> out;
  for (const std::string& v : values) {
    LOOM_ASSIGN_OR_RETURN(auto name_path, ParseNamePath(flag, v, form));
    if (!out.emplace(name_path).second) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": '", name_path.first, "' is given twice"));
    }
  }
  return out;
}

}  // namespace loom::cli
