// ModelInfo: what a model file declares — its inputs and outputs (names, dtypes, shapes with
// symbolic dims), opset, producer — and what Loom derives from it: whether dim 0 is a dynamic batch
// (so requests can be batched) and the image layout of an image-like input.
//
// Read straight from the ONNX protobuf (libonnx), independent of any backend, so that a broken or
// foreign file is reported before a backend sees it.
#ifndef LOOM_MODEL_INFO_H_
#define LOOM_MODEL_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "loom/status.h"
#include "loom/tensor.h"

namespace loom {

// One dimension: a fixed size, or dynamic (value -1) with an optional symbolic name ("batch").
struct Dim {
  int64_t value = -1;
  std::string symbol;

  bool is_dynamic() const { return value < 0; }
  // "320", "batch" or "?".
  std::string ToString() const;
};

enum class ImageLayout { kNone, kNCHW, kNHWC };
const char* ImageLayoutName(ImageLayout layout);  // "none", "NCHW", "NHWC"

struct TensorInfo {
  std::string name;
  DType dtype = DType::kUnknown;
  std::vector<Dim> shape;  // empty for a scalar

  // "[batch,3,?,?]".
  std::string ShapeString() const;
  // "[batch,3,?,?] f32".
  std::string Describe() const;
  // Rank-4 input with 1, 3 or 4 channels in position 1 (NCHW) or 3 (NHWC); kNone otherwise.
  ImageLayout image_layout() const;
};

struct ModelInfo {
  std::string path;  // as given
  std::string name;  // file stem, used in messages: model 'mlsd_320x320_tiny'
  int64_t ir_version = 0;
  int64_t opset = 0;  // of the default ("ai.onnx") domain
  std::string producer_name;
  std::string producer_version;
  std::vector<TensorInfo> inputs;   // graph inputs that are not initializers, in order
  std::vector<TensorInfo> outputs;  // in order
  // Dim 0 of every input and output is dynamic: requests can be concatenated along dim 0.
  bool dynamic_batch = false;

  // Index of the named input or output, or -1.
  int FindInput(const std::string& name) const;
  int FindOutput(const std::string& name) const;
};

// Reads the model's metadata. Errors (NOT_FOUND, INVALID_ARGUMENT) name the file and say what is
// wrong with it: missing, empty, too large (over protobuf's 2 GiB), an image rather than a model,
// truncated or not ONNX.
absl::StatusOr<ModelInfo> ReadModelInfo(const std::string& path);

// Human-readable multi-line description, as `loom info` prints it.
std::string FormatModelInfo(const ModelInfo& info);

// Checks named inputs against what the model declares: every input present once, no unknown
// name, dtype, rank and every fixed dim equal. The message names the model and input:
//   model 'mlsd_320x320_tiny' input 'input_image_with_alpha:0': expected [1,320,320,4] f32,
//   got [1,3,320,320] f32
// Every shape is first checked against `limits` (CheckShape), before any size is computed.
absl::Status ValidateInputs(const ModelInfo& info, const NamedTensors& inputs,
                            const TensorLimits& limits = {});

}  // namespace loom

#endif  // LOOM_MODEL_INFO_H_
