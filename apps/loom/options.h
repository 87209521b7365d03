// Option parsing shared by the `loom` subcommands, so that one idea reads the same everywhere:
// `--reps` for repetitions, `--images` for image files, `--count` for how many items, units in the
// names of timed flags (`--drain-timeout-s`, `--read-timeout-ms`). An alias that --help does not
// list is declared with HiddenAlias.
#ifndef LOOM_APPS_LOOM_OPTIONS_H_
#define LOOM_APPS_LOOM_OPTIONS_H_

#include <CLI/CLI.hpp>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/status.h"

namespace loom::cli {

// The models and media the commands use when none are named (fetched by scripts/setup).
inline constexpr const char* kDefaultModel = "models/face_detection_back_256x256_barracuda.onnx";
std::vector<std::string> DefaultFanoutModels();  // BlazeFace back 256, M-LSD tiny 320, PP-OCR det
std::vector<std::string> DefaultPhotos(int count);  // the first `count` photos of data/

// "NAME=VALUE" (a model's name and its file, a node's key and its value): both parts non-empty.
// The error names the flag, the value as given and the `form` expected ("NAME=PATH").
absl::StatusOr<std::pair<std::string, std::string>> ParseNamePath(
    const std::string& flag, const std::string& value, const std::string& form = "NAME=PATH");
// Every value of a repeated NAME=VALUE flag, by name; a name given twice is an error.
absl::StatusOr<std::map<std::string, std::string>> ParseNamePaths(
    const std::string& flag, const std::vector<std::string>& values,
    const std::string& form = "NAME=PATH");

// "WIDTHxHEIGHT", both positive.
absl::StatusOr<std::pair<int, int>> ParseSize(const std::string& flag, const std::string& value);

// `--strategies a,b`: every name must be one of `known`; the error lists them.
absl::StatusOr<std::vector<std::string>> ParseStrategies(const std::string& value,
                                                         const std::vector<std::string>& known);

// Writes `text` to `target`: nothing when empty, stdout for "-", else the file. False on failure.
bool Emit(const std::string& target, const std::string& text);

// An alias of an option: parses into the same variable, absent from --help.
template <typename T>
CLI::Option* HiddenAlias(CLI::App& app, const std::string& name, T& variable) {
  return app.add_option(name, variable)->group("");
}

// CLI::Range for a hidden option, whose name CLI11 leaves out of its errors: the message names it.
CLI::Validator NamedRange(const std::string& flag, double min, double max);

}  // namespace loom::cli

#endif  // LOOM_APPS_LOOM_OPTIONS_H_
