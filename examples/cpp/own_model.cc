// Your own model from C++: an engine from a config file (or one .onnx file), one request per model
// with an all-zeros input of the model's shape (dynamic dims: 1 for the batch, 320 elsewhere), the
// plan and each output's shape.
//
//   build/examples/own_model examples/engine.yaml
//   build/examples/own_model models/mlsd_320x320_tiny.onnx
#include <cstring>
#include <iostream>
#include <string>

#include "loom/engine.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: own_model CONFIG.yaml|MODEL.onnx\n";
    return 2;
  }
  const std::string arg = argv[1];
  loom::EngineConfig config;
  if (arg.size() > 5 && arg.substr(arg.size() - 5) == ".onnx") {
    config.models.push_back({.name = "model", .path = arg});
  } else {
    absl::StatusOr<loom::EngineConfig> loaded = loom::LoadEngineConfig(arg);
    if (!loaded.ok()) {
      std::cerr << loaded.status().message() << "\n";  // file:line:column: key: what is wrong
      return 1;
    }
    config = *std::move(loaded);
  }
  absl::StatusOr<std::unique_ptr<loom::Engine>> engine = loom::Engine::Create(config.models, config.options);
  if (!engine.ok()) {
    std::cerr << engine.status().message() << "\n";
    return 1;
  }
  std::cout << (*engine)->DescribePlan();
  for (const std::string& name : (*engine)->ModelNames()) {
    const loom::ModelInfo* info = (*engine)->FindModel(name);
    loom::NamedTensors inputs;
    for (const loom::TensorInfo& in : info->inputs) {
      loom::Shape shape;
      for (size_t d = 0; d < in.shape.size(); ++d) {
        shape.push_back(in.shape[d].is_dynamic() ? (d == 0 ? 1 : 320) : in.shape[d].value);
      }
      loom::Tensor t = loom::Tensor::Allocate(in.dtype, shape);
      std::memset(t.data(), 0, t.byte_size());
      inputs.emplace_back(in.name, std::move(t));
    }
    absl::StatusOr<loom::InferResult> result = (*engine)->Infer(name, std::move(inputs));
    if (!result.ok()) {
      std::cerr << result.status().message() << "\n";
      return 1;
    }
    for (const loom::NamedTensor& out : result->outputs) {
      std::cout << name << ": " << out.name << " " << out.tensor.Describe() << "\n";
    }
  }
  (*engine)->Shutdown();  // answers every accepted request, then stops
  return 0;
}
