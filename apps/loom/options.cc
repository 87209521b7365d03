#include "apps/loom/options.h"

#include <algorithm>
#include <fstream>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace loom::cli {

std::vector<std::string> DefaultFanoutModels() {
  return {kDefaultModel, "models/mlsd_320x320_tiny.onnx", "models/ch_PP-OCRv4_det_infer.onnx"};
}

std::vector<std::string> DefaultPhotos(int count) {
  std::vector<std::string> out;
  for (const char* f : {"messi5.jpg", "imageTextN.png", "imageTextR.png", "text_motion.jpg",
                        "text_defocus.jpg", "licenseplate_motion.jpg"}) {
    if (static_cast<int>(out.size()) == count) break;
    out.push_back(std::string("data/") + f);
  }
  return out;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseNamePath(const std::string& flag,
                                                                  const std::string& value,
                                                                  const std::string& form) {
  const size_t eq = value.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", value, "': expected ", form));
  }
  return std::make_pair(value.substr(0, eq), value.substr(eq + 1));
}

absl::StatusOr<std::map<std::string, std::string>> ParseNamePaths(
    const std::string& flag, const std::vector<std::string>& values, const std::string& form) {
  std::map<std::string, std::string> out;
  for (const std::string& v : values) {
    LOOM_ASSIGN_OR_RETURN(auto name_path, ParseNamePath(flag, v, form));
    if (!out.emplace(name_path).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": '", name_path.first, "' is given twice"));
    }
  }
  return out;
}

absl::StatusOr<std::pair<int, int>> ParseSize(const std::string& flag, const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(value, 'x');
  int w = 0, h = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &w) || !absl::SimpleAtoi(parts[1], &h) ||
      w <= 0 || h <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be WIDTHxHEIGHT, e.g. 640x480, got '", value, "'"));
  }
  return std::make_pair(w, h);
}

absl::StatusOr<std::vector<std::string>> ParseStrategies(const std::string& value,
                                                         const std::vector<std::string>& known) {
  std::vector<std::string> out;
  for (absl::string_view name : absl::StrSplit(value, ',', absl::SkipEmpty())) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--strategies: unknown strategy '", name,
                                                     "'; known: ", absl::StrJoin(known, ", ")));
    }
    out.emplace_back(name);
  }
  if (out.empty()) return absl::InvalidArgumentError("--strategies: no strategy named");
  return out;
}

CLI::Validator NamedRange(const std::string& flag, double min, double max) {
  return CLI::Validator(
      [flag, min, max](std::string& value) -> std::string {
        double x = 0;
        if (!CLI::detail::lexical_cast(value, x) || x < min || x > max) {
          auto number = [](double v) {
            return v == static_cast<double>(static_cast<int64_t>(v))
                       ? absl::StrCat(static_cast<int64_t>(v))
                       : absl::StrCat(v);
          };
          return absl::StrCat(flag, ": value ", value, " not in range ", number(min), " to ",
                              number(max));
        }
        return std::string();
      },
      "");
}

bool Emit(const std::string& target, const std::string& text) {
  if (target.empty()) return true;
  if (target == "-") {
    std::cout << text;
    return true;
  }
  std::ofstream out(target);
  out << text;
  return static_cast<bool>(out);
}

}  // namespace loom::cli
