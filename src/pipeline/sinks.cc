#include "pipeline/sinks.h"

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
  explicit JsonLinesSink(std::string path) : path_(std::move(path)), out_(path_) {}
  absl::Status Write(const Frame&, const nlohmann::json& record) override {
    out_ << record.dump() << "\n";
    return out_ ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write '", path_, "'"));
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

class AnnotateSink final : public Sink {
 public:
  explicit AnnotateSink(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.values.find("image");
    if (it == frame.values.end() || it->second.image.empty()) return absl::OkStatus();
    cv::Mat canvas = it->second.image.clone();
    Annotate(frame, canvas);
    const std::string path = absl::StrFormat("%s/frame_%06d.jpg", dir_, frame.index);
    return cv::imwrite(path, canvas) ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  }

 private:
  std::string dir_;
};

class VideoSink final : public Sink {
 public:
  VideoSink(std::string path, double fps) : path_(std::move(path)), fps_(fps > 0 ? fps : 25) {}
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.values.find("image");
    if (it == frame.values.end() || it->second.image.empty()) return absl::OkStatus();
    cv::Mat canvas = it->second.image.clone();
    Annotate(frame, canvas);
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

void Annotate(const Frame& frame, cv::Mat& canvas) {
  for (const auto& [name, v] : frame.values) {
    switch (v.type) {
      case ValueType::kDetections:
        for (const vision::Detection& d : v.detections) {
          cv::rectangle(canvas, cv::Point2f(d.x_min, d.y_min), cv::Point2f(d.x_max, d.y_max), {0, 255, 0}, 2);
          for (const vision::Point& p : d.keypoints) cv::circle(canvas, cv::Point2f(p.x, p.y), 2, {0, 0, 255}, -1);
        }
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
}

absl::StatusOr<std::vector<std::unique_ptr<Sink>>> MakeSinks(const YAML::Node& sinks,
                                                             const YamlReader& r,
                                                             const std::string& output_dir,
                                                             bool open) {
  std::vector<std::unique_ptr<Sink>> out;
  LOOM_RETURN_IF_ERROR(r.List(sinks, "'sinks'", /*allow_empty=*/true));
  std::error_code ec;
  if (open) fs::create_directories(output_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create the output folder '", output_dir, "': ", ec.message()));
  for (const YAML::Node& s : sinks) {
    if (!s.IsMap()) {
      return r.Error(s, absl::StrCat("a sink must be a mapping such as {type: jsonl, path: out.jsonl}, got '",
                                     s.IsScalar() ? s.Scalar() : "a list", "'"));
    }
    LOOM_ASSIGN_OR_RETURN(std::string type, r.Choice(s, "type", {"annotate", "jsonl", "text", "video"}));
    const YamlReader sr = r.Within(absl::StrCat("sink '", type, "': "));
    auto under = [&](const std::string& relative) { return (fs::path(output_dir) / relative).string(); };
    if (type == "jsonl") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "path"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string path, sr.String(s, "path", "results.jsonl"));
      if (open) out.push_back(std::make_unique<JsonLinesSink>(under(path)));
    } else if (type == "text") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type"}, "the sink"));
      if (open) out.push_back(std::make_unique<TextSink>());
    } else if (type == "annotate") {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "dir"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string dir, sr.String(s, "dir", "annotated"));
      if (!open) continue;
      fs::create_directories(under(dir), ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot create '", under(dir), "': ", ec.message()));
      out.push_back(std::make_unique<AnnotateSink>(under(dir)));
    } else {
      LOOM_RETURN_IF_ERROR(sr.Keys(s, {"type", "path", "fps"}, "the sink"));
      LOOM_ASSIGN_OR_RETURN(std::string path, sr.String(s, "path", "annotated.avi"));
      LOOM_ASSIGN_OR_RETURN(double fps, sr.Double(s, "fps", 0, 1000, 0));
      if (open) out.push_back(std::make_unique<VideoSink>(under(path), fps));
    }
  }
  return out;
}

}  // namespace loom::pipeline
