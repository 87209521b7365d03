#include "pipeline/source.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <opencv2/core/utils/logger.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace loom::pipeline {
namespace {

namespace fs = std::filesystem;

bool HasExtension(const std::string& path, std::initializer_list<const char*> extensions) {
  const std::string ext = absl::AsciiStrToLower(fs::path(path).extension().string());
  for (const char* e : extensions) {
    if (ext == e) return true;
  }
  return false;
}

bool IsVideo(const std::string& path) {
  return HasExtension(path, {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg"});
}
bool IsImage(const std::string& path) {
  return HasExtension(path,
                      {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"});
}

}  // namespace

absl::StatusOr<std::unique_ptr<FrameSource>> FrameSource::Open(const SourceSpec& spec) {
  if (spec.stride < 1) return absl::InvalidArgumentError("source stride must be >= 1");
  auto source = std::unique_ptr<FrameSource>(new FrameSource());
  source->spec_ = spec;
  std::error_code ec;
  const bool pattern = spec.path.find_first_of("*?[") != std::string::npos;
  if (!spec.files.empty()) {
    source->files_ = spec.files;  // the caller's order: not sorted below
  } else if (pattern) {
    glob_t g{};
    if (glob(spec.path.c_str(), 0, nullptr, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) {
        if (IsImage(g.gl_pathv[i])) source->files_.push_back(g.gl_pathv[i]);
      }
    }
    globfree(&g);
    if (source->files_.empty())
      return absl::NotFoundError(absl::StrCat("source '", spec.path, "' matches no image"));
  } else if (!fs::exists(spec.path, ec)) {
    return absl::NotFoundError(absl::StrCat("source '", spec.path, "' does not exist"));
  } else if (fs::is_directory(spec.path, ec)) {
    for (const auto& entry : fs::directory_iterator(spec.path)) {
      if (entry.is_regular_file() && IsImage(entry.path().string()))
        source->files_.push_back(entry.path().string());
    }
    if (source->files_.empty())
      return absl::NotFoundError(absl::StrCat("source folder '", spec.path, "' has no image"));
  } else if (IsVideo(spec.path)) {
    // OpenCV's backends log their own failures to stderr; the status below says it once.
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    // A file is read by FFmpeg (or OpenCV's own MJPEG reader), never by probing camera backends
    // (gphoto2 autodetection scans USB, slowly, and leaks).
    source->video_ = std::make_unique<cv::VideoCapture>(spec.path, cv::CAP_FFMPEG);
    if (!source->video_->isOpened())
      source->video_ = std::make_unique<cv::VideoCapture>(spec.path, cv::CAP_OPENCV_MJPEG);
    if (!source->video_->isOpened()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "video '", spec.path, "' cannot be opened (not a video OpenCV reads, or corrupt)"));
    }
    source->video_name_ = fs::path(spec.path).filename().string();
    source->fps_ = source->video_->get(cv::CAP_PROP_FPS);
    const double count = source->video_->get(cv::CAP_PROP_FRAME_COUNT);
    if (count > 0 && count < 1e12) {
      source->declared_frames_ = static_cast<int64_t>(count);
      source->total_ = (source->declared_frames_ + spec.stride - 1) / spec.stride;
    }
    bool read = false;
    try {
      read = source->video_->read(source->first_);
    } catch (const cv::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("video '", spec.path, "' cannot be decoded: ", e.err));
    }
    if (!read || source->first_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("video '", spec.path, "' has no frame OpenCV can decode"));
    }
  } else {
    source->files_.push_back(spec.path);
  }
  if (spec.files.empty()) std::sort(source->files_.begin(), source->files_.end());
  if (!spec.skip.empty() && !source->video_) {
    const size_t before = source->files_.size();
    std::erase_if(source->files_, [&](const std::string& f) { return spec.skip.count(f) > 0; });
    source->skipped_ = static_cast<int64_t>(before - source->files_.size());
  }
  if (!source->video_)
    source->total_ = (static_cast<int64_t>(source->files_.size()) + spec.stride - 1) / spec.stride;
  if (spec.limit > 0 && source->total_) source->total_ = std::min(*source->total_, spec.limit);
  if (spec.limit > 0 && !source->total_) source->total_ = spec.limit;
  return source;
}

bool FrameSource::Next(Frame& frame) {
  if (spec_.limit > 0 && produced_ >= spec_.limit) return false;
  Value image;
  image.type = ValueType::kImage;
  if (video_) {
    cv::Mat m;
    while (true) {
      if (video_frame_ == 0 && !first_.empty()) {
        m = std::move(first_);
        first_.release();
      } else if (!video_->read(m) || m.empty()) {
        // A video ends when read fails; before its declared frame count that is a decode failure.
        if (declared_frames_ > 0 && video_frame_ < declared_frames_ - 1) {
          error_ = absl::StrCat("video '", spec_.path, "' ended after ", video_frame_, " of its ",
                                declared_frames_, " frames: a frame could not be decoded");
        }
        return false;
      }
      const bool keep = video_frame_ % spec_.stride == 0;
      ++video_frame_;
      if (keep) break;
    }
    frame.source = absl::StrCat(video_name_, "#", video_frame_ - 1);
    image.image = m;
  } else {
    if (next_file_ >= files_.size()) return false;
    const std::string path = files_[next_file_];
    next_file_ += static_cast<size_t>(spec_.stride);
    frame.source = path;
    frame.decode_path = path;
  }
  frame.index = produced_++;
  frame.values["image"] = std::move(image);
  return true;
}

}  // namespace loom::pipeline
