// _loom._Pipeline: pipelines for Python — run over a source (records stream back in frame order
// while the pipeline runs, the GIL released while waiting), frames from the caller's own loop
// (submit / next), and the pipeline benchmark.
#include "loom/pipeline.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "bench/pipeline_bench.h"
#include "errors.h"

namespace loom::python {
namespace {

py::tuple RecordTuple(const PipelineRecord& r) {
  py::dict timings;
  for (const auto& [node, t] : r.timings) {
    timings[py::str(node)] =
        py::dict(py::arg("compute_ms") = t.compute_ms, py::arg("model_wait_ms") = t.model_wait_ms,
                 py::arg("core_wait_ms") = t.core_wait_ms);
  }
  return py::make_tuple(r.json, timings);
}

// A run in a background thread whose records come out through a bounded queue.
class RecordStream {
 public:
  RecordStream(Pipeline& pipeline, RunOptions options, size_t capacity) : capacity_(capacity) {
    options.on_record = [this](const PipelineRecord& r) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return records_.size() < capacity_ || closed_; });
      if (closed_) throw std::runtime_error("the record stream was closed");  // ends the run
      records_.push_back(r);
      cv_.notify_all();
    };
    thread_ = std::thread([this, &pipeline, options] {
      absl::StatusOr<PipelineSummary> summary = pipeline.Run(options);
      std::lock_guard<std::mutex> lock(mu_);
      status_ = summary.status();
      done_ = true;
      cv_.notify_all();
    });
  }
  ~RecordStream() { Close(); }

  // The next record, or nothing at the end (the run's error raised, if any).
  py::object Next() {
    std::optional<PipelineRecord> record;
    absl::Status status;
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !records_.empty() || done_; });
      if (!records_.empty()) {
        record = std::move(records_.front());
        records_.pop_front();
        cv_.notify_all();
      } else {
        status = status_;
      }
    }
    if (record) return RecordTuple(*record);
    Check(status);
    return py::none();
  }

  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) {
      py::gil_scoped_release release;
      thread_.join();
    }
  }

 private:
  size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PipelineRecord> records_;
  bool done_ = false, closed_ = false;
  absl::Status status_;
  std::thread thread_;
};

class PyPipeline {
 public:
  PyPipeline(const std::string& path, const std::string& input, const std::string& output_dir,
             std::optional<int> in_flight, std::optional<int64_t> limit, int cores,
             const std::string& strategy, bool sinks,
             const std::map<std::string, std::string>& model_paths,
             const std::map<std::string, std::string>& overrides)
      : path_(path) {
    options_.input = input;
    options_.model_paths = model_paths;
    options_.overrides = overrides;
    options_.output_dir = output_dir;
    options_.in_flight = in_flight;
    options_.limit = limit;
    options_.cores = cores;
    options_.sinks = sinks;
    if (strategy == "loom") {
      options_.strategy = PipelineStrategy::kLoom;
    } else if (strategy == "sequential") {
      options_.strategy = PipelineStrategy::kSequential;
    } else if (strategy == "thread-per-model") {
      options_.strategy = PipelineStrategy::kThreadPerModel;
    } else {
      Raise(absl::InvalidArgumentError(
          "strategy must be 'loom', 'sequential' or 'thread-per-model', got '" + strategy + "'"));
    }
    absl::StatusOr<std::unique_ptr<Pipeline>> p;
    {
      py::gil_scoped_release release;
      p = Pipeline::Load(path, options_);
    }
    pipeline_ = Unwrap(std::move(p));
  }
  ~PyPipeline() {
    py::gil_scoped_release release;
    pipeline_.reset();
  }

  std::unique_ptr<RecordStream> Run(const std::string& source, std::optional<int64_t> limit,
                                    const std::vector<std::string>& files) {
    RunOptions options;
    options.input = source;
    options.files = files;
    options.limit = limit;
    return std::make_unique<RecordStream>(*pipeline_, options,
                                          static_cast<size_t>(2 * pipeline_->in_flight() + 2));
  }

  int64_t Submit(const py::array& frame, const std::string& name) {
    py::array_t<uint8_t, py::array::c_style | py::array::forcecast> pixels(frame);
    if (pixels.ndim() != 2 && pixels.ndim() != 3) {
      Raise(
          absl::InvalidArgumentError("a frame is an HxW (gray) or HxWxC (BGR, BGRA) uint8 array"));
    }
    ImageView view;
    view.height = static_cast<int>(pixels.shape(0));
    view.width = static_cast<int>(pixels.shape(1));
    view.channels = pixels.ndim() == 3 ? static_cast<int>(pixels.shape(2)) : 1;
    view.data = pixels.data();
    absl::StatusOr<int64_t> index;
    {
      py::gil_scoped_release release;  // copies the pixels, may wait for room
      index = pipeline_->Submit(view, name);
    }
    return Unwrap(std::move(index));
  }

  int64_t SubmitEncoded(const py::bytes& data, const std::string& name) {
    std::string bytes = data;
    absl::StatusOr<int64_t> index;
    {
      py::gil_scoped_release release;
      index = pipeline_->SubmitEncoded(bytes, name);
    }
    return Unwrap(std::move(index));
  }

  py::object Next(bool wait) {
    std::optional<PipelineRecord> r;
    {
      py::gil_scoped_release release;
      r = pipeline_->Next(wait);
    }
    if (!r) return py::none();
    return RecordTuple(*r);
  }

  void Finish() { pipeline_->Finish(); }
  std::string Plan() const { return pipeline_->DescribePlan(); }
  int InFlight() const { return pipeline_->in_flight(); }

  std::string Bench(int reps, const std::string& input, std::optional<int64_t> limit) {
    bench::PipelineBenchOptions options;
    options.pipeline = options_;
    if (!input.empty()) options.pipeline.input = input;
    if (limit) options.pipeline.limit = limit;
    options.reps = reps;
    absl::StatusOr<bench::PipelineBenchReport> report;
    {
      py::gil_scoped_release release;
      report = bench::RunPipelineBench(path_, options);
    }
    return Unwrap(std::move(report)).ToJson().dump();
  }

 private:
  std::string path_;
  PipelineOptions options_;
  std::unique_ptr<Pipeline> pipeline_;
};

}  // namespace

void RegisterPipeline(py::module_& m) {
  py::class_<RecordStream>(m, "_RecordStream")
      .def("next", &RecordStream::Next)
      .def("close", &RecordStream::Close);
  py::class_<PyPipeline>(m, "_Pipeline")
      .def(py::init<const std::string&, const std::string&, const std::string&, std::optional<int>,
                    std::optional<int64_t>, int, const std::string&, bool,
                    const std::map<std::string, std::string>&,
                    const std::map<std::string, std::string>&>(),
           py::arg("path"), py::arg("input") = "", py::arg("output_dir") = "out",
           py::arg("in_flight") = py::none(), py::arg("limit") = py::none(), py::arg("cores") = 0,
           py::arg("strategy") = "loom", py::arg("sinks") = false,
           py::arg("model_paths") = std::map<std::string, std::string>{},
           py::arg("overrides") = std::map<std::string, std::string>{})
      .def("run", &PyPipeline::Run, py::arg("source") = "", py::arg("limit") = py::none(),
           py::arg("files") = std::vector<std::string>{})
      .def("submit", &PyPipeline::Submit, py::arg("frame"), py::arg("name") = "")
      .def("submit_encoded", &PyPipeline::SubmitEncoded, py::arg("data"), py::arg("name") = "")
      .def("next", &PyPipeline::Next, py::arg("wait") = true)
      .def("finish", &PyPipeline::Finish)
      .def("plan_text", &PyPipeline::Plan)
      .def("in_flight", &PyPipeline::InFlight)
      .def("bench", &PyPipeline::Bench, py::arg("reps") = 3, py::arg("input") = "",
           py::arg("limit") = py::none());
}

}  // namespace loom::python
