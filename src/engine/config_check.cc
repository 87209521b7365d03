// Engine: checking what a caller configures before anything is loaded or measured: a model's
// ModelConfig (with its metadata, read here) and the EngineOptions. Every error names the model
// or the option and the bound it broke.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "engine/engine_impl.h"
#include "sched/core_planner.h"

namespace loom {
namespace engine_internal {
namespace {

// Bounds on configured numbers (each a mistake beyond them; all keep arithmetic far from overflow).
constexpr int kMaxQueueCapacity = 1 << 20;
constexpr int kMaxBatchRows = 1 << 16;
constexpr int64_t kMaxDelayUs = int64_t{3600} * 1'000'000;  // an hour

// The numbers of a model's config, against their bounds and the model (`batchable`: a dynamic
// dim 0). `who`: "model 'x': ".
absl::Status CheckNumbers(const ModelConfig& config, const ModelInfo& info, bool batchable,
                          const std::string& who) {
  for (const auto& [what, value] :
       {std::pair{"instances", config.instances}, std::pair{"threads", config.threads}}) {
    if (value && (*value < 1 || *value > sched::kMaxPlannedCount)) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, what, " must be in [1, ", sched::kMaxPlannedCount, "], got ", *value));
    }
  }
  if (config.max_batch_size) {
    const int b = *config.max_batch_size;
    if (b < 1 || b > kMaxBatchRows) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, "max_batch_size must be in [1, ", kMaxBatchRows, "], got ", b));
    }
    if (!batchable && b > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, "max_batch_size ", b, " needs a dynamic dim 0, but input '",
                       info.inputs[0].name, "' is ", info.inputs[0].Describe(),
                       ": use instances for parallelism, or max_batch_size: 1"));
    }
  }
  if (config.max_request_rows &&
      (*config.max_request_rows < 1 || *config.max_request_rows > kMaxBatchRows)) {
    return absl::InvalidArgumentError(absl::StrCat(who, "max_request_rows must be in [1, ",
                                                   kMaxBatchRows, "], got ",
                                                   *config.max_request_rows));
  }
  for (int size : config.preferred_batch_sizes) {
    if (size < 1 || size > kMaxBatchRows) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, "preferred_batch_sizes entries must be in [1, ", kMaxBatchRows, "], got ", size));
    }
  }
  if (config.max_queue_delay_us &&
      (*config.max_queue_delay_us < 0 || *config.max_queue_delay_us > kMaxDelayUs)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "max_queue_delay_us must be in [0, ", kMaxDelayUs, "]"));
  }
  if (config.default_timeout_us &&
      (*config.default_timeout_us < 1 || *config.default_timeout_us > kMaxDelayUs)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "default_timeout_us must be in [1, ", kMaxDelayUs, "]"));
  }
  if (config.queue_capacity &&
      (*config.queue_capacity < 1 || *config.queue_capacity > kMaxQueueCapacity)) {
    return absl::InvalidArgumentError(absl::StrCat(who, "queue_capacity must be in [1, ",
                                                   kMaxQueueCapacity, "], got ",
                                                   *config.queue_capacity));
  }
  if (!(config.weight > 0) || config.weight > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat(who, "weight must be in (0, 1e6]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckEngineOptions(const EngineOptions& options) {
  if (options.measure_runs < 1 || options.measure_runs > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("measure_runs must be in [1, 1000], got ", options.measure_runs));
  }
  if (options.max_request_bytes < 1) {
    return absl::InvalidArgumentError("max_request_bytes must be >= 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> PlannedCpus(const EngineOptions& options) {
  std::vector<int> cpus = UsableCpus();
  if (options.cores < 0 || options.cores > static_cast<int>(cpus.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cores: ", options.cores, " asked, but only ",
                                                   cpus.size(), " are usable (",
                                                   FormatCpuList(cpus), ")"));
  }
  if (options.cores > 0) cpus.resize(static_cast<size_t>(options.cores));
  return cpus;
}

}  // namespace engine_internal

absl::StatusOr<std::shared_ptr<Engine::Impl::ModelEntry>> Engine::Impl::Prepare(
    ModelConfig config) const {
  if (config.name.empty()) config.name = std::filesystem::path(config.path).stem().string();
  const std::string who = absl::StrCat("model '", config.name, "': ");
  auto info = ReadModelInfo(config.path);
  if (!info.ok()) {
    return absl::Status(info.status().code(), who + std::string(info.status().message()));
  }
  // Every later message names the model as the caller did ("face"), not by its file's stem.
  info->name = config.name;
  auto m = std::make_shared<ModelEntry>();
  m->batchable = info->dynamic_batch;
  m->dedicated = config.instances.has_value() || config.threads.has_value();
  LOOM_RETURN_IF_ERROR(engine_internal::CheckNumbers(config, *info, m->batchable, who));
  if (!config.warmup_inputs.empty()) {
    if (absl::Status s = ValidateInputs(*info, config.warmup_inputs, options.limits); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(who, "warm-up: ", s.message()));
    }
  }
  m->max_batch_size =
      m->batchable ? config.max_batch_size.value_or(engine_internal::kDefaultMaxBatch) : 1;
  m->default_timeout = std::chrono::microseconds(config.default_timeout_us.value_or(0));
  m->info = std::move(*info);
  m->config = std::move(config);
  return m;
}

absl::StatusOr<std::vector<std::shared_ptr<Engine::Impl::ModelEntry>>> Engine::Impl::PrepareAll(
    std::vector<ModelConfig> models) const {
  std::vector<std::shared_ptr<ModelEntry>> entries;
  for (ModelConfig& config : models) {
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<ModelEntry> m, Prepare(std::move(config)));
    for (const auto& e : entries) {
      if (e->config.name == m->config.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("model name '", m->config.name, "' used twice"));
      }
    }
    m->id = static_cast<int>(entries.size());
    entries.push_back(std::move(m));
  }
  return entries;
}

}  // namespace loom
