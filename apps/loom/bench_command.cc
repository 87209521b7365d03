// `loom bench copies|fanout|overhead|load|shift|chain|serve`: the naive strategies and Loom side by
// side on the user's own models and machine, and `loom bench-child`, the child processes it starts.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <opencv2/imgcodecs.hpp>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "apps/loom/commands.h"
#include "apps/loom/options.h"
#include "bench/bench.h"
#include "bench/load.h"
#include "bench/pipeline_bench.h"
#include "bench/text_pages.h"
#include "core/cpu_set.h"
#include "serve/serve_bench.h"

namespace loom::cli {
namespace {

namespace fs = std::filesystem;

struct BenchArgs {
  std::vector<std::string> models;
  int copies = 4;
  int items = 0;                    // --count: images per copy, or frames; 0: per workload default
  std::vector<std::string> images;  // --images FILE...
  std::vector<std::string> legacy_images;  // --image FILE..., the unlisted alias of --images
  std::string video = "data/vtest.avi";
  std::string size = "640x480";
  int reps = 5;
  int warmup = 1;
  int cores = 0;
  bool sweep = false;
  std::string strategies;
  std::string json, csv;
  std::string trace;  // copies / fanout: Loom's last repetition as Chrome trace-event JSON
  std::string html;   // a self-contained report with charts
  int overhead_runs = 2000;
  // load / shift
  std::string workload = "copies";
  std::vector<int> clients = {1, 2, 4, 8, 16};
  std::vector<double> rates = {0.1, 0.5, 0.9};
  double seconds = 2.0;
  int shift_clients = 8;
  double shift_seconds = 3.0;
  // chain
  std::string chain_pipeline = "pipelines/ocr.yaml";
  std::string chain_input;
};

std::string SelfExe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "loom" : p.string();
}

// A fresh scratch directory for the workload spec the child processes read.
std::string ScratchDir() {
  const fs::path dir = fs::temp_directory_path() / ("loom-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  return dir.string();
}

// --cores N: restrict the whole process (and its children) to the first N usable cores, so that
// every strategy, naive ones included, sees the smaller machine.
absl::Status RestrictCores(int cores) {
  if (cores <= 0) return absl::OkStatus();
  std::vector<int> cpus = UsableCpus();
  if (cores > static_cast<int>(cpus.size())) {
    return absl::InvalidArgumentError(absl::StrFormat("--cores %d: only %d usable (%s)", cores,
                                                      cpus.size(), FormatCpuList(cpus)));
  }
  cpus.resize(static_cast<size_t>(cores));
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0)
    return absl::InternalError("sched_setaffinity failed");
  return absl::OkStatus();
}

// `--images` takes image files, and its alias `--image` too. A lone integer that names no file is
// read as a count (the alias of `--count N`).
absl::StatusOr<BenchArgs> ResolveImages(BenchArgs a) {
  std::vector<std::string> files;
  for (const std::string& v : a.images) {
    int n = 0;
    std::error_code ec;
    if (absl::SimpleAtoi(v, &n) && !fs::exists(v, ec)) {
      if (n < 1)
        return absl::InvalidArgumentError(absl::StrCat("--count ", v, ": must be at least 1"));
      if (a.items == 0) a.items = n;
      continue;
    }
    files.push_back(v);
  }
  files.insert(files.end(), a.legacy_images.begin(), a.legacy_images.end());
  a.images = std::move(files);
  return a;
}

// --html FILE: the report with charts (nothing when FILE is empty).
template <typename Fail>
int WriteReport(const std::string& path, const bench::HtmlPage& page, Fail fail) {
  if (path.empty()) return kExitOk;
  if (absl::Status s = bench::WriteHtml(path, page); !s.ok()) return fail(s);
  std::cerr << "report: " << path << "\n";
  return kExitOk;
}

int RunWorkload(const BenchArgs& args, bench::WorkloadKind kind) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "\nloom bench: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  absl::StatusOr<BenchArgs> resolved = ResolveImages(args);
  if (!resolved.ok()) return fail(resolved.status());
  const BenchArgs& a = *resolved;
  std::vector<std::string> only;
  if (!a.strategies.empty()) {
    absl::StatusOr<std::vector<std::string>> parsed =
        ParseStrategies(a.strategies, bench::StrategyNames());
    if (!parsed.ok()) {
      std::cerr << "loom bench: " << parsed.status().message() << "\n";
      return kExitUsage;
    }
    only = *std::move(parsed);
  }
  if (absl::Status s = RestrictCores(a.cores); !s.ok()) return fail(s);
  bench::WorkloadSpec spec;
  spec.kind = kind;
  std::vector<std::string> models = a.models;
  if (models.empty()) {
    models = kind == bench::WorkloadKind::kCopies ? std::vector<std::string>{kDefaultModel}
                                                  : DefaultFanoutModels();
  }
  if (kind == bench::WorkloadKind::kCopies && models.size() != 1) {
    return fail(absl::InvalidArgumentError("copies takes exactly one --model"));
  }
  for (const std::string& m : models) spec.models.push_back({fs::path(m).stem().string(), m});
  spec.copies = a.copies;
  if (kind == bench::WorkloadKind::kCopies) {
    spec.items = a.items > 0 ? a.items : 32;
    spec.images = a.images.empty() ? DefaultPhotos(6) : a.images;
  } else {
    spec.items = a.items > 0 ? a.items : 48;
    spec.video = a.video;
  }
  absl::StatusOr<std::pair<int, int>> size = ParseSize("--size", a.size);
  if (!size.ok()) return fail(size.status());
  std::tie(spec.width, spec.height) = *size;

  bench::BenchOptions options;
  options.repetitions = a.reps;
  options.warmup = a.warmup;
  options.cores = a.cores;
  options.sweep = a.sweep;
  options.trace = !a.trace.empty() || !a.html.empty();  // the report's timeline needs Loom's trace
  options.only = only;
  options.self_exe = SelfExe();
  options.scratch_dir = ScratchDir();
  const bool tty = isatty(STDERR_FILENO);
  options.progress = [tty](int done, int total, const std::string& what) {
    const int width = 30, filled = total > 0 ? width * done / total : width;
    std::cerr << absl::StrFormat("%s[%s%s] %3d/%d %-32s%s", tty ? "\r" : "",
                                 std::string(filled, '#'), std::string(width - filled, '.'), done,
                                 total, what, tty ? "" : "\n")
              << std::flush;
  };
  auto report = bench::RunBench(spec, options);
  std::error_code ec;
  fs::remove_all(options.scratch_dir, ec);
  if (tty) std::cerr << "\n";
  if (!report.ok()) return fail(report.status());
  if (a.json != "-" && a.csv != "-") std::cout << report->Table();
  if (!Emit(a.json, report->ToJson().dump(2) + "\n") || !Emit(a.csv, report->Csv())) {
    return fail(absl::InternalError("cannot write the --json/--csv file"));
  }
  if (!a.trace.empty() && !Emit(a.trace, report->trace_json)) {
    return fail(absl::InternalError(absl::StrCat("cannot write the trace '", a.trace, "'")));
  }
  return WriteReport(a.html, report->Html(), fail);
}

// The workload of `load` and `shift`: the same items as copies / fanout.
absl::StatusOr<bench::WorkloadSpec> LoadSpec(const BenchArgs& args, bench::WorkloadKind kind,
                                             std::vector<std::string> models) {
  LOOM_ASSIGN_OR_RETURN(const BenchArgs a, ResolveImages(args));
  bench::WorkloadSpec spec;
  spec.kind = kind;
  if (!a.models.empty()) models = a.models;
  for (const std::string& m : models) spec.models.push_back({fs::path(m).stem().string(), m});
  if (kind == bench::WorkloadKind::kCopies) {
    if (spec.models.size() != 1)
      return absl::InvalidArgumentError("--workload copies takes exactly one --model");
    spec.items = 32;
    spec.images = a.images.empty() ? DefaultPhotos(4) : a.images;
  } else {
    spec.items = 24;
    spec.video = a.video;
  }
  LOOM_ASSIGN_OR_RETURN(const auto size, ParseSize("--size", a.size));
  std::tie(spec.width, spec.height) = size;
  return spec;
}

int RunLoadCommand(const BenchArgs& a) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "\nloom bench load: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  if (absl::Status s = RestrictCores(a.cores); !s.ok()) return fail(s);
  const bool copies = a.workload == "copies";
  auto spec = LoadSpec(a, copies ? bench::WorkloadKind::kCopies : bench::WorkloadKind::kFanout,
                       copies ? std::vector<std::string>{kDefaultModel} : DefaultFanoutModels());
  if (!spec.ok()) return fail(spec.status());
  bench::LoadOptions options;
  options.clients = a.clients;
  options.rates = a.rates;
  options.seconds = a.seconds;
  options.reps = a.reps;
  options.cores = a.cores;
  auto report = bench::RunLoad(*spec, options);
  if (!report.ok()) return fail(report.status());
  if (a.json != "-") std::cout << report->Table();
  if (!Emit(a.json, report->ToJson().dump(2) + "\n"))
    return fail(absl::InternalError("cannot write the --json file"));
  return WriteReport(a.html, report->Html(), fail);
}

int RunShiftCommand(const BenchArgs& a) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "\nloom bench shift: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  if (absl::Status s = RestrictCores(a.cores); !s.ok()) return fail(s);
  auto spec = LoadSpec(a, bench::WorkloadKind::kFanout,
                       {kDefaultModel, "models/ch_PP-OCRv4_det_infer.onnx"});
  if (!spec.ok()) return fail(spec.status());
  bench::ShiftOptions options;
  options.seconds_per_phase = a.shift_seconds;
  options.clients = a.shift_clients;
  options.reps = a.reps;
  options.cores = a.cores;
  auto report = bench::RunShift(*spec, options);
  if (!report.ok()) return fail(report.status());
  if (a.json != "-") std::cout << report->Table();
  if (!Emit(a.json, report->ToJson().dump(2) + "\n"))
    return fail(absl::InternalError("cannot write the --json file"));
  return WriteReport(a.html, report->Html(), fail);
}

void AddCommonOptions(CLI::App& app, BenchArgs& a) {
  app.add_option("--reps", a.reps, "Timed repetitions of every strategy")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--warmup", a.warmup, "Untimed rounds first")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--cores", a.cores, "Emulate a smaller machine: use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  app.add_flag("--sweep", a.sweep, "Also run every static workers x threads x spinning layout");
  app.add_option("--strategies", a.strategies,
                 "Comma-separated subset of " + absl::StrJoin(bench::StrategyNames(), ",") +
                     "; loom always runs");
  app.add_option("--json", a.json, "Write the report as JSON to FILE (- for stdout)");
  app.add_option("--csv", a.csv, "Write the table as CSV to FILE (- for stdout)");
  app.add_option("--html", a.html,
                 "Write a self-contained HTML report to FILE: throughput with the ideal, latency "
                 "distributions, a timeline per thread for Loom and the naive threads");
  app.add_option(
      "--trace", a.trace,
      "Write Loom's last repetition as Chrome trace-event JSON to FILE (Perfetto, "
      "chrome://tracing): a track per worker, a span per run, the queue wait of every request");
  app.add_option("--size", a.size, "WIDTHxHEIGHT for models with dynamic image dims")
      ->capture_default_str();
}

// `chain`: `loom pipeline bench` of the OCR chain over a folder of pages (by default a scratch
// folder with the text images of data/ and pages rendered like the OCR tests'), with the chain's
// ideal.
constexpr int kRenderedChainPages = 4;
int RunChainCommand(const BenchArgs& a) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "\nloom bench chain: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  std::string input = a.chain_input, scratch;
  if (input.empty()) {
    scratch = ScratchDir();
    for (const char* page :
         {"imageTextN.png", "imageTextR.png", "text_motion.jpg", "text_defocus.jpg"}) {
      std::error_code ec;
      fs::copy_file(fs::path("data") / page, fs::path(scratch) / page, ec);
      if (ec) {
        fs::remove_all(scratch, ec);
        return fail(absl::NotFoundError(
            absl::StrCat("data/", page, ": cannot copy it (run scripts/setup)")));
      }
    }
    // Pages like the OCR tests' rendered one: the sample phrases in another order and other faces.
    std::vector<std::string> phrases = bench::SamplePhrases();
    for (int k = 0; k < kRenderedChainPages; ++k) {
      auto page = bench::RenderTextPage(phrases, k);
      const std::string path = (fs::path(scratch) / absl::StrCat("rendered-", k, ".png")).string();
      if (!page.ok() || !cv::imwrite(path, *page)) {
        std::error_code ec;
        fs::remove_all(scratch, ec);
        return fail(page.ok() ? absl::InternalError(absl::StrCat("cannot write ", path))
                              : page.status());
      }
      std::rotate(phrases.begin(), phrases.begin() + 5, phrases.end());
    }
    input = scratch;
  }
  bench::PipelineBenchOptions options;
  options.pipeline.input = input;
  options.pipeline.cores = a.cores;
  options.reps = a.reps;
  options.trace = !a.trace.empty() || !a.html.empty();
  options.progress = [&](int round, const std::string& strategy) {
    std::cerr << absl::StrFormat("\rround %d/%d  %-18s", round, a.reps, strategy) << std::flush;
  };
  auto report = bench::RunPipelineBench(a.chain_pipeline, options);
  std::cerr << "\n";
  if (!scratch.empty()) {
    std::error_code ec;
    fs::remove_all(scratch, ec);
  }
  if (!report.ok()) return fail(report.status());
  if (a.json != "-") std::cout << "chain: " << report->Table();
  if (!Emit(a.json, report->ToJson().dump(2) + "\n"))
    return fail(absl::InternalError("cannot write the --json file"));
  if (!a.trace.empty() && !Emit(a.trace, report->trace_json)) {
    return fail(absl::InternalError(absl::StrCat("cannot write the trace '", a.trace, "'")));
  }
  return WriteReport(a.html, report->Html(), fail);
}

struct ServeBenchArgs {
  serve::ServeBenchOptions options;
  std::vector<std::string> models;  // NAME=PATH
  std::string json;
};

int RunServeBenchCommand(ServeBenchArgs& a) {
  for (const std::string& m : a.models) {
    absl::StatusOr<std::pair<std::string, std::string>> name_path =
        ParseNamePath("--model", m, "NAME=PATH.onnx");
    if (!name_path.ok()) {
      std::cerr << "loom bench serve: " << name_path.status().message() << "\n";
      return kExitUsage;
    }
    a.options.models.push_back(*std::move(name_path));
  }
  if (a.options.models.empty() && a.options.repository.empty() && a.options.http_address.empty()) {
    std::cerr << "loom bench serve: give --model NAME=PATH, --repository DIR or --http HOST:PORT\n";
    return kExitUsage;
  }
  auto report = serve::RunServeBench(a.options);
  if (!report.ok()) {
    std::cerr << "loom bench serve: " << report.status().message() << "\n";
    return kExitRuntimeError;
  }
  if (a.json != "-") std::cout << report->Format();
  Emit(a.json, report->Json() + "\n");
  return kExitOk;
}

}  // namespace

CommandFn AddBenchCommand(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  app.require_subcommand(1);
  auto* copies = app.add_subcommand("copies", "N copies of one model over K images");
  copies->add_option("--model", a->models, "ONNX model (default: BlazeFace back 256)");
  copies->add_option("--copies", a->copies, "N")->check(CLI::Range(1, 256))->capture_default_str();
  copies->add_option("--count", a->items, "Images per copy, cycled from --images (default 32)")
      ->check(CLI::Range(1, 100000));
  copies->add_option("--images", a->images, "Image files (default: 6 photos in data/)");
  HiddenAlias(*copies, "--image", a->legacy_images);
  AddCommonOptions(*copies, *a);
  auto* fanout = app.add_subcommand("fanout", "Several different models on every frame of a video");
  fanout->add_option("--model", a->models,
                     "ONNX models (default: BlazeFace back 256, M-LSD tiny 320, PP-OCR det)");
  fanout->add_option("--video", a->video, "Video file")->capture_default_str();
  fanout->add_option("--count", a->items, "Frames of the video (default 48)")
      ->check(CLI::Range(1, 100000));
  HiddenAlias(*fanout, "--frames", a->items)->check(NamedRange("--frames", 1, 100000));
  AddCommonOptions(*fanout, *a);
  auto* overhead = app.add_subcommand("overhead", "Engine::Infer() against a bare Session::Run");
  overhead->add_option("--reps", a->overhead_runs, "Timed calls of each")
      ->check(CLI::Range(100, 10000000))
      ->capture_default_str();
  HiddenAlias(*overhead, "--runs", a->overhead_runs)->check(NamedRange("--runs", 100, 10000000));
  overhead->add_option("--cores", a->cores, "Use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  overhead->add_option("--json", a->json, "Write the report as JSON to FILE (- for stdout)");
  overhead->add_option(
      "--html", a->html,
      "Write a self-contained HTML report to FILE (the two latency distributions)");
  auto* load = app.add_subcommand(
      "load", "Latency plan, throughput plan and adaptive engine under closed- and open-loop load");
  load->add_option("--workload", a->workload, "copies (one model) or fanout (several per frame)")
      ->check(CLI::IsMember({"copies", "fanout"}))
      ->capture_default_str();
  load->add_option(
      "--model", a->models,
      "ONNX model(s) (default: BlazeFace back 256; fanout: + M-LSD tiny + PP-OCR det)");
  load->add_option("--video", a->video, "Video for the fanout workload")->capture_default_str();
  load->add_option("--images", a->images,
                   "Image files for the copies workload (default: 4 photos in data/)");
  HiddenAlias(*load, "--image", a->legacy_images);
  load->add_option("--clients", a->clients, "Closed-loop levels: concurrent clients")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  load->add_option("--rates", a->rates, "Open-loop levels: fractions of the measured capacity")
      ->delimiter(',')
      ->check(CLI::Range(0.01, 2.0));
  load->add_option("--seconds", a->seconds, "Per level, plan and repetition")
      ->check(CLI::Range(0.2, 600.0))
      ->capture_default_str();
  load->add_option("--reps", a->reps, "Repetitions, interleaved across plans")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  load->add_option("--cores", a->cores, "Use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  load->add_option("--json", a->json, "Write the report as JSON to FILE (- for stdout)");
  load->add_option(
      "--html", a->html,
      "Write a self-contained HTML report to FILE: throughput and latency per plan against load");
  load->add_option("--size", a->size, "WIDTHxHEIGHT for models with dynamic image dims")
      ->capture_default_str();
  auto* shift = app.add_subcommand(
      "shift", "Traffic moves from one model to another: static plans vs the adaptive engine");
  shift->add_option("--model", a->models,
                    "Exactly two ONNX models (default: BlazeFace back 256, PP-OCR det)");
  shift->add_option("--video", a->video, "Video the items come from")->capture_default_str();
  shift->add_option("--seconds", a->shift_seconds, "Seconds per phase")
      ->check(CLI::Range(1.0, 600.0))
      ->capture_default_str();
  shift->add_option("--clients", a->shift_clients, "Concurrent closed-loop clients")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  shift->add_option("--reps", a->reps, "Repetitions")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  shift->add_option("--cores", a->cores, "Use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  shift->add_option("--json", a->json, "Write the report as JSON to FILE (- for stdout)");
  shift->add_option("--html", a->html,
                    "Write a self-contained HTML report to FILE: completions over time per engine");
  shift->add_option("--size", a->size, "WIDTHxHEIGHT for models with dynamic image dims")
      ->capture_default_str();
  auto* chain =
      app.add_subcommand("chain",
                         "A chain of models per detection (OCR: detector, a crop per line, angle "
                         "classifier, recogniser) over a folder of pages: sequential, thread per "
                         "model and Loom, with the ideal");
  chain->add_option("--pipeline", a->chain_pipeline, "The chain as a pipeline YAML")
      ->capture_default_str();
  chain->add_option("--input", a->chain_input,
                    "Pages: an image, folder or glob (default: the 4 text images in data/ and 4 "
                    "pages of rendered text)");
  chain->add_option("--reps", a->reps, "Timed repetitions")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  chain->add_option("--cores", a->cores, "Cores for the engine (0: all usable)")
      ->check(CLI::Range(0, 4096));
  chain->add_option("--json", a->json, "Write the report as JSON to FILE (- for stdout)");
  chain->add_option("--html", a->html, "Write a self-contained HTML report to FILE");
  chain->add_option("--trace", a->trace,
                    "Write Loom's last repetition as Chrome trace-event JSON to FILE");
  auto sa = std::make_shared<ServeBenchArgs>();
  auto* serve =
      app.add_subcommand("serve",
                         "A KServe v2 server under a concurrency sweep (HTTP binary/JSON, gRPC) "
                         "against in-process Engine::Infer, side by side");
  serve->add_option("--model", sa->models, "NAME=PATH.onnx to serve here (repeatable)");
  serve->add_option("--repository", sa->options.repository, "Or a model repository to serve here");
  serve->add_option("--http", sa->options.http_address,
                    "Or a running server's HTTP HOST:PORT (no in-process runs)");
  serve->add_option("--grpc", sa->options.grpc_address, "... and its gRPC HOST:PORT");
  serve->add_option(
      "--call", sa->options.model,
      "The model(s) to call, comma-separated; clients are spread over them (default: the first)");
  serve->add_option("--concurrency", sa->options.concurrency, "Client levels")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  serve
      ->add_option("--modes", sa->options.modes,
                   "inprocess, http-binary, http-json, grpc; http-live, grpc-live: an empty round "
                   "trip (the transport floor)")
      ->delimiter(',');
  serve->add_option("--seconds", sa->options.seconds, "Per run")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  serve->add_option("--reps", sa->options.repeats, "Runs per mode and level, interleaved")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  serve->add_option("--batch", sa->options.batch, "Rows per request for a dynamic batch dim")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  serve->add_option("--cores", sa->options.cores, "Use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  serve->add_option("--json", sa->json, "Write the report as JSON to FILE (- for stdout)");
  return [a, sa, copies, fanout, load, shift, serve, chain]() {
    if (serve->parsed()) return RunServeBenchCommand(*sa);
    if (chain->parsed()) return RunChainCommand(*a);
    if (copies->parsed()) return RunWorkload(*a, bench::WorkloadKind::kCopies);
    if (fanout->parsed()) return RunWorkload(*a, bench::WorkloadKind::kFanout);
    if (load->parsed()) return RunLoadCommand(*a);
    if (shift->parsed()) return RunShiftCommand(*a);
    if (absl::Status s = RestrictCores(a->cores); !s.ok()) {
      std::cerr << "loom bench overhead: " << s.message() << "\n";
      return kExitRuntimeError;
    }
    const std::string scratch = ScratchDir();
    auto report = bench::RunOverhead(a->overhead_runs, scratch);
    std::error_code ec;
    fs::remove_all(scratch, ec);
    if (!report.ok()) {
      std::cerr << "loom bench overhead: " << report.status().message() << "\n";
      return kExitRuntimeError;
    }
    if (a->json != "-") std::cout << report->Table();
    Emit(a->json, report->ToJson().dump(2) + "\n");
    return WriteReport(a->html, report->Html(), [](const absl::Status& s) {
      std::cerr << "loom bench overhead: " << s.message() << "\n";
      return kExitRuntimeError;
    });
  };
}

CommandFn AddBenchChildCommand(CLI::App& app) {
  struct Args {
    std::string spec, mode;
    int part = 0, cores = 1;
  };
  auto a = std::make_shared<Args>();
  app.group("");  // internal: started by `loom bench`
  app.add_option("--spec", a->spec)->required();
  app.add_option("--mode", a->mode)->required();
  app.add_option("--part", a->part);
  app.add_option("--cores", a->cores);
  return [a]() {
    auto mode = bench::ParseChildMode(a->mode);
    if (!mode.ok()) {
      std::cout << "error: " << mode.status().message() << std::endl;
      return kExitUsage;
    }
    return bench::ChildMain(a->spec, *mode, a->part, a->cores);
  };
}

}  // namespace loom::cli
