// Factories of the built-in node types (one .cc each; registered in ../registry.cc).
#ifndef LOOM_PIPELINE_NODES_NODES_H_
#define LOOM_PIPELINE_NODES_NODES_H_

#include <memory>
#include <string>

#include "pipeline/node.h"

namespace loom::pipeline {

#define LOOM_NODE_FACTORY(fn)                                                            \
  absl::StatusOr<std::unique_ptr<Node>> fn(const std::string& name, const YAML::Node& params, \
                                           BuildContext& context)

LOOM_NODE_FACTORY(MakePreprocessNode);   // preprocess: image -> tensor (blobFromImage)
LOOM_NODE_FACTORY(MakeInferNode);        // infer: tensors -> model outputs (async)
LOOM_NODE_FACTORY(MakeBlazeFaceNode);    // blazeface: outputs -> face detections
LOOM_NODE_FACTORY(MakeMlsdNode);         // mlsd: outputs -> line segments
LOOM_NODE_FACTORY(MakeDbNode);           // db: detector outputs -> text boxes
LOOM_NODE_FACTORY(MakeCropNode);         // crop: text boxes -> crops (fan-out)
LOOM_NODE_FACTORY(MakeTextBatchNode);    // text_batch: crops -> one [N,3,H,W] batch
LOOM_NODE_FACTORY(MakeAngleNode);        // angle: classifier outputs + crops -> upright crops
LOOM_NODE_FACTORY(MakeCtcNode);          // ctc: recogniser outputs -> texts
LOOM_NODE_FACTORY(MakeTopKNode);         // topk: outputs -> softmax top-k classes

#undef LOOM_NODE_FACTORY

// Opens the definition of a factory declared above.
#define LOOM_NODE_FACTORY_IMPL(fn)                                                           \
  absl::StatusOr<std::unique_ptr<Node>> fn(const std::string& name, const YAML::Node& params, \
                                           BuildContext& context)

// Waits for the model outputs named by `input` and returns them (or the run's error).
absl::StatusOr<NamedTensors> AwaitOutputs(const Frame& frame, const std::string& input);

// Where a decoder's coordinates go. With `preprocess: NODE` in its parameters, the decoder works
// in that preprocess node's input pixels and maps them back through its resize (letterbox, crop);
// without, coordinates are scaled from the model's input to the whole frame (a plain resize).
struct CoordinateMap {
  std::string preprocess;  // node name, or empty
  std::string image;       // the frame value, for the plain resize
  // The transform for this frame, from input pixels of a model with `input_w` x `input_h`.
  vision::ImageTransform For(const Frame& frame, int input_w, int input_h) const;
};
absl::StatusOr<CoordinateMap> ReadCoordinateMap(const YAML::Node& params, const std::string& node,
                                                BuildContext& context);

// Rounds for JSON records (so that output is stable and readable).
double Round(double v, int digits);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_NODES_NODES_H_
