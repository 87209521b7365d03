#include "vision/ocr.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace loom::vision {
namespace {

// Corners of a rotated rect as top-left, top-right, bottom-right, bottom-left.
std::array<cv::Point2f, 4> OrderedCorners(const cv::RotatedRect& rect) {
  cv::Point2f p[4];
  rect.points(p);
  std::sort(p, p + 4, [](const cv::Point2f& a, const cv::Point2f& b) { return a.x < b.x; });
  // Two leftmost: the upper is top-left; two rightmost: the upper is top-right.
  const cv::Point2f tl = p[0].y <= p[1].y ? p[0] : p[1], bl = p[0].y <= p[1].y ? p[1] : p[0];
  const cv::Point2f tr = p[2].y <= p[3].y ? p[2] : p[3], br = p[2].y <= p[3].y ? p[3] : p[2];
  return {tl, tr, br, bl};
}

float MeanInside(const cv::Mat& probability, const std::vector<cv::Point>& contour) {
  const cv::Rect box =
      cv::boundingRect(contour) & cv::Rect(0, 0, probability.cols, probability.rows);
  if (box.empty()) return 0;
  cv::Mat mask = cv::Mat::zeros(box.size(), CV_8U);
  std::vector<cv::Point> shifted;
  for (const cv::Point& p : contour) shifted.push_back(p - box.tl());
  cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{shifted}, cv::Scalar(1));
  return static_cast<float>(cv::mean(probability(box), mask)[0]);
}

float Distance(const cv::Point2f& a, const cv::Point2f& b) {
  return std::hypot(a.x - b.x, a.y - b.y);
}

}  // namespace

absl::StatusOr<std::vector<TextBox>> DecodeDb(const Tensor& probability, cv::Size original,
                                              const DbOptions& options) {
  if (probability.dtype() != DType::kFloat32 || probability.rank() != 4 ||
      probability.dim(0) != 1 || probability.dim(1) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DB decoding expects a [1,1,H,W] f32 map, got ", probability.Describe()));
  }
  const int h = static_cast<int>(probability.dim(2)), w = static_cast<int>(probability.dim(3));
  const cv::Mat prob(h, w, CV_32F, probability.data());
  cv::Mat mask = prob > options.threshold;  // CV_8U 0/255
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_LIST, cv::CHAIN_APPROX_SIMPLE);
  const float sx = static_cast<float>(original.width) / static_cast<float>(w);
  const float sy = static_cast<float>(original.height) / static_cast<float>(h);
  std::vector<TextBox> boxes;
  for (size_t i = 0; i < contours.size() && static_cast<int>(i) < options.max_candidates; ++i) {
    const std::vector<cv::Point>& contour = contours[i];
    if (contour.size() < 3) continue;
    cv::RotatedRect rect = cv::minAreaRect(contour);
    if (std::min(rect.size.width, rect.size.height) < options.min_side) continue;
    const float score = MeanInside(prob, contour);
    if (score < options.box_threshold) continue;
    // Unclip: DB trains on regions shrunk by this offset; grow them back.
    const double area = rect.size.area(), perimeter = 2.0 * (rect.size.width + rect.size.height);
    const float offset = static_cast<float>(area * options.unclip_ratio / perimeter);
    rect.size.width += 2 * offset;
    rect.size.height += 2 * offset;
    if (std::min(rect.size.width, rect.size.height) < options.min_side + 2) continue;
    TextBox box;
    box.score = score;
    box.quad = OrderedCorners(rect);
    for (cv::Point2f& p : box.quad) {
      p.x = std::clamp(p.x * sx, 0.0f, static_cast<float>(original.width - 1));
      p.y = std::clamp(p.y * sy, 0.0f, static_cast<float>(original.height - 1));
    }
    boxes.push_back(box);
  }
  // Reading order: by line (centres within half a line height), then left to right.
  std::sort(boxes.begin(), boxes.end(), [](const TextBox& a, const TextBox& b) {
    const float ay = (a.quad[0].y + a.quad[3].y) / 2, by = (b.quad[0].y + b.quad[3].y) / 2;
    const float line = std::max(Distance(a.quad[0], a.quad[3]), Distance(b.quad[0], b.quad[3])) / 2;
    if (std::fabs(ay - by) > line) return ay < by;
    return a.quad[0].x < b.quad[0].x;
  });
  return boxes;
}

cv::Mat CropText(const cv::Mat& image, const TextBox& box) {
  const auto& q = box.quad;
  const float width = std::max(Distance(q[0], q[1]), Distance(q[3], q[2]));
  const float height = std::max(Distance(q[0], q[3]), Distance(q[1], q[2]));
  const int w = std::max(1, static_cast<int>(std::lround(width)));
  const int h = std::max(1, static_cast<int>(std::lround(height)));
  const cv::Point2f src[4] = {q[0], q[1], q[2], q[3]};
  const cv::Point2f dst[4] = {{0, 0},
                              {static_cast<float>(w), 0},
                              {static_cast<float>(w), static_cast<float>(h)},
                              {0, static_cast<float>(h)}};
  cv::Mat crop;
  cv::warpPerspective(image, crop, cv::getPerspectiveTransform(src, dst), cv::Size(w, h),
                      cv::INTER_CUBIC, cv::BORDER_REPLICATE);
  if (crop.rows >= 1.5 * crop.cols) cv::rotate(crop, crop, cv::ROTATE_90_COUNTERCLOCKWISE);
  return crop;
}

namespace {

int TextWidth(const cv::Mat& crop, int height, int max_width) {
  const double ratio = static_cast<double>(crop.cols) / std::max(crop.rows, 1);
  return std::clamp(static_cast<int>(std::ceil(height * ratio)), 1, max_width);
}

// Writes `resized` (8-bit BGR, `height` rows) into the planes at `out` of a [3,height,width] row.
void WriteTextRow(const cv::Mat& resized, float* out, int width) {
  const size_t plane = static_cast<size_t>(resized.rows) * width;
  for (int y = 0; y < resized.rows; ++y) {
    const cv::Vec3b* row = resized.ptr<cv::Vec3b>(y);
    for (int x = 0; x < resized.cols; ++x) {
      for (int c = 0; c < 3; ++c) {
        out[static_cast<size_t>(c) * plane + static_cast<size_t>(y) * width + x] =
            (row[x][c] / 255.0f - 0.5f) / 0.5f;
      }
    }
  }
}

}  // namespace

Tensor TextBatch(const std::vector<cv::Mat>& crops, int height, int max_width, int fixed_width) {
  std::vector<cv::Mat> resized;
  int widest = 1;
  for (const cv::Mat& crop : crops) {
    const int w = TextWidth(crop, height, fixed_width > 0 ? fixed_width : max_width);
    cv::Mat r;
    cv::resize(crop, r, cv::Size(w, height), 0, 0, cv::INTER_LINEAR);
    widest = std::max(widest, w);
    resized.push_back(r);
  }
  const int width = fixed_width > 0 ? fixed_width : widest;
  Tensor batch =
      Tensor::Allocate(DType::kFloat32, {static_cast<int64_t>(crops.size()), 3, height, width});
  const size_t row = 3 * static_cast<size_t>(height) * width;
  for (size_t n = 0; n < resized.size(); ++n)
    WriteTextRow(resized[n], batch.data_as<float>() + n * row, width);
  return batch;
}

Tensor TextRow(const cv::Mat& crop, int height, int max_width, int quantum,
               int64_t* content_width) {
  const int w = TextWidth(crop, height, max_width);
  const int q = std::max(quantum, 1);
  const int width = std::min(std::max((w + q - 1) / q * q, q), std::max(max_width, w));
  cv::Mat r;
  cv::resize(crop, r, cv::Size(w, height), 0, 0, cv::INTER_LINEAR);
  Tensor t = Tensor::Allocate(DType::kFloat32, {1, 3, height, width});
  WriteTextRow(r, t.data_as<float>(), width);
  if (content_width) *content_width = w;
  return t;
}

absl::StatusOr<std::vector<std::string>> LoadCharset(const std::string& keys_path) {
  std::ifstream in(keys_path);
  if (!in) return absl::NotFoundError(absl::StrCat("key file '", keys_path, "' cannot be read"));
  std::vector<std::string> charset = {""};  // CTC blank
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    charset.push_back(line);
  }
  charset.push_back(" ");
  return charset;
}

// A blank step whose space probability reaches this is read as a space (see DecodeCtc). Chosen on
// the two test pages: 0.1-0.2 separate every word of the rotated one and change nothing on the
// straight one; 0.05 and below start adding spaces inside lines.
constexpr float kCtcSpaceProbability = 0.2f;

absl::StatusOr<std::vector<RecognizedText>> DecodeCtc(const Tensor& probabilities,
                                                      const std::vector<std::string>& charset) {
  if (probabilities.dtype() != DType::kFloat32 || probabilities.rank() != 3 ||
      probabilities.dim(2) != static_cast<int64_t>(charset.size()) ||
      probabilities.dim(2) > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("CTC decoding expects [N,T,", charset.size(),
                                                   "] f32, got ", probabilities.Describe()));
  }
  const int64_t n = probabilities.dim(0), steps = probabilities.dim(1),
                classes = probabilities.dim(2);
  const float* p = probabilities.data_as<float>();
  std::vector<RecognizedText> out(static_cast<size_t>(n));
  const int64_t space = classes - 1;  // PaddleOCR's alphabet ends with " "
  const bool has_space = !charset.empty() && charset.back() == " ";
  for (int64_t i = 0; i < n; ++i) {
    std::string& text = out[static_cast<size_t>(i)].text;
    int64_t previous = 0;  // the step before
    bool gap = false;      // a blank step since it that could be a space
    double sum = 0;
    int kept = 0;
    for (int64_t t = 0; t < steps; ++t) {
      const float* row = p + (i * steps + t) * classes;
      // OpenCV's vectorised search (std::max_element is not) over PP-OCR's 6,625 classes, the bulk
      // of a page's decoding; the first maximum, as std::max_element.
      cv::Point at;
      const cv::Mat scores(1, static_cast<int>(classes), CV_32F, const_cast<float*>(row));
      cv::minMaxLoc(scores, nullptr, nullptr, nullptr, &at);
      const int64_t best = at.x < 0 ? 0 : at.x;  // no maximum (a row of NaN): blank
      // A gap between words that the recogniser scores as blank but with a real chance of a space
      // is a space: resampled text (a rotated page warped upright) blurs the gaps, and argmax alone
      // then runs words together ("projectswhich oftenbuild"). Written before the next character.
      // (The blank CTC needs between two equal letters, as in "too", could in principle read as a
      // space too: on the test pages none does at this threshold, while "get them" and
      // "photographs, since" need their one-step gaps.)
      if (has_space && best == 0 && row[space] >= kCtcSpaceProbability && !text.empty() &&
          text.back() != ' ')
        gap = true;
      if (best != 0 && best != previous) {
        if (best == space) {
          if (!text.empty() && text.back() != ' ') text += ' ';
        } else {
          if (gap) text += ' ';
          text += charset[static_cast<size_t>(best)];
          sum += row[best];
          ++kept;
        }
        gap = false;
      }
      previous = best;
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out[static_cast<size_t>(i)].score = kept > 0 ? static_cast<float>(sum / kept) : 0.0f;
  }
  return out;
}

}  // namespace loom::vision
