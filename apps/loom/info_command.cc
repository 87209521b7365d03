// `loom info MODEL [--json]`: what the model declares and whether Loom can batch it.
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/loom/commands.h"
#include "loom/model_info.h"

namespace loom::cli {
namespace {

nlohmann::json ToJson(const TensorInfo& t, bool is_input) {
  nlohmann::json shape = nlohmann::json::array();
  for (const Dim& d : t.shape) {
    if (d.is_dynamic()) {
      shape.push_back(d.symbol.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.symbol));
    } else {
      shape.push_back(d.value);
    }
  }
  nlohmann::json j = {{"name", t.name}, {"dtype", DTypeName(t.dtype)}, {"shape", shape}};
  if (is_input && t.image_layout() != ImageLayout::kNone)
    j["image_layout"] = ImageLayoutName(t.image_layout());
  return j;
}

}  // namespace

CommandFn AddInfoCommand(CLI::App& app) {
  struct Args {
    std::string model;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  app.add_option("MODEL", args->model, "ONNX model file")->required();
  app.add_flag("--json", args->json, "Print as JSON");
  return [args]() {
    auto info = ReadModelInfo(args->model);
    if (!info.ok()) {
      std::cerr << "loom info: " << info.status().message() << "\n";
      return kExitRuntimeError;
    }
    if (!args->json) {
      std::cout << FormatModelInfo(*info);
      return kExitOk;
    }
    nlohmann::json j = {
        {"name", info->name},
        {"path", info->path},
        {"ir_version", info->ir_version},
        {"opset", info->opset},
        {"producer", {{"name", info->producer_name}, {"version", info->producer_version}}},
        {"dynamic_batch", info->dynamic_batch},
        {"inputs", nlohmann::json::array()},
        {"outputs", nlohmann::json::array()}};
    for (const auto& t : info->inputs) j["inputs"].push_back(ToJson(t, true));
    for (const auto& t : info->outputs) j["outputs"].push_back(ToJson(t, false));
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  };
}

}  // namespace loom::cli
