// Factories of the built-in node types (a .cc each, letterbox beside preprocess in preprocess.cc;
// registered in ../registry.cc).
#ifndef LOOM_PIPELINE_NODES_NODES_H_
#define LOOM_PIPELINE_NODES_NODES_H_

#include <memory>
#include <string>

#include "pipeline/node.h"
#include "pipeline/nodes/geometry.h"

namespace loom::pipeline {

#define LOOM_NODE_FACTORY(fn)                                                                 \
  absl::StatusOr<std::unique_ptr<Node>> fn(const std::string& name, const YAML::Node& params, \
                                           BuildContext& context)

LOOM_NODE_FACTORY(MakePreprocessNode);  // preprocess: image -> tensor (blobFromImage)
LOOM_NODE_FACTORY(MakeInferNode);       // infer: tensors -> model outputs (async)
LOOM_NODE_FACTORY(MakeBlazeFaceNode);   // blazeface: outputs -> face detections
LOOM_NODE_FACTORY(MakeMlsdNode);        // mlsd: outputs -> line segments
LOOM_NODE_FACTORY(MakeDbNode);          // db: detector outputs -> text boxes
LOOM_NODE_FACTORY(MakeCropNode);        // crop: text boxes -> crops (fan-out)
LOOM_NODE_FACTORY(
    MakeTextBatchNode);  // text_batch: crops -> a [N,3,H,W] batch, or rows at their widths
LOOM_NODE_FACTORY(MakeAngleNode);      // angle: classifier outputs + crops -> upright crops
LOOM_NODE_FACTORY(MakeCtcNode);        // ctc: recogniser outputs -> texts
LOOM_NODE_FACTORY(MakeTopKNode);       // topk: outputs -> softmax top-k classes
LOOM_NODE_FACTORY(MakeBoxCropNode);    // box_crop: detections -> a crop per detection (fan-out)
LOOM_NODE_FACTORY(MakeLandmarksNode);  // landmarks: outputs -> points on each detection
LOOM_NODE_FACTORY(MakeClassifyNode);   // classify: outputs -> a class per detection
LOOM_NODE_FACTORY(MakeLetterboxNode);  // letterbox: image -> YOLO's padded input tensor
LOOM_NODE_FACTORY(MakeYoloNode);       // yolo: outputs -> boxes with classes (class-wise NMS)

#undef LOOM_NODE_FACTORY

// Opens the definition of a factory declared above.
#define LOOM_NODE_FACTORY_IMPL(fn)                                                            \
  absl::StatusOr<std::unique_ptr<Node>> fn(const std::string& name, const YAML::Node& params, \
                                           BuildContext& context)

// Waits for the model outputs named by `input` (an infer node) and returns them, or the run's
// error; the frame's core is given up meanwhile.
absl::StatusOr<NamedTensors> AwaitOutputs(const Frame& frame, const std::string& input,
                                          NodeContext& context);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_NODES_NODES_H_
