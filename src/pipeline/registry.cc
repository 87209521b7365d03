// Node types by name: one line each.
#include <map>
#include <string>
#include <vector>

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

const std::map<std::string, NodeFactory>& Registry() {
  static const auto* registry = new std::map<std::string, NodeFactory>{
      {"preprocess", MakePreprocessNode},
      {"infer", MakeInferNode},
      {"blazeface", MakeBlazeFaceNode},
      {"mlsd", MakeMlsdNode},
      {"db", MakeDbNode},
      {"crop", MakeCropNode},
      {"text_batch", MakeTextBatchNode},
      {"angle", MakeAngleNode},
      {"ctc", MakeCtcNode},
      {"topk", MakeTopKNode},
      {"box_crop", MakeBoxCropNode},
      {"landmarks", MakeLandmarksNode},
      {"classify", MakeClassifyNode},
      {"letterbox", MakeLetterboxNode},
      {"yolo", MakeYoloNode},
  };
  return *registry;
}

}  // namespace

const NodeFactory* FindNodeType(const std::string& type) {
  auto it = Registry().find(type);
  return it == Registry().end() ? nullptr : &it->second;
}

std::vector<std::string> NodeTypeNames() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : Registry()) names.push_back(name);
  return names;
}

}  // namespace loom::pipeline
