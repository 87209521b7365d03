// The public Pipeline: a loaded Graph, run over its source (Run) or fed by the caller (Submit).
#include "loom/pipeline.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "loom/engine.h"
#include "pipeline/executor.h"
#include "pipeline/graph.h"

namespace loom {
namespace {

using pipeline::Executor;
using pipeline::Frame;

PipelineRecord ToRecord(const Frame& frame) {
  PipelineRecord r;
  r.frame = frame.index;
  r.source = frame.source;
  r.json = pipeline::RecordOf(frame).dump();
  r.failed = !frame.error.empty();
  r.error = frame.error;
  r.timings = frame.timings;
  return r;
}

// Runs `fn`, turning anything it throws into a status naming `what`.
template <typename Fn>
absl::Status Guard(const char* what, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the ", what, " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("the ", what, " threw"));
  }
}

// A resumed run's starting point: the records of `path` (a jsonl sink's file) that name their
// source and carry no error are kept — the first of each source only — and the file is rewritten
// with just those (an error record, or a line cut short by a crash, is dropped and its image runs
// again). Returns the sources kept. A missing file is a fresh start.
absl::StatusOr<std::set<std::string>> KeepRecorded(const std::string& path) {
  std::set<std::string> done;
  std::ifstream in(path);
  if (!in) return done;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (r.is_discarded() || !r.is_object() || r.contains("error") || !r.contains("source") ||
        !r["source"].is_string() || !done.insert(r["source"].get<std::string>()).second) {
      continue;
    }
    absl::StrAppend(&kept, line, "\n");
  }
  in.close();
  const std::string tmp = path + ".resume";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    if (!out) return absl::InternalError(absl::StrCat("cannot write '", tmp, "'"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot replace '", path, "': ", ec.message()));
  return done;
}

}  // namespace

Pipeline::Pipeline() = default;
Pipeline::~Pipeline() = default;

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Load(const std::string& yaml_path,
                                                         const PipelineOptions& options) {
  auto p = std::unique_ptr<Pipeline>(new Pipeline());
  LOOM_ASSIGN_OR_RETURN(p->graph_, pipeline::LoadGraph(yaml_path, options));
  return p;
}

int Pipeline::in_flight() const { return graph_->in_flight; }
Engine* Pipeline::engine() const { return graph_->inference->engine(); }

namespace {

// One Run's output side: finished frames go to the sinks and callbacks, in order, and into the
// summary and the per-node totals. Used by the reading thread only.
class RunOutput {
 public:
  RunOutput(const pipeline::Graph& g, const RunOptions& options, int64_t total,
            std::vector<std::unique_ptr<pipeline::Sink>> sinks)
      : g_(g), options_(options), total_(total), sinks_(std::move(sinks)) {}

  // Writes a finished frame; an exception from a callback ends the run with an error (a sink's
  // error is kept for the end, and the other sinks go on).
  absl::Status Emit(std::unique_ptr<Frame> frame) {
    const nlohmann::json record = pipeline::RecordOf(*frame);
    for (const auto& [node, t] : frame->timings) {
      NodeTiming& sum = totals_[node];
      sum.compute_ms += t.compute_ms;
      sum.model_wait_ms += t.model_wait_ms;
      sum.core_wait_ms += t.core_wait_ms;
    }
    ++summary_.frames;
    if (!frame->error.empty()) {
      ++summary_.failed;
      if (summary_.errors.size() < 5) {
        summary_.errors.push_back(absl::StrCat(frame->source, ": ", frame->error));
      }
    }
    if (g_.options.on_record || options_.on_record) {
      PipelineRecord r = ToRecord(*frame);
      if (g_.options.on_record) {
        LOOM_RETURN_IF_ERROR(Guard("on_record callback", [&] { g_.options.on_record(r); }));
      }
      if (options_.on_record) {
        LOOM_RETURN_IF_ERROR(Guard("on_record callback", [&] { options_.on_record(r); }));
      }
    }
    for (auto& sink : sinks_) {
      absl::Status s;
      if (absl::Status thrown = Guard("sink", [&] { s = sink->Write(*frame, record); });
          !thrown.ok()) {
        s = thrown;
      }
      if (sink_status_.ok() && !s.ok()) sink_status_ = s;
    }
    if (options_.progress) {
      LOOM_RETURN_IF_ERROR(
          Guard("progress callback", [&] { options_.progress(summary_.frames, total_); }));
    }
    return absl::OkStatus();
  }

  // Closes the sinks; the first sink error of the run, if any.
  absl::Status Close() {
    for (auto& sink : sinks_) {
      absl::Status s = sink->Close();
      if (sink_status_.ok() && !s.ok()) sink_status_ = s;
    }
    return sink_status_;
  }

  // The summary, with the per-node means over the frames.
  PipelineSummary Summary() {
    const double n = static_cast<double>(std::max<int64_t>(summary_.frames, 1));
    for (const auto& [node, t] : totals_) {
      summary_.node_mean[node] = {t.compute_ms / n, t.model_wait_ms / n, t.core_wait_ms / n};
    }
    return summary_;
  }

 private:
  const pipeline::Graph& g_;
  const RunOptions& options_;
  const int64_t total_;
  std::vector<std::unique_ptr<pipeline::Sink>> sinks_;
  PipelineSummary summary_;
  std::map<std::string, NodeTiming> totals_;
  absl::Status sink_status_;
};

// Reads every frame of `source` (on a leased core: Loom's own work too) into the executor,
// emitting the finished ones as they come, then the rest once the source is done.
absl::Status Pump(pipeline::Graph& g, pipeline::FrameSource& source, Executor& executor,
                  RunOutput& output) {
  absl::Status status;
  while (status.ok()) {
    auto frame = std::make_unique<Frame>();
    bool more = false;
    {
      // A video's frames decode here, in order; image files decode on the pipeline threads, in
      // parallel.
      auto lease = g.inference->Lease();
      if (!lease.ok()) return lease.status();
      status = Guard("source", [&] { more = source.Next(*frame); });
    }
    if (!status.ok() || !more) break;
    executor.Push(std::move(frame));
    while (status.ok()) {
      std::unique_ptr<Frame> done = executor.Pop(false);
      if (!done) break;
      status = output.Emit(std::move(done));
    }
  }
  if (!status.ok()) return status;
  executor.Finish();
  while (status.ok()) {
    std::unique_ptr<Frame> done = executor.Pop(true);
    if (!done) break;
    status = output.Emit(std::move(done));
  }
  return status;
}

}  // namespace

absl::StatusOr<PipelineSummary> Pipeline::Run(const RunOptions& options) {
  pipeline::Graph& g = *graph_;
  pipeline::SourceSpec spec = g.source;
  if (!options.input.empty()) spec.path = options.input;
  if (!options.files.empty()) spec.files = options.files;
  if (options.limit) spec.limit = *options.limit;
  if (spec.limit < 0) return absl::InvalidArgumentError("limit must be >= 0");
  if (g.options.resume) {
    const std::string records = pipeline::JsonLinesPath(g.sinks, g.options.output_dir);
    if (records.empty() || !g.options.sinks) {
      return absl::FailedPreconditionError(absl::StrCat(
          "resuming needs the records of a jsonl sink, and pipeline '", g.file, "' writes none"));
    }
    LOOM_ASSIGN_OR_RETURN(spec.skip, KeepRecorded(records));
  }
  LOOM_ASSIGN_OR_RETURN(auto source, pipeline::FrameSource::Open(spec));
  std::vector<std::unique_ptr<pipeline::Sink>> sinks;
  if (g.sinks.IsSequence()) {
    LOOM_ASSIGN_OR_RETURN(sinks, pipeline::MakeSinks(g.sinks, YamlReader(g.file),
                                                     {.output_dir = g.options.output_dir,
                                                      .append = g.options.resume,
                                                      .source_fps = source->fps()}));
  }
  std::vector<pipeline::Sink*> sink_views;  // for the pipeline threads' Prepare
  for (auto& sink : sinks) sink_views.push_back(sink.get());
  RunOutput output(g, options, source->total().value_or(-1), std::move(sinks));
  const auto start = Clock::now();
  const double reader_cpu0 = ThreadCpuSeconds();
  auto executor = std::make_unique<Executor>(g, g.in_flight, sink_views);
  const absl::Status status = Pump(g, *source, *executor, output);
  const double pipeline_cpu_s = executor->Join();  // the frames' threads, joined
  const double reader_cpu_s = ThreadCpuSeconds() - reader_cpu0;
  const absl::Status sink_status = output.Close();
  LOOM_RETURN_IF_ERROR(status);
  LOOM_RETURN_IF_ERROR(sink_status);
  PipelineSummary summary = output.Summary();
  summary.skipped = source->skipped();
  summary.pipeline_cpu_s = pipeline_cpu_s;
  summary.reader_cpu_s = reader_cpu_s;
  summary.source_error = source->error();
  summary.usable_cores = static_cast<int>(UsableCpus().size());
  summary.wall_s = MillisecondsSince(start) / 1000.0;
  return summary;
}

absl::StatusOr<int64_t> Pipeline::Submit(const ImageView& view, const std::string& source_name) {
  if (!view.data || view.width < 1 || view.height < 1 || view.width > 65536 ||
      view.height > 65536 || (view.channels != 1 && view.channels != 3 && view.channels != 4)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a frame must be 8-bit pixels, 1 to 65536 a side, with 1, 3 or 4 channels; got %dx%dx%d%s",
        view.width, view.height, view.channels, view.data ? "" : " without data"));
  }
  const size_t row = static_cast<size_t>(view.width) * static_cast<size_t>(view.channels);
  const size_t stride = view.stride == 0 ? row : view.stride;
  if (stride < row)
    return absl::InvalidArgumentError(
        absl::StrCat("frame stride ", stride, " is less than a row (", row, " bytes)"));
  const cv::Mat wrapped(view.height, view.width, CV_8UC(view.channels),
                        const_cast<uint8_t*>(view.data), stride);
  cv::Mat bgr;
  switch (view.channels) {
    case 1:
      cv::cvtColor(wrapped, bgr, cv::COLOR_GRAY2BGR);
      break;
    case 4:
      cv::cvtColor(wrapped, bgr, cv::COLOR_BGRA2BGR);
      break;
    default:
      bgr = wrapped.clone();
  }
  std::lock_guard<std::mutex> submit(submit_mu_);
  Executor* stream = Stream();
  auto frame = std::make_unique<Frame>();
  frame->index = next_index_++;
  frame->source = source_name.empty() ? absl::StrCat("frame#", frame->index) : source_name;
  pipeline::Value image;
  image.type = pipeline::ValueType::kImage;
  image.image = std::move(bgr);
  frame->values["image"] = std::move(image);
  const int64_t index = frame->index;
  if (!stream->Push(std::move(frame)))
    return absl::FailedPreconditionError("the pipeline was finished: no more frames");
  return index;
}

absl::StatusOr<int64_t> Pipeline::SubmitEncoded(const std::string& bytes,
                                                const std::string& source_name) {
  cv::Mat image;
  {
    auto lease = graph_->inference->Lease();
    LOOM_RETURN_IF_ERROR(lease.status());
    try {
      const cv::Mat buffer(1, static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)), CV_8U,
                           const_cast<char*>(bytes.data()));
      if (!bytes.empty()) image = cv::imdecode(buffer, cv::IMREAD_COLOR);
    } catch (const cv::Exception&) {
      image.release();
    }
  }
  if (image.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", bytes.size(), "-byte image", source_name.empty() ? "" : " '" + source_name + "'",
        " cannot be decoded (not an image OpenCV reads, or corrupt)"));
  }
  return Submit(ImageView{image.cols, image.rows, 3, image.data, image.step}, source_name);
}

Executor* Pipeline::Stream() {
  std::lock_guard<std::mutex> lock(stream_mu_);
  if (!stream_) stream_ = std::make_unique<Executor>(*graph_, graph_->in_flight);
  return stream_.get();
}

std::optional<PipelineRecord> Pipeline::Next(bool wait) {
  std::unique_ptr<Frame> frame = Stream()->Pop(wait);
  if (!frame) return std::nullopt;
  return ToRecord(*frame);
}

void Pipeline::Finish() { Stream()->Finish(); }

absl::StatusOr<std::vector<std::string>> Pipeline::ImageFiles(const RunOptions& options) const {
  pipeline::SourceSpec spec = graph_->source;
  if (!options.input.empty()) spec.path = options.input;
  if (!options.files.empty()) spec.files = options.files;
  if (options.limit) spec.limit = *options.limit;
  LOOM_ASSIGN_OR_RETURN(auto source, pipeline::FrameSource::Open(spec));
  std::vector<std::string> files = source->files();
  std::vector<std::string> out;
  for (size_t i = 0;
       i < files.size() && (spec.limit <= 0 || static_cast<int64_t>(out.size()) < spec.limit);
       i += static_cast<size_t>(spec.stride)) {
    out.push_back(files[i]);
  }
  return out;
}

std::string Pipeline::DescribePlan() const {
  std::string out;
  if (Engine* e = engine()) out = e->DescribePlan();
  absl::StrAppend(&out, absl::StrFormat("  pipeline: %d frames in flight on %d pipeline threads "
                                        "and the reading thread; their CPU "
                                        "work (decoding, pre/post-processing) runs on cores leased "
                                        "from the plan, never beside the "
                                        "workers; a frame waiting for a model holds no core\n",
                                        graph_->in_flight, graph_->in_flight));
  for (const pipeline::RowBatching& b : graph_->inference->RowBatchings()) {
    absl::StrAppend(&out, "  rows of ", b.model, " at ", ShapeToString(b.row_shape), ": ");
    if (b.probe_rows > 0) {
      absl::StrAppend(
          &out, absl::StrFormat("%.2f ms/row alone, %.2f in a batch of %d", b.ms_per_row_alone,
                                b.ms_per_row_batched, b.probe_rows));
    }
    absl::StrAppend(&out, b.note.empty() ? "" : absl::StrCat(b.probe_rows > 0 ? "; " : "", b.note),
                    b.rows_per_request > 1
                        ? absl::StrCat(" -> ", b.rows_per_request, " per request\n")
                        : " -> one per request\n");
  }
  return out;
}

std::string PipelineTraceJson(const std::string& engine_trace,
                              const std::vector<PipelineRecord>& records) {
  nlohmann::json trace = engine_trace.empty()
                             ? nlohmann::json{{"traceEvents", nlohmann::json::array()}}
                             : nlohmann::json::parse(engine_trace, nullptr, false);
  if (trace.is_discarded() || !trace.contains("traceEvents"))
    trace = {{"traceEvents", nlohmann::json::array()}};
  nlohmann::json& events = trace["traceEvents"];
  events.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", 2}, {"args", {{"name", "loom pipeline"}}}});
  std::set<int> threads;
  for (const PipelineRecord& r : records) {
    for (const auto& [node, t] : r.timings) {
      if (t.thread < 0) continue;
      threads.insert(t.thread);
      const double ts =
          std::chrono::duration<double, std::micro>(t.start.time_since_epoch()).count();
      events.push_back({{"name", node},
                        {"cat", "node"},
                        {"ph", "X"},
                        {"pid", 2},
                        {"tid", t.thread},
                        {"ts", ts},
                        {"dur", t.total_ms() * 1000.0},
                        {"args",
                         {{"frame", r.frame},
                          {"source", r.source},
                          {"compute_ms", t.compute_ms},
                          {"model_wait_ms", t.model_wait_ms},
                          {"core_wait_ms", t.core_wait_ms}}}});
    }
  }
  for (int t : threads) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 2},
                      {"tid", t},
                      {"args", {{"name", absl::StrCat("pipeline thread ", t)}}}});
  }
  trace["displayTimeUnit"] = "ms";
  // Source and node names come from outside: bytes that are not UTF-8 are replaced, not thrown on.
  return trace.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace loom
