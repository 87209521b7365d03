// `loom run MODEL [--backend ort|opencv] [--input IMAGE | --random] [--reps N] [--threads T]`:
// runs one model on one real image (converted as blobFromImage would) or on random input, prints
// a summary of every output and the latency over the repeats.
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "apps/loom/commands.h"
#include "apps/loom/options.h"
#include "core/stats.h"
#include "core/tensor_util.h"
#include "loom/session.h"
#include "vision/model_inputs.h"

namespace loom::cli {
namespace {

struct RunArgs {
  std::string model;
  std::string backend = "ort";
  std::string input;
  bool random = false;
  int reps = 10;
  int warmup = 1;
  int threads = 0;
  bool no_spin = false;
  int batch = 1;
  std::string size;  // "WxH"
  std::string channels;
  double scale = 0;
  std::vector<double> mean, std;
  bool crop = false;
  uint64_t seed = 1;
};

absl::StatusOr<std::array<double, 4>> FourValues(const std::vector<double>& v, const char* flag) {
  if (v.empty() || v.size() > 4) {
    return absl::InvalidArgumentError(absl::StrFormat("%s takes 1 to 4 values", flag));
  }
  std::array<double, 4> out;
  for (size_t i = 0; i < 4; ++i) out[i] = v[std::min(i, v.size() - 1)];
  return out;
}

absl::Status BuildSpec(const RunArgs& a, vision::InputSpec& spec) {
  if (!a.input.empty()) {
    LOOM_ASSIGN_OR_RETURN(spec.image, vision::ReadImage(a.input));
  }
  spec.batch = a.batch;
  spec.seed = a.seed;
  if (!a.size.empty()) {
    LOOM_ASSIGN_OR_RETURN(const auto size, ParseSize("--size", a.size));
    spec.size = {size.first, size.second};
  }
  if (!a.channels.empty()) {
    LOOM_ASSIGN_OR_RETURN(spec.channels, vision::ParseChannelOrder(a.channels));
  }
  if (a.scale != 0) spec.scale = a.scale;
  if (!a.mean.empty()) {
    LOOM_ASSIGN_OR_RETURN(spec.mean, FourValues(a.mean, "--mean"));
  }
  if (!a.std.empty()) {
    LOOM_ASSIGN_OR_RETURN(spec.std, FourValues(a.std, "--std"));
  }
  spec.center_crop = a.crop;
  return absl::OkStatus();
}

void PrintOutput(const NamedTensor& out) {
  const TensorSummary s = Summarize(out.tensor);
  std::cout << absl::StrFormat("output  %-28s %-20s min %.4g  max %.4g  mean %.4g", out.name,
                               out.tensor.Describe(), s.min, s.max, s.mean);
  if (s.non_finite > 0) std::cout << absl::StrFormat("  (%d non-finite)", s.non_finite);
  std::cout << "\n";
  if (IsVectorLike(out.tensor) && out.tensor.dtype() == DType::kFloat32) {
    std::cout << "        top-5:";
    for (const auto& [index, value] : TopK(out.tensor, 5)) {
      std::cout << absl::StrFormat("  #%d %.4g", index, value);
    }
    std::cout << "\n";
  }
}

int Run(const RunArgs& a) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "loom run: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  vision::InputSpec spec;
  if (absl::Status s = BuildSpec(a, spec); !s.ok()) return fail(s);

  SessionOptions options;
  options.backend = *ParseBackend(a.backend);  // validated by CLI11
  options.intra_op_threads = a.threads;
  options.allow_spinning = !a.no_spin;
  auto session = CreateSession(a.model, options);
  if (!session.ok()) return fail(session.status());
  const ModelInfo& info = (*session)->info();

  auto inputs = vision::MakeInputs(info, spec);
  if (!inputs.ok()) return fail(inputs.status());

  std::cout << absl::StrFormat("model   %s  (%s, %s)\n", info.name, BackendName(options.backend),
                               a.threads > 0 ? absl::StrCat(a.threads, " intra-op threads")
                                             : std::string("default threads"));
  for (const NamedTensor& in : *inputs) {
    std::cout << absl::StrFormat("input   %-28s %-20s %s%s\n", in.name, in.tensor.Describe(),
                                 a.input.empty() ? "" : a.input + ": ",
                                 vision::DescribePreprocessing(info, spec));
  }

  absl::StatusOr<NamedTensors> outputs;
  for (int i = 0; i < a.warmup; ++i) {
    outputs = (*session)->Run(*inputs);
    if (!outputs.ok()) return fail(outputs.status());
  }
  std::vector<double> latencies_ms;
  for (int i = 0; i < a.reps; ++i) {
    const auto start = Clock::now();
    outputs = (*session)->Run(*inputs);
    latencies_ms.push_back(MillisecondsSince(start));
    if (!outputs.ok()) return fail(outputs.status());
  }
  for (const NamedTensor& out : *outputs) PrintOutput(out);
  const LatencySummary l = Summarize(latencies_ms);
  std::cout << absl::StrFormat(
      "latency min %.2f ms  p50 %.2f ms  p99 %.2f ms  over %d runs (+%d warm-up): %.1f "
      "inferences/s "
      "at p50\n",
      l.min, l.p50, l.p99, a.reps, a.warmup, l.p50 > 0 ? 1000.0 / l.p50 : 0.0);
  return kExitOk;
}

}  // namespace

CommandFn AddRunCommand(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  app.add_option("MODEL", a->model, "ONNX model file")->required();
  app.add_option("--backend", a->backend, "Inference backend")
      ->check(CLI::IsMember(BackendSpellings()))
      ->capture_default_str();
  auto* input = app.add_option("--input", a->input, "Image file to feed the image input");
  auto* random = app.add_flag("--random", a->random, "Feed deterministic random values (default)");
  input->excludes(random);
  app.add_option("--reps", a->reps, "Timed runs")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  HiddenAlias(app, "--repeat", a->reps)->check(NamedRange("--repeat", 1, 1000000));
  app.add_option("--warmup", a->warmup, "Untimed runs first")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--threads", a->threads, "Intra-op threads (0 = backend default)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_flag("--no-spin", a->no_spin, "Idle intra-op threads sleep instead of spinning");
  app.add_option("--batch", a->batch, "Value of a dynamic batch dim")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--size", a->size,
                 "WIDTHxHEIGHT for dynamic image dims (default: image size rounded up to 32)");
  app.add_option("--channels", a->channels,
                 "Channel order: BGR, RGB, BGRA, RGBA, GRAY (default from the model)");
  app.add_option("--scale", a->scale, "Multiply after subtracting the mean (default 1/255)");
  app.add_option("--mean", a->mean,
                 "Per-channel mean subtracted first, e.g. 127.5 or 123.7,116.3,103.5")
      ->delimiter(',');
  app.add_option("--std", a->std, "Per-channel divisor applied last, e.g. 0.229,0.224,0.225")
      ->delimiter(',');
  app.add_flag("--crop", a->crop, "Keep the aspect ratio and crop the centre");
  app.add_option("--seed", a->seed, "Seed of the random inputs")->capture_default_str();
  return [a]() { return Run(*a); };
}

}  // namespace loom::cli
