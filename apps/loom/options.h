// Option parsing shared by the `loom` subcommands, so that one idea reads the same everywhere.
#ifndef LOOM_APPS_LOOM_OPTIONS_H_
#define LOOM_APPS_LOOM_OPTIONS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/status.h"

namespace loom::cli {

// "NAME=PATH" (a model's name and its file): both parts non-empty. The error names the flag and
// the value as given.
absl::StatusOr<std::pair<std::string, std::string>> ParseNamePath(const std::string& flag, const std::string& value);
// Every value of a repeated NAME=PATH flag, by name; a name given twice is an error.
absl::StatusOr<std::map<std::string, std::string>> ParseNamePaths(const std::string& flag,
                                                                  const std::vector<std::string>& values);

}  // namespace loom::cli

#endif  // LOOM_APPS_LOOM_OPTIONS_H_
