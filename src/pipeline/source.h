// Where frames come from: an image file, a directory or glob of images (sorted by name), or a
// video (OpenCV VideoCapture), with a stride (every n-th frame) and a limit.
#ifndef LOOM_PIPELINE_SOURCE_H_
#define LOOM_PIPELINE_SOURCE_H_

#include <memory>
#include <opencv2/videoio.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "pipeline/value.h"

namespace loom::pipeline {

struct SourceSpec {
  std::string path;
  int stride = 1;
  int64_t limit = 0;  // 0: all
  // Image files to leave out (a resumed run: those already recorded), by the name records give.
  std::set<std::string> skip;
  // Image files to read, in this order, instead of `path`.
  std::vector<std::string> files;
};

class FrameSource {
 public:
  // Lists the images or opens the video (and reads its first frame). NOT_FOUND / INVALID_ARGUMENT
  // naming the path when it is missing, matches nothing, is a video OpenCV cannot open, or a
  // video with no frame.
  static absl::StatusOr<std::unique_ptr<FrameSource>> Open(const SourceSpec& spec);

  // The next frame: index, source name and the decoded "image" value — or, for an image file,
  // its path in `frame.decode_path`, decoded later by the pipeline thread that takes the frame.
  // A video frame that cannot be decoded ends the video (see error()). False at the end.
  bool Next(Frame& frame);
  // Image files left out because SourceSpec::skip names them.
  int64_t skipped() const { return skipped_; }
  // The image files to read (empty for a video), in order.
  const std::vector<std::string>& files() const { return files_; }
  std::optional<int64_t> total() const { return total_; }  // frames to come, when known
  double fps() const { return fps_; }                      // the video's, else 0
  // Set when a video ended before the frame count its container declares (a frame failed to
  // decode): the run reports it rather than ending silently.
  const std::string& error() const { return error_; }

 private:
  SourceSpec spec_;
  std::vector<std::string> files_;  // image mode
  std::unique_ptr<cv::VideoCapture> video_;
  std::string video_name_;
  size_t next_file_ = 0;
  int64_t produced_ = 0, video_frame_ = 0, skipped_ = 0;
  std::optional<int64_t> total_;
  int64_t declared_frames_ = 0;  // the container's frame count (0: unknown)
  cv::Mat first_;                // the first frame, read at Open
  double fps_ = 0;
  std::string error_;
};

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_SOURCE_H_
