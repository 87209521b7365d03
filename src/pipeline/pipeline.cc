#include "pipeline/pipeline.h"

#include <sys/resource.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "engine/config.h"
#include "pipeline/services.h"

namespace loom::pipeline {
namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------------
// Sinks: run on the thread that emits frames in order, one frame at a time.
class Pipeline::Sink {
 public:
  virtual ~Sink() = default;
  virtual absl::Status Write(const Frame& frame, const nlohmann::json& record) = 0;
  virtual absl::Status Close() { return absl::OkStatus(); }
};

namespace {

class JsonLinesSink final : public Pipeline::Sink {
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
class TextSink final : public Pipeline::Sink {
 public:
  absl::Status Write(const Frame& frame, const nlohmann::json& record) override {
    std::cout << "== " << frame.source << "\n";
    if (record.contains("error")) std::cout << "error: " << record["error"].get<std::string>() << "\n";
    for (const auto& [key, value] : record.items()) {
      if (!value.is_array()) continue;
      for (const auto& item : value) {
        if (item.is_object() && item.contains("text")) std::cout << item["text"].get<std::string>() << "\n";
      }
    }
    std::cout << std::flush;
    return absl::OkStatus();
  }
};

void Draw(const Frame& frame, cv::Mat& canvas) {
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

class AnnotateSink final : public Pipeline::Sink {
 public:
  explicit AnnotateSink(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.values.find("image");
    if (it == frame.values.end() || it->second.image.empty()) return absl::OkStatus();
    cv::Mat canvas = it->second.image.clone();
    Draw(frame, canvas);
    const std::string path = absl::StrFormat("%s/frame_%06d.jpg", dir_, frame.index);
    return cv::imwrite(path, canvas) ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  }

 private:
  std::string dir_;
};

class VideoSink final : public Pipeline::Sink {
 public:
  VideoSink(std::string path, double fps) : path_(std::move(path)), fps_(fps > 0 ? fps : 25) {}
  absl::Status Write(const Frame& frame, const nlohmann::json&) override {
    auto it = frame.values.find("image");
    if (it == frame.values.end() || it->second.image.empty()) return absl::OkStatus();
    cv::Mat canvas = it->second.image.clone();
    Draw(frame, canvas);
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

// CPU seconds of the calling thread so far.
double ThreadCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

absl::Status YamlError(const std::string& file, const YAML::Node& at, const std::string& message) {
  return loom::YamlError(file, at.Mark(), message);
}

}  // namespace

Pipeline::~Pipeline() = default;

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Load(const std::string& yaml_path,
                                                         const PipelineOptions& options) {
  LOOM_ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(yaml_path, "pipeline"));
  auto p = std::unique_ptr<Pipeline>(new Pipeline());
  p->file_ = yaml_path;
  p->options_ = options;
  const std::string base = fs::path(yaml_path).parent_path().string();
  LOOM_ASSIGN_OR_RETURN(EngineConfig config, ParseEngineConfig(root, yaml_path, {"source", "in_flight", "nodes", "sinks"}));
  for (ModelConfig& m : config.models) {
    if (!m.max_batch_size) m.max_batch_size = 1;  // see the class comment: determinism
  }
  if (options.cores > 0) config.options.cores = options.cores;

  // Source.
  const YAML::Node source = root["source"];
  if (source && !source.IsMap()) return YamlError(yaml_path, source, "'source' must be a mapping");
  if (source) {
    for (const auto& kv : source) {
      const std::string key = kv.first.as<std::string>();
      if (key != "path" && key != "stride" && key != "limit") {
        return YamlError(yaml_path, kv.first, "unknown key '" + key + "' in source (known: limit, path, stride)");
      }
    }
    try {
      if (source["path"]) p->source_.path = source["path"].as<std::string>();
      if (source["stride"]) p->source_.stride = source["stride"].as<int>();
      if (source["limit"]) p->source_.limit = source["limit"].as<int64_t>();
    } catch (const YAML::Exception& e) {
      return YamlError(yaml_path, source, std::string("bad source: ") + e.what());
    }
    if (!p->source_.path.empty() && p->source_.path[0] != '/') p->source_.path = (fs::path(base) / p->source_.path).lexically_normal().string();
  }
  if (!options.input.empty()) p->source_.path = options.input;
  if (options.limit) p->source_.limit = *options.limit;
  if (p->source_.path.empty()) return YamlError(yaml_path, root, "no source: give 'source: {path: ...}' or --input");
  if (root["in_flight"]) {
    try {
      p->in_flight_ = root["in_flight"].as<int>();
    } catch (const YAML::Exception&) {
      return YamlError(yaml_path, root["in_flight"], "'in_flight' must be an integer");
    }
  }
  if (options.in_flight) p->in_flight_ = *options.in_flight;
  if (p->in_flight_ < 1) return absl::InvalidArgumentError("in_flight must be >= 1");

  // Nodes, in order: each may use the frame ("image") and the nodes before it. They are checked
  // against the models' metadata before any model loads.
  LOOM_ASSIGN_OR_RETURN(auto metadata, MakeModelInfoService(config.models));
  BuildContext context(yaml_path, base, metadata.get());
  context.Declare("image", {ValueType::kImage, std::nullopt, "image"});
  const YAML::Node nodes = root["nodes"];
  if (!nodes || !nodes.IsSequence() || nodes.size() == 0) {
    return YamlError(yaml_path, nodes ? nodes : root, "'nodes' must be a non-empty list");
  }
  for (const YAML::Node& n : nodes) {
    if (!n.IsMap() || !n["name"] || !n["type"]) return YamlError(yaml_path, n, "a node needs 'name' and 'type'");
    const std::string name = n["name"].as<std::string>(), type = n["type"].as<std::string>();
    if (context.Has(name)) return YamlError(yaml_path, n["name"], "node name '" + name + "' is used twice (or is 'image')");
    const NodeFactory* factory = FindNodeType(type);
    if (!factory) {
      return YamlError(yaml_path, n["type"], absl::StrCat("node '", name, "': unknown node type '", type,
                                                          "' (known: ", absl::StrJoin(NodeTypeNames(), ", "), ")"));
    }
    LOOM_ASSIGN_OR_RETURN(auto node, (*factory)(name, n, context));
    p->nodes_.push_back(std::move(node));
  }

  // Models, warmed up (and, by the engine, measured) on the shapes the graph sends them.
  for (ModelConfig& m : config.models) {
    auto it = context.warmups().find(m.name);
    if (it != context.warmups().end() && m.warmup_inputs.empty()) m.warmup_inputs = it->second;
  }
  switch (options.backend) {
    case Backend::kEngine: {
      LOOM_ASSIGN_OR_RETURN(auto engine, Engine::Create(config.models, config.options));
      p->inference_ = MakeEngineService(std::move(engine));
      break;
    }
    case Backend::kSequential:
    case Backend::kThreadPerModel: {
      LOOM_ASSIGN_OR_RETURN(p->inference_, MakeNaiveService(config.models, options.backend == Backend::kSequential
                                                                               ? NaiveMode::kInline
                                                                               : NaiveMode::kThreadPerModel));
      break;
    }
  }

  // Sinks.
  if (options.sinks && root["sinks"]) {
    if (!root["sinks"].IsSequence()) return YamlError(yaml_path, root["sinks"], "'sinks' must be a list");
    fs::create_directories(options.output_dir);
    for (const YAML::Node& s : root["sinks"]) {
      const std::string type = s["type"] ? s["type"].as<std::string>() : "";
      auto out = [&](const char* key, const char* fallback) {
        return (fs::path(options.output_dir) / (s[key] ? s[key].as<std::string>() : fallback)).string();
      };
      if (type == "jsonl") {
        p->sinks_.push_back(std::make_unique<JsonLinesSink>(out("path", "results.jsonl")));
      } else if (type == "text") {
        p->sinks_.push_back(std::make_unique<TextSink>());
      } else if (type == "annotate") {
        const std::string dir = out("dir", "annotated");
        fs::create_directories(dir);
        p->sinks_.push_back(std::make_unique<AnnotateSink>(dir));
      } else if (type == "video") {
        p->sinks_.push_back(std::make_unique<VideoSink>(out("path", "annotated.avi"), s["fps"] ? s["fps"].as<double>() : 0));
      } else {
        return YamlError(yaml_path, s, "unknown sink type '" + type + "' (known: annotate, jsonl, text, video)");
      }
    }
  }
  return p;
}

void Pipeline::ProcessFrame(Frame& frame) const {
  for (const auto& node : nodes_) {
    const auto start = Clock::now();
    absl::Status status = node->Process(frame, *inference_);
    frame.timings_ms[node->name()] = MillisecondsSince(start);
    if (!status.ok()) {
      frame.record["error"] = absl::StrCat("node '", node->name(), "': ", status.message());
      return;
    }
  }
}

absl::StatusOr<RunSummary> Pipeline::Run(const std::function<void(int64_t, int64_t)>& progress) {
  LOOM_ASSIGN_OR_RETURN(auto source, FrameSource::Open(source_));
  RunSummary summary;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Frame>> todo;                 // decoded, waiting for a thread
  std::map<int64_t, std::unique_ptr<Frame>> done;          // finished, waiting for their turn
  int64_t in_flight = 0;
  bool finished_reading = false;
  std::vector<std::thread> threads;
  double pipeline_cpu_s = 0;  // requires mu
  for (int t = 0; t < in_flight_; ++t) {
    threads.emplace_back([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (true) {
        cv.wait(lock, [&] { return !todo.empty() || finished_reading; });
        if (todo.empty()) {
          pipeline_cpu_s += ThreadCpuSeconds();
          return;
        }
        std::unique_ptr<Frame> frame = std::move(todo.front());
        todo.pop_front();
        lock.unlock();
        if (!frame->record.contains("error")) ProcessFrame(*frame);
        lock.lock();
        done[frame->index] = std::move(frame);
        cv.notify_all();
      }
    });
  }

  std::map<std::string, double> node_total_ms;
  absl::Status sink_status;
  int64_t next = 0;
  const int64_t total = source->total().value_or(-1);
  const auto start = Clock::now();
  const double reader_cpu0 = ThreadCpuSeconds();
  // Emits finished frames in order. Requires `lock`; releases it around the sinks.
  auto emit = [&](std::unique_lock<std::mutex>& lock) {
    while (true) {
      auto it = done.find(next);
      if (it == done.end()) return;
      std::unique_ptr<Frame> frame = std::move(it->second);
      done.erase(it);
      --in_flight;
      ++next;
      cv.notify_all();
      lock.unlock();
      nlohmann::json record = {{"frame", frame->index}, {"source", frame->source}};
      record.update(frame->record);
      nlohmann::json timings = nlohmann::json::object();
      for (const auto& [node, ms] : frame->timings_ms) {
        timings[node] = std::round(ms * 100) / 100;
        node_total_ms[node] += ms;
      }
      record["timings_ms"] = timings;
      ++summary.frames;
      if (record.contains("error")) {
        ++summary.failed;
        if (summary.errors.size() < 5) summary.errors.push_back(absl::StrCat(frame->source, ": ", record["error"].get<std::string>()));
      }
      if (options_.on_record) options_.on_record(record);
      for (auto& sink : sinks_) {
        absl::Status s = sink->Write(*frame, record);
        if (sink_status.ok() && !s.ok()) sink_status = s;
      }
      if (progress) progress(summary.frames, total);
      lock.lock();
    }
  };

  {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return in_flight < in_flight_ || done.count(next); });
      emit(lock);
      if (in_flight >= in_flight_) continue;
      lock.unlock();
      auto frame = std::make_unique<Frame>();
      absl::Status decode_error;
      const bool more = source->Next(*frame, decode_error);  // decoding happens here, one frame ahead
      if (more && !decode_error.ok()) frame->record["error"] = std::string(decode_error.message());
      lock.lock();
      if (!more) break;
      ++in_flight;
      todo.push_back(std::move(frame));
      cv.notify_all();
    }
    finished_reading = true;
    cv.notify_all();
    while (in_flight > 0) {
      cv.wait(lock, [&] { return done.count(next) > 0; });
      emit(lock);
    }
  }
  summary.reader_cpu_s = ThreadCpuSeconds() - reader_cpu0;
  for (std::thread& t : threads) t.join();
  summary.pipeline_cpu_s = pipeline_cpu_s;
  summary.usable_cores = static_cast<int>(UsableCpus().size());
  for (auto& sink : sinks_) {
    absl::Status s = sink->Close();
    if (sink_status.ok() && !s.ok()) sink_status = s;
  }
  LOOM_RETURN_IF_ERROR(sink_status);
  summary.wall_s = MillisecondsSince(start) / 1000.0;
  for (const auto& [node, ms] : node_total_ms) summary.node_mean_ms[node] = ms / std::max<int64_t>(summary.frames, 1);
  return summary;
}

std::string Pipeline::DescribePlan() const {
  std::string out;
  if (Engine* engine = EngineOf(*inference_)) out = engine->DescribePlan();
  absl::StrAppend(&out, absl::StrFormat(
      "  pipeline: %d frames in flight, %d pipeline threads (pre/post-processing; they wait on the "
      "workers while models run) and the reading thread (decoding), on the same usable cores\n",
      in_flight_, in_flight_));
  return out;
}

}  // namespace loom::pipeline
