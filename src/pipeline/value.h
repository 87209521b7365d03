// What flows between pipeline nodes within one frame: each node produces one Value, named after
// the node. Types are checked when the pipeline is built, so a node never meets a value it cannot
// read.
#ifndef LOOM_PIPELINE_VALUE_H_
#define LOOM_PIPELINE_VALUE_H_

#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "loom/pipeline.h"
#include "loom/tensor.h"
#include "vision/blob.h"
#include "vision/detection.h"
#include "vision/mlsd.h"
#include "vision/ocr.h"

namespace loom::pipeline {

enum class ValueType { kImage, kTensor, kOutputs, kDetections, kTextBoxes, kCrops, kTexts, kLines };
const char* ValueTypeName(ValueType type);  // "image", "tensor", "model outputs", ...

// A model's answer, possibly still being computed (infer nodes submit and move on).
using PendingOutputs = std::shared_future<absl::StatusOr<NamedTensors>>;

// One request of a fan-out: which rows of the infer node's input it carried, and its answer.
struct OutputPart {
  std::vector<int64_t> rows;   // indices into the input's rows
  PendingOutputs outputs;      // [rows.size(), ...] per model output
  std::vector<float> padding;  // per row: the share of the run's width that was padding (0..1)
};

struct Value {
  ValueType type = ValueType::kImage;
  cv::Mat image;                    // kImage (8-bit BGR)
  Tensor tensor;                    // kTensor: one [N,...] batch, or
  std::vector<Tensor> rows;         // kTensor as separate [1,...] rows whose shapes may
                                    // differ (text lines at their own width bucket)
  std::vector<int64_t> row_widths;  // kTensor: each row's content width (text lines), if known
  vision::ImageTransform to_image;  // kTensor from preprocess: input pixel -> image pixel
  // Fan-outs of detections (box_crop, and preprocess over its crops): per crop or row, the map
  // from its pixels (a crop's, or the model input's) to the frame's, and in `detections` the
  // detection it was cut from, so that decoders put their answers back on the right one.
  std::vector<vision::ImageTransform> row_to_image;
  PendingOutputs outputs;                     // kOutputs: every row, joined in input order
  std::vector<OutputPart> parts;              // kOutputs: the requests it was run as
  std::vector<vision::Detection> detections;  // kDetections; kCrops/kTensor: each row's owner
  std::vector<vision::TextBox> boxes;         // kTextBoxes
  std::vector<cv::Mat> crops;                 // kCrops
  std::vector<bool> rotated;                  // kCrops: turned 180° by an angle node
  std::vector<vision::RecognizedText> texts;  // kTexts (one per crop)
  std::vector<vision::LineSegment> lines;     // kLines
};

// One frame on its way through the graph.
struct Frame {
  int64_t index = 0;                                 // position in the source, from 0
  std::string source;                                // file name, or video name and frame number
  std::map<std::string, Value> values;               // "image" is the decoded frame
  nlohmann::json record = nlohmann::json::object();  // what sinks write for this frame
  std::map<std::string, NodeTiming> timings;         // per node
  std::string error;  // why the frame failed (a decode error, or "node 'x': ...")
  // An image file still to decode: the pipeline thread that takes the frame decodes it first (on
  // its leased core, so that a folder's images decode in parallel), into "image".
  std::string decode_path;
  // What each sink made of the frame on the pipeline thread (an encoded annotated copy, a drawn
  // video frame), by sink index, for the in-order write.
  std::map<size_t, std::string> prepared_bytes;
  std::map<size_t, cv::Mat> prepared_images;
};

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_VALUE_H_
