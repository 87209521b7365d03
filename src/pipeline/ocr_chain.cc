#include "pipeline/ocr_chain.h"

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "vision/blob.h"

namespace loom::pipeline {

absl::StatusOr<std::unique_ptr<OcrChain>> OcrChain::Create(Engine* engine, OcrOptions options) {
  for (const std::string* name : {&options.det_model, &options.cls_model, &options.rec_model}) {
    if (name->empty() && name == &options.cls_model) continue;
    const ModelInfo* info = engine->FindModel(*name);
    if (!info) return absl::NotFoundError(absl::StrCat("OCR: no model '", *name, "' in the engine"));
    if (info->inputs.size() != 1 || info->inputs[0].image_layout() != ImageLayout::kNCHW) {
      return absl::InvalidArgumentError(absl::StrCat("OCR: model '", *name, "' input ",
                                                     info->inputs.empty() ? "missing" : info->inputs[0].Describe(),
                                                     " is not an NCHW image"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> charset, vision::LoadCharset(options.keys_path));
  const ModelInfo* rec = engine->FindModel(options.rec_model);
  const TensorInfo& out = rec->outputs[0];
  if (out.shape.size() != 3 || out.shape[2].value != static_cast<int64_t>(charset.size())) {
    return absl::InvalidArgumentError(absl::StrCat("OCR: recogniser output ", out.Describe(), " does not match the ",
                                                   charset.size(), " symbols of '", options.keys_path, "'"));
  }
  return std::unique_ptr<OcrChain>(new OcrChain(engine, std::move(options), std::move(charset)));
}

absl::StatusOr<std::vector<vision::RecognizedText>> OcrChain::Recognize(
    const std::vector<cv::Mat>& crops) const {
  const ModelInfo* info = engine_->FindModel(options_.rec_model);
  LOOM_ASSIGN_OR_RETURN(InferResult out,
                        engine_->Infer(options_.rec_model,
                                       {{info->inputs[0].name,
                                         vision::TextBatch(crops, 48, options_.rec_max_width)}}));
  return vision::DecodeCtc(out.outputs[0].tensor, charset_);
}

absl::StatusOr<std::vector<OcrLine>> OcrChain::Run(const cv::Mat& image) const {
  // 1. Detection at a multiple of 32, ImageNet normalisation on BGR (PaddleOCR's convention).
  const double shrink = std::min(1.0, static_cast<double>(options_.det_max_side) /
                                          std::max(image.cols, image.rows));
  vision::BlobOptions det;
  det.width = std::max(32, static_cast<int>(std::lround(image.cols * shrink / 32.0)) * 32);
  det.height = std::max(32, static_cast<int>(std::lround(image.rows * shrink / 32.0)) * 32);
  det.channels = vision::ChannelOrder::kBGR;
  det.mean = {123.675, 116.28, 103.53, 0};
  det.std = {0.229, 0.224, 0.225, 1};
  LOOM_ASSIGN_OR_RETURN(Tensor det_input, vision::BlobFromImage(image, det));
  const ModelInfo* det_info = engine_->FindModel(options_.det_model);
  LOOM_ASSIGN_OR_RETURN(InferResult det_out,
                        engine_->Infer(options_.det_model, {{det_info->inputs[0].name, det_input}}));
  LOOM_ASSIGN_OR_RETURN(std::vector<vision::TextBox> boxes,
                        vision::DecodeDb(det_out.outputs[0].tensor, image.size(), options_.db));
  std::vector<OcrLine> lines(boxes.size());
  if (boxes.empty()) return lines;
  std::vector<cv::Mat> crops;
  for (size_t i = 0; i < boxes.size(); ++i) {
    lines[i].box = boxes[i];
    crops.push_back(vision::CropText(image, boxes[i]));
  }

  // 2. Angle: [N,2] probabilities of 0° and 180°, all crops in one request.
  if (!options_.cls_model.empty()) {
    const ModelInfo* cls_info = engine_->FindModel(options_.cls_model);
    LOOM_ASSIGN_OR_RETURN(InferResult cls_out,
                          engine_->Infer(options_.cls_model, {{cls_info->inputs[0].name,
                                                               vision::TextBatch(crops, 48, 192, 192)}}));
    const Tensor& p = cls_out.outputs[0].tensor;
    for (size_t i = 0; i < crops.size(); ++i) {
      if (p.data_as<float>()[i * 2 + 1] > options_.cls_threshold) {
        cv::rotate(crops[i], crops[i], cv::ROTATE_180);
        lines[i].rotated = true;
      }
    }
  }

  // 3. Recognition: every crop at height 48, padded to the widest, one request.
  LOOM_ASSIGN_OR_RETURN(std::vector<vision::RecognizedText> texts, Recognize(crops));
  for (size_t i = 0; i < lines.size(); ++i) {
    lines[i].text = texts[i].text;
    lines[i].score = texts[i].score;
  }

  // 4. The classifier sees long lines squashed to 192 pixels and sometimes turns upright text
  // over; a turned line read with low confidence is read again upright, and the better read kept.
  std::vector<size_t> doubtful;
  std::vector<cv::Mat> upright;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rotated && lines[i].score < options_.recheck_below_score) {
      doubtful.push_back(i);
      cv::Mat turned;
      cv::rotate(crops[i], turned, cv::ROTATE_180);
      upright.push_back(turned);
    }
  }
  if (doubtful.empty()) return lines;
  LOOM_ASSIGN_OR_RETURN(std::vector<vision::RecognizedText> reread, Recognize(upright));
  for (size_t k = 0; k < doubtful.size(); ++k) {
    OcrLine& line = lines[doubtful[k]];
    if (reread[k].score > line.score) {
      line.text = reread[k].text;
      line.score = reread[k].score;
      line.rotated = false;
    }
  }
  return lines;
}

}  // namespace loom::pipeline
