// Runs one request through an installed Loom: an engine over the model given on the command line,
// an all-zeros input of the model's shape; prints the plan's first line and the outputs' names.
#include <cstdio>
#include <cstring>

#include "loom/engine.h"
#include "loom/pipeline.h"  // the other public library, from the same package

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer MODEL.onnx\n");
    return 2;
  }
  auto engine = loom::Engine::Create({loom::ModelConfig{.name = "m", .path = argv[1]}});
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    return 1;
  }
  const loom::ModelInfo* info = (*engine)->FindModel("m");
  loom::NamedTensors inputs;
  for (const auto& in : info->inputs) {
    loom::Shape shape;
    for (const auto& d : in.shape) shape.push_back(d.value > 0 ? d.value : 1);
    loom::Tensor t = loom::Tensor::Allocate(in.dtype, shape);
    std::memset(t.data(), 0, t.byte_size());
    inputs.emplace_back(in.name, std::move(t));
  }
  auto result = (*engine)->Infer("m", std::move(inputs));
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
    return 1;
  }
  const std::string plan = (*engine)->DescribePlan();
  std::printf("%s\n", plan.substr(0, plan.find('\n')).c_str());
  for (const auto& [name, tensor] : result->outputs)
    std::printf("output %s rank %lld\n", name.c_str(), static_cast<long long>(tensor.rank()));
  (*engine)->Shutdown();
  return 0;
}
