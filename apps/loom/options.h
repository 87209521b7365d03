// Option parsing shared by the `loom` subcommands, so that one idea reads the same everywhere.
#ifndef LOOM_APPS_LOOM_OPTIONS_H_
#define LOOM_APPS_LOOM_OPTIONS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/status.h"

namespace loom::cli {

// "NAME=VALUE" (a model's name and its file, a node's key and its value): both parts non-empty.
// The error names the flag, the value as given and the `form` expected ("NAME=PATH").
absl::StatusOr<std::pair<std::string, std::string>> ParseNamePath(const std::string& flag, const std::string& value,
                                                                  const std::string& form = "NAME=PATH");
// Every value of a repeated NAME=VALUE flag, by name; a name given twice is an error.
absl::StatusOr<std::map<std::string, std::string>> ParseNamePaths(const std::string& flag,
                                                                  const std::vector<std::string>& values,
                                                                  const std::string& form = "NAME=PATH");

}  // namespace loom::cli

#endif  // LOOM_APPS_LOOM_OPTIONS_H_
