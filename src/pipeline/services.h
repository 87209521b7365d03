// InferenceService implementations: the Engine (Loom), and the naive ways `pipeline bench`
// compares it with — plain ONNX Runtime sessions with default options, run inline on the calling
// thread (a sequential loop) or on one thread per model.
#ifndef LOOM_PIPELINE_SERVICES_H_
#define LOOM_PIPELINE_SERVICES_H_

#include <memory>
#include <vector>

#include "loom/engine.h"
#include "pipeline/node.h"

namespace loom::pipeline {

// The engine runs the models; Lease() leases one of its workers' cores.
std::unique_ptr<InferenceService> MakeEngineService(std::unique_ptr<Engine> engine);
// Someone else's engine (not owned): the pipeline's models are added to it under
// `prefix` + name (all or none), requests are sent there, and they are removed with the service.
absl::StatusOr<std::unique_ptr<InferenceService>> MakeSharedEngineService(
    Engine* engine, const std::string& prefix, const std::vector<ModelConfig>& models);

// Model metadata only (Submit fails): what the graph is checked against before any model loads.
absl::StatusOr<std::unique_ptr<InferenceService>> MakeModelInfoService(
    const std::vector<ModelConfig>& models);

enum class NaiveMode { kInline, kThreadPerModel };
absl::StatusOr<std::unique_ptr<InferenceService>> MakeNaiveService(
    const std::vector<ModelConfig>& models, NaiveMode mode);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_SERVICES_H_
