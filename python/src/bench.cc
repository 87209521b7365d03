// _loom bench functions: `loom bench copies | fanout | load | shift | overhead` as functions that
// return the same report as --json (a JSON string the package turns into a dict).
#include "bench/bench.h"

#include <pybind11/stl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "bench/html_report.h"
#include "bench/load.h"
#include "errors.h"
#include "runtime/synthetic_models.h"

namespace loom::python {
namespace {

namespace fs = std::filesystem;

// The `loom` command line, whose `bench-child` mode runs the process strategies.
std::string CliPath() {
  const char* env = std::getenv("LOOM_CLI");
  return env ? env : LOOM_CLI_PATH;
}

struct Scratch {
  Scratch() : path(fs::temp_directory_path() / ("loom-py-bench-" + std::to_string(getpid()))) {
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

bench::WorkloadSpec Spec(bench::WorkloadKind kind, const std::vector<std::string>& models,
                         const std::vector<std::string>& images, const std::string& video,
                         int items, int copies, int width, int height) {
  bench::WorkloadSpec spec;
  spec.kind = kind;
  for (const std::string& m : models) spec.models.push_back({fs::path(m).stem().string(), m});
  spec.images = images;
  spec.video = video;
  spec.items = items;
  spec.copies = copies;
  spec.width = width;
  spec.height = height;
  return spec;
}

std::string RunWorkload(const bench::WorkloadSpec& spec, int reps, int warmup, int cores,
                        bool sweep, const std::vector<std::string>& strategies) {
  Scratch scratch;
  bench::BenchOptions options;
  options.repetitions = reps;
  options.warmup = warmup;
  options.cores = cores;
  options.sweep = sweep;
  options.only = strategies;
  options.self_exe = CliPath();
  options.scratch_dir = scratch.path.string();
  absl::StatusOr<bench::BenchReport> report;
  {
    py::gil_scoped_release release;
    report = bench::RunBench(spec, options);
  }
  return Unwrap(std::move(report)).ToJson().dump();
}

}  // namespace

void RegisterBench(py::module_& m) {
  m.def(
      "_bench_copies",
      [](const std::string& model, int copies, const std::vector<std::string>& images, int items,
         int reps, int warmup, int cores, bool sweep, const std::vector<std::string>& strategies,
         int width, int height) {
        return RunWorkload(
            Spec(bench::WorkloadKind::kCopies, {model}, images, "", items, copies, width, height),
            reps, warmup, cores, sweep, strategies);
      },
      py::arg("model"), py::arg("copies"), py::arg("images"), py::arg("items"), py::arg("reps"),
      py::arg("warmup"), py::arg("cores"), py::arg("sweep"), py::arg("strategies"),
      py::arg("width"), py::arg("height"));
  m.def(
      "_bench_fanout",
      [](const std::vector<std::string>& models, const std::string& video, int frames, int reps,
         int warmup, int cores, bool sweep, const std::vector<std::string>& strategies, int width,
         int height) {
        return RunWorkload(
            Spec(bench::WorkloadKind::kFanout, models, {}, video, frames, 1, width, height), reps,
            warmup, cores, sweep, strategies);
      },
      py::arg("models"), py::arg("video"), py::arg("frames"), py::arg("reps"), py::arg("warmup"),
      py::arg("cores"), py::arg("sweep"), py::arg("strategies"), py::arg("width"),
      py::arg("height"));
  m.def(
      "_bench_overhead",
      [](int runs) {
        Scratch scratch;
        absl::StatusOr<bench::OverheadReport> report;
        {
          py::gil_scoped_release release;
          report = bench::RunOverhead(runs, scratch.path.string());
        }
        return Unwrap(std::move(report)).ToJson().dump();
      },
      py::arg("runs"));
  // Reports of the Python benchmarks, drawn like `loom bench --html`: a bar chart's JSON, and a
  // page.
  m.def(
      "_bar_chart",
      [](const std::string& title, const std::string& caption, const std::string& y_title,
         const std::vector<std::string>& labels, const std::vector<double>& medians,
         const std::vector<std::vector<double>>& repetitions, double ideal,
         const std::string& ideal_label) {
        return bench::BarChart(title, caption, y_title, labels, medians, repetitions, ideal,
                               ideal_label)
            .dump();
      },
      py::arg("title"), py::arg("caption"), py::arg("y_title"), py::arg("labels"),
      py::arg("medians"), py::arg("repetitions"), py::arg("ideal") = 0.0,
      py::arg("ideal_label") = "");
  m.def(
      "_render_html",
      [](const std::string& title, const std::string& verdict, const std::string& table,
         const std::string& plan, const std::vector<std::string>& charts) {
        bench::HtmlPage page = bench::NewPage(title, verdict, table, plan);
        for (const std::string& c : charts) {
          nlohmann::json chart = nlohmann::json::parse(c, nullptr, /*allow_exceptions=*/false);
          if (chart.is_discarded()) Raise(absl::InvalidArgumentError("a chart is not JSON"));
          page.charts.push_back(std::move(chart));
        }
        return bench::RenderHtml(page);
      },
      py::arg("title"), py::arg("verdict"), py::arg("table"), py::arg("plan"), py::arg("charts"));
  m.def("_cli_path", &CliPath);
  // Synthetic models whose answers are known exactly (tests, the overhead benchmark).
  m.def(
      "_write_add_model",
      [](const std::string& path, int64_t width) { Check(WriteAddModel(path, width)); },
      py::arg("path"), py::arg("width"),
      "y = x + 1 over [batch, width] f32 (width <= 0: dynamic).");
  m.def(
      "_write_gather_model",
      [](const std::string& path, int64_t table) { Check(WriteGatherModel(path, table)); },
      py::arg("path"), py::arg("table"),
      "y = 10 * index; an index outside the table fails the run.");
  m.def(
      "_write_pooled_model",
      [](const std::string& path, int64_t width) { Check(WritePooledModel(path, width)); },
      py::arg("path"), py::arg("width"),
      "A model whose output does not follow its declared batch.");
}

}  // namespace loom::python
