// _loom vision helpers: the post-processing Loom's pipeline nodes use, for Python loops that run
// the same models their own way (the naive strategies of `python3 -m loom.bench face-chain`), so
// that every strategy decodes alike and only the way models run differs.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

#include "errors.h"
#include "vision/blazeface.h"
#include "vision/yolo.h"

namespace loom::python {
namespace {

using FloatArrays = std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>>;

// Copies of model outputs handed back from Python, named output0, output1, ...
NamedTensors Copies(const FloatArrays& outputs) {
  NamedTensors tensors;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& a = outputs[i];
    Shape shape(a.shape(), a.shape() + a.ndim());
    auto t = Tensor::TryAllocate(DType::kFloat32, shape);
    Check(t.status());
    std::memcpy(t->data(), a.data(), t->byte_size());
    tensors.emplace_back("output" + std::to_string(i), std::move(*t));
  }
  return tensors;
}

// BlazeFace's four outputs (in model order) -> [(box [x1, y1, x2, y2], score, keypoints [6, 2])]
// in the pixels of an image of `width` x `height` that was resized (not letterboxed) to the
// model's `input_size` square.
py::list BlazeFaceDecode(const FloatArrays& outputs, int input_size, float threshold, float iou,
                         float width, float height) {
  NamedTensors tensors = Copies(outputs);
  vision::BlazeFaceOptions options;
  options.score_threshold = threshold;
  options.iou_threshold = iou;
  options.image_width = width;
  options.image_height = height;
  std::vector<vision::Detection> faces =
      Unwrap(vision::DecodeBlazeFace(tensors, input_size, options));
  py::list out;
  for (const vision::Detection& d : faces) {
    py::list keypoints;
    for (const vision::Point& p : d.keypoints) keypoints.append(py::make_tuple(p.x, p.y));
    out.append(
        py::make_tuple(py::make_tuple(d.x_min, d.y_min, d.x_max, d.y_max), d.score, keypoints));
  }
  return out;
}

// A YOLO head's outputs (raw maps with anchors and strides, or one decoded output when `strides`
// is empty) -> [(box [x1, y1, x2, y2], score, class)] in the model input's pixels, after
// class-wise NMS (the yolo node's decoder).
py::list YoloDecode(const FloatArrays& outputs, const std::vector<std::vector<float>>& anchors,
                    const std::vector<int>& strides, float threshold, float iou,
                    int max_detections) {
  NamedTensors tensors = Copies(outputs);
  vision::YoloOptions options;
  options.raw = !strides.empty();
  options.anchors = anchors;
  options.strides = strides;
  options.score_threshold = threshold;
  options.iou_threshold = iou;
  options.max_detections = max_detections;
  py::list out;
  for (const vision::Detection& d : Unwrap(vision::DecodeYolo(tensors, options))) {
    out.append(
        py::make_tuple(py::make_tuple(d.x_min, d.y_min, d.x_max, d.y_max), d.score, d.class_id));
  }
  return out;
}

}  // namespace

void RegisterVision(py::module_& m) {
  m.def("_yolo_decode", &YoloDecode, py::arg("outputs"), py::arg("anchors"), py::arg("strides"),
        py::arg("threshold") = 0.25f, py::arg("iou") = 0.45f, py::arg("max_detections") = 300,
        "YOLO outputs -> [(box, score, class)] in input pixels, class-wise NMS (the yolo node's "
        "decoder).");
  m.def("_blazeface_decode", &BlazeFaceDecode, py::arg("outputs"), py::arg("input_size"),
        py::arg("threshold") = 0.5f, py::arg("iou") = 0.3f, py::arg("width") = 1.0f,
        py::arg("height") = 1.0f,
        "BlazeFace outputs -> [(box, score, keypoints)] in an image of width x height (the "
        "blazeface node's decoder).");
}

}  // namespace loom::python
