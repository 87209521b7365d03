// ctc: recogniser outputs [N,T,C] → one text per crop (greedy CTC with the key file).
//   input: rec   keys: ../models/ppocr_keys_v1.txt   boxes: boxes (for the record)
//   crops: upright + recheck_model: rec   (optional) a crop the angle node turned over and that
//       reads below recheck_below (0.6) is read again upright; the better read wins. The angle
//       classifier sees long lines squashed to 192 pixels and sometimes turns upright text over.
// Record: "<name>": [{"text": t, "score": s, "quad": [[x, y] x 4]}]
#include <opencv2/core.hpp>

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

struct CtcParams {
  std::string input, boxes, crops, recheck_model;
  float recheck_below = 0.6f;
  int height = 48, max_width = 1280;
};

class CtcNode final : public Node {
 public:
  CtcNode(std::string name, CtcParams p, std::vector<std::string> charset)
      : Node(std::move(name)), p_(std::move(p)), charset_(std::move(charset)) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    Value v;
    v.type = ValueType::kTexts;
    const std::vector<vision::TextBox>& boxes = frame.values.at(p_.boxes).boxes;
    if (!boxes.empty()) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, p_.input, context));
      if (outputs.empty()) return absl::InvalidArgumentError("ctc: the recogniser gave no output");
      LOOM_ASSIGN_OR_RETURN(v.texts, vision::DecodeCtc(outputs[0].tensor, charset_));
      if (!p_.recheck_model.empty()) LOOM_RETURN_IF_ERROR(Recheck(frame, context, v.texts));
    }
    nlohmann::json texts = nlohmann::json::array();
    for (size_t i = 0; i < v.texts.size() && i < boxes.size(); ++i) {
      texts.push_back({{"text", v.texts[i].text}, {"score", Round(v.texts[i].score, 4)}, {"quad", QuadJson(boxes[i].quad)}});
    }
    frame.record[name()] = texts;
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  absl::Status Recheck(Frame& frame, NodeContext& context,
                       std::vector<vision::RecognizedText>& texts) const {
    const Value& crops = frame.values.at(p_.crops);
    std::vector<size_t> doubtful;
    std::vector<cv::Mat> upright;
    for (size_t i = 0; i < texts.size() && i < crops.crops.size(); ++i) {
      if (crops.rotated[i] && texts[i].score < p_.recheck_below) {
        doubtful.push_back(i);
        cv::Mat turned;
        cv::rotate(crops.crops[i], turned, cv::ROTATE_180);
        upright.push_back(turned);
      }
    }
    if (doubtful.empty()) return absl::OkStatus();
    const ModelInfo* info = context.FindModel(p_.recheck_model);
    // One request per line: each is read at its own width, and the workers share them.
    std::vector<PendingOutputs> pending;
    for (const cv::Mat& crop : upright) {
      pending.push_back(context.Submit(p_.recheck_model, {{info->inputs[0].name,
                                                             vision::TextBatch({crop}, p_.height, p_.max_width)}}));
    }
    for (size_t k = 0; k < doubtful.size(); ++k) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors again, context.Await(pending[k]));
      LOOM_ASSIGN_OR_RETURN(std::vector<vision::RecognizedText> reread, vision::DecodeCtc(again[0].tensor, charset_));
      if (reread[0].score > texts[doubtful[k]].score) texts[doubtful[k]] = reread[0];
    }
    return absl::OkStatus();
  }

  CtcParams p_;
  std::vector<std::string> charset_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeCtcNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"input", "boxes", "keys", "crops", "recheck_model", "recheck_below",
                                                   "height", "max_width"}));
  const YamlReader r = context.Reader(name);
  CtcParams p;
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(ValueSpec boxes, context.Input(params, name, "boxes", ValueType::kTextBoxes));
  p.input = input.producer;
  p.boxes = boxes.producer;
  LOOM_ASSIGN_OR_RETURN(std::string keys, r.String(params, "keys"));
  auto charset = vision::LoadCharset(context.Path(keys));
  if (!charset.ok()) return context.Error(params["keys"], name, std::string(charset.status().message()));
  if (params["recheck_model"]) {
    LOOM_ASSIGN_OR_RETURN(p.recheck_model, r.String(params, "recheck_model"));
    if (!context.Model(p.recheck_model)) return context.Error(params["recheck_model"], name, "unknown model '" + p.recheck_model + "'");
    LOOM_ASSIGN_OR_RETURN(ValueSpec crops, context.Input(params, name, "crops", ValueType::kCrops));
    p.crops = crops.producer;
    LOOM_ASSIGN_OR_RETURN(double below, r.Double(params, "recheck_below", 0, 1, 0.6));
    p.recheck_below = static_cast<float>(below);
  }
  LOOM_ASSIGN_OR_RETURN(int64_t height, r.Int(params, "height", 1, 1024, p.height));
  LOOM_ASSIGN_OR_RETURN(int64_t max_width, r.Int(params, "max_width", 1, 16384, p.max_width));
  p.height = static_cast<int>(height);
  p.max_width = static_cast<int>(max_width);
  context.Declare(name, {ValueType::kTexts, std::nullopt, name});
  return std::unique_ptr<Node>(new CtcNode(name, std::move(p), std::move(*charset)));
}

}  // namespace loom::pipeline
