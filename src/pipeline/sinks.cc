#include "pipeline/sinks.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::pipeline {
namespace {

namespace fs = std::filesystem;

class JsonLinesSink final : public Sink {
 public:
  JsonLinesSink(std::string path, bool append)
      : path_(std::move(path)), out_(path_, append ? std::ios::app : std::ios::trunc) {}
  absl::Status Write(const Frame&, const nlohmann::json& record) override {
    out_ << record.dump() << "\n";
    return out_ ? absl::OkStatus()
                : absl::InternalError(absl::StrCat("cannot write '", path_, "'"));
  }
  absl::Status Close() override {
    out_.close();
    return absl::OkStatus();
  }

 private:
  std::string path_;
  std::ofstream out_;
};

// Prints recognised text (every record entry that is a list of {"text": ...}) to stdout.
class TextSink final : public Sink {
 public:
  absl::Status Write(const Frame& frame, const nlohmann::json& record) override {
    std::cout << "== " << frame.source << "\n";
    if (!frame.error.empty()) std::cout << "error: " << frame.error << "\n";
    for (const auto& [key, value] : record.items()) {
      if (!value.is_array()) continue;
      for (const auto& item : value) {
        if (item.is_object() && item.contains("text") && item["text"].is_string()) {
          std::cout << item["text"].get<std::string>() << "\n";
        }
      }
    }
    std::cout << std::flush;
    return absl::OkStatus();
  }
};

// The frame's image with what its nodes found drawn on it; empty when it has no image.
cv::Mat Annotated(const Frame& frame) {
  auto it = frame.values.find("image");
  if (it == frame.values.end() || it->second.image.empty()) return {};
  cv::Mat canvas = it->second.image.clone();
  Annotate(frame, canvas);
  return canvas;
}

class AnnotateSink final : public Sink {
 public:
  AnnotateSink(std::string dir, bool by_source) : dir_(std::move(dir)), by_source_(by_source) {}
  void Prepare(Frame& frame) override {
    const cv::Mat canvas = Annotated(frame);
    std::vector<uchar> jpeg;
    if (!canvas.empty() && cv::imencode(".jpg", canvas, jpeg)) {
      frame.prepared_bytes[index()].assign(reinterpret_cast<const char*>(jpeg.data()), jpeg.size());
    }
  }
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.values.find("image");
    if (it == frame.values.end() || it->second.image.empty())
      return absl::OkStatus();  // a failed decode
    const std::string path =
        by_source_ ? absl::StrCat(dir_, "/", fs::path(frame.source).stem().string(), ".jpg")
                   : absl::StrFormat("%s/frame_%06d.jpg", dir_, frame.index);
    auto bytes = frame.prepared_bytes.find(index());
    if (bytes == frame.prepared_bytes.end())
      return absl::InternalError(absl::StrCat("cannot encode '", path, "'"));
    std::ofstream out(path, std::ios::binary);
    out.write(bytes->second.data(), static_cast<std::streamsize>(bytes->second.size()));
    return out ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  }

 private:
  std::string dir_;
  bool by_source_;
};

class VideoSink final : public Sink {
 public:
  VideoSink(std::string path, double fps)
      : path_(std::move(path)), fps_(fps > 0 && fps <= 1000 ? fps : 25) {}
  void Prepare(Frame& frame) override {
    cv::Mat canvas = Annotated(frame);
    if (!canvas.empty()) frame.prepared_images[index()] = std::move(canvas);
  }
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.prepared_images.find(index());
    if (it == frame.prepared_images.end()) return absl::OkStatus();  // no image (a failed decode)
    cv::Mat canvas = it->second;
    if (!writer_.isOpened()) {
      size_ = canvas.size();
      if (!writer_.open(path_, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps_, size_)) {
        return absl::InternalError(absl::StrCat("cannot write video '", path_, "'"));
      }
    }
    if (canvas.size() != size_) cv::resize(canvas, canvas, size_);
    writer_.write(canvas);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    writer_.release();
    return absl::OkStatus();
  }

 private:
  std::string path_;
  double fps_;
  cv::Size size_;
  cv::VideoWriter writer_;
};

}  // namespace

namespace {

// A label in a filled box, its bottom-left corner at `anchor` (moved inside the image when it
// would leave it); the font scaled to `height` pixels, never below a legible minimum.
void DrawLabel(cv::Mat& canvas, const std::string& text, cv::Point anchor, double height,
               const cv::Scalar& background) {
  if (text.empty()) return;
  const int font = cv::FONT_HERSHEY_DUPLEX;  // its "a" reads as "a" (SIMPLEX's reads as "o")
  const double scale = std::clamp(height / 22.0, 0.45, 2.0);
  const int thickness = scale < 0.9 ? 1 : 2;
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, font, scale, thickness, &baseline);
  const int pad = 3;
  int x = std::clamp(anchor.x, 0, std::max(0, canvas.cols - size.width - 2 * pad));
  int y = anchor.y;
  if (y - size.height - 2 * pad < 0) y = size.height + 2 * pad;  // no room above: just inside
  y = std::min(y, canvas.rows);
  cv::rectangle(canvas, cv::Point(x, y - size.height - 2 * pad),
                cv::Point(x + size.width + 2 * pad, y), background, cv::FILLED);
  cv::putText(canvas, text, cv::Point(x + pad, y - pad), font, scale, {0, 0, 0}, thickness,
              cv::LINE_AA);
}

// A detection's box, its detector's keypoints, the landmarks placed on it, and a label: its class
// (a classifier's, with its probability) or the detector's name and score.
void DrawDetection(cv::Mat& canvas, const std::string& name, const vision::Detection& d) {
  const cv::Scalar green(0, 200, 0);
  cv::rectangle(canvas, cv::Point2f(d.x_min, d.y_min), cv::Point2f(d.x_max, d.y_max), green, 2);
  const int radius = std::clamp(cvRound(d.width() / 40), 2, 64);
  for (const vision::Point& k : d.keypoints)
    cv::circle(canvas, cv::Point2f(k.x, k.y), radius, {0, 0, 255}, cv::FILLED);
  const int dot = std::clamp(cvRound(d.width() / 100), 1, 16);
  for (const vision::Point& k : d.landmarks)
    cv::circle(canvas, cv::Point2f(k.x, k.y), dot, {255, 255, 0}, cv::FILLED);
  std::string label = absl::StrFormat("%s %.2f", name, d.score);
  if (d.label >= 0) {
    label = absl::StrFormat("%s %.2f",
                            d.label_name.empty() ? absl::StrCat("class ", d.label) : d.label_name,
                            d.label_score);
  } else if (d.class_id >= 0) {
    label = absl::StrFormat(
        "%s %.2f", d.class_name.empty() ? absl::StrCat("class ", d.class_id) : d.class_name,
        d.score);
  }
  DrawLabel(canvas, label, cv::Point(cvRound(d.x_min), cvRound(d.y_min) - 2),
            std::max(14.0, static_cast<double>(d.height()) / 8), green);
}

}  // namespace

void Annotate(const Frame& frame, cv::Mat& canvas) {
  // Recognised texts go beside the boxes they were read from: the frame's text boxes, one per
  // crop, in the same order.
  const std::vector<vision::TextBox>* boxes = nullptr;
  for (const auto& [name, v] : frame.values) {
    if (v.type == ValueType::kTextBoxes) boxes = &v.boxes;
  }
  for (const auto& [name, v] : frame.values) {
    switch (v.type) {
      case ValueType::kDetections:
        // A chain's stages each hold the same faces; what the frame records is what is drawn.
        if (!frame.record.contains(name)) break;
        for (const vision::Detection& d : v.detections) DrawDetection(canvas, name, d);
        break;
      case ValueType::kLines:
        for (const vision::LineSegment& l : v.lines) {
          cv::line(canvas, cv::Point2f(l.x1, l.y1), cv::Point2f(l.x2, l.y2), {255, 128, 0}, 2);
        }
        break;
      case ValueType::kTextBoxes:
        for (const vision::TextBox& b : v.boxes) {
          std::vector<cv::Point> quad;
          for (const cv::Point2f& p : b.quad) quad.push_back(p);
          cv::polylines(canvas, quad, true, {0, 200, 255}, 1);
        }
        break;
      default:
        break;
    }
  }
  // Recognised text, as PaddleOCR draws it: a white panel beside the page with each text written
  // where its box is, sized to fit the box (over the page itself it would hide what it reads).
  for (const auto& [name, v] : frame.values) {
    // Every frame of a text pipeline gets the panel, texts or not: a video's frames keep one size.
    if (v.type != ValueType::kTexts || !boxes || boxes->size() != v.texts.size()) continue;
    cv::Mat panel(canvas.size(), canvas.type(), cv::Scalar(255, 255, 255));
    for (size_t i = 0; i < v.texts.size(); ++i) {
      const vision::TextBox& b = (*boxes)[i];
      const std::string& text = v.texts[i].text;
      if (text.empty()) continue;
      const double width = cv::norm(b.quad[1] - b.quad[0]),
                   height = cv::norm(b.quad[3] - b.quad[0]);
      int baseline = 0;
      const cv::Size unit = cv::getTextSize(text, cv::FONT_HERSHEY_DUPLEX, 1.0, 1, &baseline);
      const double scale = std::max(
          0.3, std::min(height * 0.7 / std::max(1, unit.height), width / std::max(1, unit.width)));
      cv::putText(panel, text, cv::Point(cvRound(b.quad[3].x), cvRound(b.quad[3].y - height * 0.2)),
                  cv::FONT_HERSHEY_DUPLEX, scale, {0, 0, 0}, 1, cv::LINE_AA);
    }
    cv::hconcat(canvas, panel, canvas);
    break;
  }
}

std::string JsonLinesPath(const YAML::Node& sinks, const std::string& output_dir) {
  if (!sinks.IsSequence()) return "";
  for (const YAML::Node& s : sinks) {
    if (s.IsMap() && s["type"] && s["type"].IsScalar() && s["type"].Scalar() == "jsonl") {
      const std::string path =
          s["path"] && s["path"].IsScalar() ? s["path"].Scalar() : "results.jsonl";
      return (fs::path(output_dir) / path).string();
    }
  }
  return "";
}

absl::StatusOr<std::vector<std::unique_ptr<Sink>>> MakeSinks(const YAML::Node& sinks,
                                                             const YamlReader& r,
                                                             const SinkOptions& options) {
  const std::string& output_dir = options.output_dir;
  const bool open = options.open;
  std::vector<std::unique_ptr<Sink>> out;
  LOOM_RETURN_IF_ERROR(r.List(sinks, "'sinks'", /*allow_empty=*/true));
  std::error_code ec;
  if (open) fs::create_directories(output_dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create the output folder '", output_dir, "': ", ec.message()));
  for (const YAML::Node& s : sinks) {
    if (!s.IsMap()) {
      return r.Error(
          s, absl::StrCat("a sink must be a mapping such as {type: jsonl, path: out.jsonl}, got '",
                          s.IsScalar() ? s.Scalar() : "a list", "'"));
    }
    LOOM_ASSIGN_OR_RETURN(std::string type,
                          r.Choice(s, "type", {"annotate", "jsonl", "text", "video"}));
    const YamlReader sr = r.Within(absl::StrCat("sink '", type, "': "));
    auto under = [&](const std::string& relative) {
      return (fs::path(output_dir) / relative).string();
    };
    if (type == "jsonl") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "path"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string path, sr.String(s, "path", "results.jsonl"));
      if (open) out.push_back(std::make_unique<JsonLinesSink>(under(path), options.append));
    } else if (type == "text") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type"}, "the sink"));
      if (open) out.push_back(std::make_unique<TextSink>());
    } else if (type == "annotate") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "dir", "name"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string dir, sr.String(s, "dir", "annotated"));
      LOOM_ASSIGN_OR_RETURN(std::string name, sr.Choice(s, "name", {"frame", "source"}, "frame"));
      if (!open) continue;
      fs::create_directories(under(dir), ec);
      if (ec)
        return absl::InternalError(
            absl::StrCat("cannot create '", under(dir), "': ", ec.message()));
      out.push_back(std::make_unique<AnnotateSink>(under(dir), name == "source"));
    } else {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "path", "fps"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string path, sr.String(s, "path", "annotated.avi"));
      LOOM_ASSIGN_OR_RETURN(double fps, sr.Double(s, "fps", 0, 1000, 0));
      if (open) {
        out.push_back(std::make_unique<VideoSink>(under(path), fps > 0 ? fps : options.source_fps));
      }
    }
  }
  for (size_t i = 0; i < out.size(); ++i) out[i]->index_ = i;
  return out;
}

}  // namespace loom::pipeline
