#include "runtime/ort_session.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/ort_utils.h"

namespace loom {
namespace {

class OrtSession final : public Session {
 public:
  OrtSession(ModelInfo info, std::unique_ptr<Ort::Session> session)
      : info_(std::move(info)),
        session_(std::move(session)),
        memory_info_(Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU)),
        context_(absl::StrCat("model '", info_.name, "': ")) {
    for (const auto& out : info_.outputs) output_names_.push_back(out.name.c_str());
  }

  const ModelInfo& info() const override { return info_; }
  Backend backend() const override { return Backend::kOnnxRuntime; }

  absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) override {
    LOOM_RETURN_IF_ERROR(ValidateInputs(info_, inputs));
    std::vector<const char*> input_names;
    std::vector<Ort::Value> input_values;
    input_names.reserve(inputs.size());
    input_values.reserve(inputs.size());
    std::vector<Ort::Value> outputs;
    absl::Status status = ort::Call(context_, [&] {
      for (const NamedTensor& in : inputs) {
        input_names.push_back(in.name.c_str());
        // Borrows the tensor's buffer: no copy.
        input_values.push_back(Ort::Value::CreateTensor(
            memory_info_, in.tensor.data(), in.tensor.byte_size(), in.tensor.shape().data(),
            in.tensor.shape().size(), ort::ToOrtType(in.tensor.dtype())));
      }
      outputs = session_->Run(run_options_, input_names.data(), input_values.data(),
                              input_values.size(), output_names_.data(), output_names_.size());
    });
    if (!status.ok()) return status;

    NamedTensors result;
    result.reserve(outputs.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
      auto value = std::make_shared<Ort::Value>(std::move(outputs[i]));
      auto type_shape = value->GetTensorTypeAndShapeInfo();
      const DType dtype = ort::FromOrtType(type_shape.GetElementType());
      if (dtype == DType::kUnknown) {
        return absl::UnimplementedError(absl::StrCat(context_, "output '", info_.outputs[i].name,
                                                     "' has an element type Loom does not handle"));
      }
      Shape shape = type_shape.GetShape();
      if (absl::Status s = CheckShape(dtype, shape); !s.ok()) {
        return absl::InternalError(
            absl::StrCat(context_, "output '", info_.outputs[i].name, "': ", s.message()));
      }
      void* data = value->GetTensorMutableRawData();
      if (data == nullptr) {  // an empty output: ONNX Runtime gives no buffer
        result.push_back({info_.outputs[i].name, Tensor::Allocate(dtype, std::move(shape))});
        continue;
      }
      // The tensor adopts the Ort::Value: zero-copy, freed when the last copy goes.
      result.push_back(
          {info_.outputs[i].name, Tensor::Adopt(dtype, std::move(shape), data, std::move(value))});
    }
    return result;
  }

 private:
  const ModelInfo info_;
  std::unique_ptr<Ort::Session> session_;
  Ort::MemoryInfo memory_info_;
  Ort::RunOptions run_options_;
  std::vector<const char*> output_names_;  // point into info_
  const std::string context_;
};

GraphOptimizationLevel ToOrtLevel(GraphOptimization level) {
  switch (level) {
    case GraphOptimization::kDisabled:
      return ORT_DISABLE_ALL;
    case GraphOptimization::kBasic:
      return ORT_ENABLE_BASIC;
    case GraphOptimization::kExtended:
      return ORT_ENABLE_EXTENDED;
    case GraphOptimization::kAll:
      return ORT_ENABLE_ALL;
  }
  return ORT_ENABLE_ALL;
}

}  // namespace

std::string OrtAffinityString(const std::vector<std::vector<int>>& affinities) {
  return absl::StrJoin(affinities, ";", [](std::string* out, const std::vector<int>& cpus) {
    absl::StrAppend(out, absl::StrJoin(cpus, ",", [](std::string* o, int cpu) {
                      absl::StrAppend(o, cpu + 1);
                    }));
  });
}

absl::StatusOr<std::unique_ptr<Session>> CreateOrtSession(ModelInfo info,
                                                          const SessionOptions& options) {
  const std::string context = absl::StrCat("model '", info.name, "': ");
  if (!options.thread_affinities.empty() &&
      static_cast<int>(options.thread_affinities.size()) != options.intra_op_threads - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "thread_affinities has ", options.thread_affinities.size(),
                     " entries; expected intra_op_threads - 1 = ", options.intra_op_threads - 1));
  }
  if (options.use_global_thread_pool && !ort::HasGlobalThreadPool()) {
    return absl::FailedPreconditionError(absl::StrCat(
        context,
        "use_global_thread_pool needs ConfigureGlobalThreadPool before the first session"));
  }
  std::unique_ptr<Ort::Session> session;
  LOOM_RETURN_IF_ERROR(ort::Call(context, [&] {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(ToOrtLevel(options.graph_optimization));
    so.SetExecutionMode(ORT_SEQUENTIAL);
    so.SetInterOpNumThreads(1);
    if (options.use_global_thread_pool) {
      so.DisablePerSessionThreads();
    } else {
      if (options.intra_op_threads > 0) so.SetIntraOpNumThreads(options.intra_op_threads);
      so.AddConfigEntry("session.intra_op.allow_spinning", options.allow_spinning ? "1" : "0");
      if (options.allow_spinning && options.stop_spinning_after_run) {
        so.AddConfigEntry("session.force_spinning_stop", "1");
      }
      if (!options.thread_affinities.empty()) {
        so.AddConfigEntry("session.intra_op_thread_affinities",
                          OrtAffinityString(options.thread_affinities).c_str());
      }
    }
    session = std::make_unique<Ort::Session>(ort::GetEnv(), info.path.c_str(), so);
  }));
  return std::unique_ptr<Session>(new OrtSession(std::move(info), std::move(session)));
}

}  // namespace loom
