// ctc: recogniser outputs [N,T,C] → one text per crop (greedy CTC with the key file).
//   input: rec   keys: ../models/ppocr_keys_v1.txt   boxes: boxes (for the record)
//   crops: upright + recheck_model: rec   (optional) a line that reads below recheck_below (0.6)
//       is read again, alone and at its exact width, where the first read had a reason to go
//       wrong: the angle node turned it over (the classifier sees long lines squashed to 192
//       pixels and sometimes turns upright text over: it is read turned back), or it ran padded
//       by more than a quarter of its width (a short line rounded up to its width bucket, or one
//       run at a fixed width). The better read wins.
// The recogniser's requests are decoded in the order they were sent, each as soon as it has
// landed, and a line's recheck is sent at once, beside the rows still running; outputs of
// different widths are never joined.
// Record: "<name>": [{"text": t, "score": s, "quad": [[x, y] x 4]}]
#include <opencv2/core.hpp>
#include <optional>

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

// A row run with more than this share of its width padding is read again when it reads poorly.
constexpr float kPaddedShare = 0.25f;

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
    if (!boxes.empty()) LOOM_RETURN_IF_ERROR(Read(frame, context, v.texts));
    nlohmann::json texts = nlohmann::json::array();
    for (size_t i = 0; i < v.texts.size() && i < boxes.size(); ++i) {
      texts.push_back({{"text", v.texts[i].text},
                       {"score", Round(v.texts[i].score, 4)},
                       {"quad", QuadJson(boxes[i].quad)}});
    }
    frame.record[name()] = texts;
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  struct Recheck {
    size_t row;
    PendingOutputs outputs;
  };

  absl::Status Read(Frame& frame, NodeContext& context,
                    std::vector<vision::RecognizedText>& texts) const {
    const Value& rec = frame.values.at(p_.input);
    if (rec.parts.empty())
      return absl::InvalidArgumentError("ctc: the recogniser was not run on this frame's lines");
    size_t rows = 0;
    for (const OutputPart& part : rec.parts) {
      for (int64_t r : part.rows) rows = std::max(rows, static_cast<size_t>(r) + 1);
    }
    texts.assign(rows, {});
    std::vector<Recheck> rechecks;
    for (const OutputPart& part : rec.parts) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, context.Await(part.outputs));
      if (outputs.empty()) return absl::InvalidArgumentError("ctc: the recogniser gave no output");
      LOOM_ASSIGN_OR_RETURN(std::vector<vision::RecognizedText> read,
                            vision::DecodeCtc(outputs[0].tensor, charset_));
      if (read.size() != part.rows.size()) {
        return absl::InvalidArgumentError(absl::StrCat("ctc: the recogniser answered ", read.size(),
                                                       " rows for a request of ",
                                                       part.rows.size()));
      }
      for (size_t k = 0; k < read.size(); ++k) {
        const auto row = static_cast<size_t>(part.rows[k]);
        texts[row] = std::move(read[k]);
        const float padding = k < part.padding.size() ? part.padding[k] : 0.0f;
        if (std::optional<Recheck> again =
                MaybeRecheck(frame, context, row, texts[row].score, padding)) {
          rechecks.push_back(std::move(*again));
        }
      }
    }
    for (const Recheck& r : rechecks) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors again, context.Await(r.outputs));
      if (again.empty()) return absl::InvalidArgumentError("ctc: the recogniser gave no output");
      LOOM_ASSIGN_OR_RETURN(std::vector<vision::RecognizedText> reread,
                            vision::DecodeCtc(again[0].tensor, charset_));
      if (!reread.empty() && reread[0].score > texts[r.row].score) texts[r.row] = reread[0];
    }
    return absl::OkStatus();
  }

  // A second read of a poorly read line, alone at its own width: turned back if the angle node
  // turned it over, as it is if it ran padded.
  std::optional<Recheck> MaybeRecheck(const Frame& frame, NodeContext& context, size_t row,
                                      float score, float padding) const {
    if (p_.recheck_model.empty() || score >= p_.recheck_below) return std::nullopt;
    const Value& crops = frame.values.at(p_.crops);
    if (row >= crops.crops.size()) return std::nullopt;
    const bool turned = row < crops.rotated.size() && crops.rotated[row];
    if (!turned && padding <= kPaddedShare) return std::nullopt;
    cv::Mat crop = crops.crops[row];
    if (turned) cv::rotate(crops.crops[row], crop, cv::ROTATE_180);
    const ModelInfo* info = context.FindModel(p_.recheck_model);
    if (!info || info->inputs.empty()) return std::nullopt;
    return Recheck{row,
                   context.Submit(p_.recheck_model,
                                  {{info->inputs[0].name,
                                    vision::TextRow(crop, p_.height, p_.max_width, 1, nullptr)}})};
  }

  CtcParams p_;
  std::vector<std::string> charset_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeCtcNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name,
                                    {"input", "boxes", "keys", "crops", "recheck_model",
                                     "recheck_below", "height", "max_width"}));
  const YamlReader r = context.Reader(name);
  CtcParams p;
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(ValueSpec boxes,
                        context.Input(params, name, "boxes", ValueType::kTextBoxes));
  p.input = input.producer;
  p.boxes = boxes.producer;
  LOOM_ASSIGN_OR_RETURN(std::string keys, r.String(params, "keys"));
  auto charset = vision::LoadCharset(context.Path(keys));
  if (!charset.ok())
    return context.Error(params["keys"], name, std::string(charset.status().message()));
  if (params["recheck_model"]) {
    LOOM_ASSIGN_OR_RETURN(p.recheck_model, r.String(params, "recheck_model"));
    if (!context.Model(p.recheck_model))
      return context.Error(params["recheck_model"], name,
                           "unknown model '" + p.recheck_model + "'");
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
