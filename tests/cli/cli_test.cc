// The `loom` binary end to end: exit codes (0 ok, 1 runtime error, 2 usage), messages on stderr,
// and what `info` and `run` print for real models.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <sstream>

#include "tests/test_util.h"

namespace loom {
namespace {

using testing::ModelPath;
using testing::ScratchDir;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

// Runs `loom ARGS` through the shell, capturing stdout and stderr separately.
Result Loom(const std::string& args) {
  ScratchDir dir;
  const std::string command = std::string(LOOM_BINARY) + " " + args + " >" + dir.Path("out") +
                              " 2>" + dir.Path("err") + " </dev/null";
  const int status = std::system(command.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = testing::ReadFile(dir.Path("out"));
  r.err = testing::ReadFile(dir.Path("err"));
  return r;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Cli, HelpOnEveryCommandExitsZero) {
  for (const char* args : {"--help", "info --help", "run --help"}) {
    SCOPED_TRACE(args);
    Result r = Loom(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(Contains(r.out, "Usage")) << r.out;
  }
  EXPECT_TRUE(Contains(Loom("run --help").out, "--backend"));
}

TEST(Cli, VersionNamesLoomAndTheBackendsItRunsWith) {
  Result r = Loom("--version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // "loom 0.1.0 (ONNX Runtime 1.29.0, OpenCV 4.6.0)", the backends' versions read at run time.
  EXPECT_TRUE(r.out.rfind("loom 0.", 0) == 0) << r.out;
  EXPECT_TRUE(Contains(r.out, "ONNX Runtime 1.")) << r.out;
  EXPECT_TRUE(Contains(r.out, "OpenCV 4.")) << r.out;
}

TEST(Cli, WrongUsageExitsTwoWithUsage) {
  struct Case {
    const char* args;
    const char* message;
  };
  for (const Case& c :
       {Case{"", "A subcommand is required"}, Case{"frobnicate", "unknown command 'frobnicate'"},
        Case{"run", "MODEL is required"},
        Case{"run m.onnx --backend tpu", "--backend: tpu not in {ort,opencv,onnxruntime,cv}"},
        Case{"run m.onnx --input a.jpg --random", "excludes"},
        Case{"run m.onnx --repeat 0", "--repeat"}}) {
    SCOPED_TRACE(c.args);
    Result r = Loom(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << r.err;
    EXPECT_TRUE(Contains(r.err, "Usage")) << r.err;
  }
}

TEST(Cli, RuntimeErrorsExitOneWithTheMessage) {
  ScratchDir dir;
  const std::string jpeg =
      dir.Write("photo.onnx", testing::ReadFile(testing::DataPath("messi5.jpg")));
  const std::string text = dir.Write("text.jpg", "not an image");
  struct Case {
    std::string args;
    std::string message;
  };
  for (const Case& c : {
           Case{"info /nonexistent.onnx",
                "loom info: model file '/nonexistent.onnx' does not exist"},
           Case{"run " + jpeg, "is not an ONNX model: it looks like a JPEG image"},
           Case{"run " + ModelPath(testing::kMlsdTiny320) + " --input " + text,
                "loom run: image file '" + text + "' cannot be decoded"},
           Case{"run " + ModelPath(testing::kMlsdTiny320) + " --backend opencv",
                "loom run: model 'mlsd_320x320_tiny': OpenCV DNN cannot load it"},
           Case{"run " + ModelPath(testing::kOcrDet) + " --size 12x",
                "--size must be WIDTHxHEIGHT"},
           // Sizes from the command line are checked before anything is allocated.
           Case{"run " + ModelPath(testing::kOcrDet) + " --random --size 99999x99999",
                "loom run: model 'ch_PP-OCRv4_det_infer' input 'x': tensor [1,3,99999,99999] f32 "
                "has 3e+10 "
                "elements, over the limit of 2147483648 per tensor (max_elements)"},
           Case{"run " + ModelPath(testing::kOcrDet) + " --input " +
                    testing::DataPath("messi5.jpg") + " --size 40000x40000",
                "over the limit"},
           Case{"run " + ModelPath(testing::kOcrRec) + " --random --batch 4000 --size 9000x48",
                "over the limit"},
       }) {
    SCOPED_TRACE(c.args);
    Result r = Loom(c.args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_TRUE(Contains(r.err, c.message)) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(Cli, InfoJsonDescribesTheModel) {
  Result r = Loom("info --json " + ModelPath(testing::kOcrRec));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["name"], "ch_PP-OCRv4_rec_infer");
  EXPECT_EQ(j["dynamic_batch"], true);
  EXPECT_EQ(j["inputs"][0]["shape"],
            nlohmann::json::parse(R"(["p2o.DynamicDimension.0",3,48,"p2o.DynamicDimension.1"])"));
  EXPECT_EQ(j["inputs"][0]["image_layout"], "NCHW");
  EXPECT_EQ(j["outputs"][0]["dtype"], "f32");
}

TEST(Cli, RunOnARealImagePrintsOutputsAndLatency) {
  for (const char* backend : {"ort", "opencv"}) {
    SCOPED_TRACE(backend);
    Result r = Loom("run " + ModelPath(testing::kBlazeFaceBack) + " --input " +
                    testing::DataPath("messi5.jpg") +
                    " --scale 0.0078431 --mean 127.5 --repeat 3 "
                    "--threads 1 --backend " +
                    backend);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(Contains(r.out, "RGB NHWC 256x256, (x - [127.5,127.5,127.5]) * 0.0078431"))
        << r.out;
    EXPECT_TRUE(Contains(r.out, "output  Identity:0")) << r.out;
    EXPECT_TRUE(Contains(r.out, "[1,384,16] f32")) << r.out;
    EXPECT_TRUE(Contains(r.out, "top-5:")) << r.out;
    EXPECT_TRUE(Contains(r.out, "over 3 runs (+1 warm-up)")) << r.out;
  }
}

TEST(Cli, RunResolvesDynamicDimsFromTheImage) {
  Result r = Loom("run " + ModelPath(testing::kOcrDet) + " --input " +
                  testing::DataPath("imageTextN.png") +
                  " --mean 123.675,116.28,103.53 --std 0.229,0.224,0.225 --repeat 1 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The dynamic H and W take the image's size rounded up to a multiple of 32.
  const cv::Mat image = cv::imread(testing::DataPath("imageTextN.png"));
  const std::string hw = std::to_string((image.rows + 31) / 32 * 32) + "," +
                         std::to_string((image.cols + 31) / 32 * 32);
  EXPECT_TRUE(Contains(r.out, "[1,3," + hw + "] f32")) << r.out;
  EXPECT_TRUE(Contains(r.out, "sigmoid_0.tmp_0")) << r.out;
  EXPECT_TRUE(Contains(r.out, "[1,1," + hw + "] f32")) << r.out;
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// `loom bench` end to end on a tiny workload: every strategy runs and is reported (speed itself
// is judged by `loom bench` runs, never here).
TEST(CliBench, CopiesRunsEveryStrategyAndWritesJson) {
  Result r = Loom("bench copies --model " + ModelPath(testing::kBlazeFaceFront) +
                  " --copies 2 --images 3 "
                  "--image " +
                  testing::DataPath("messi5.jpg") + " --reps 1 --warmup 0 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["inferences_per_run"], 6);
  std::vector<std::string> names;
  for (const auto& s : j["strategies"]) {
    names.push_back(s["strategy"]);
    EXPECT_GT(s["throughput"].get<double>(), 0) << s["strategy"];
    EXPECT_GT(s["peak_rss_mb"].get<double>(), 0) << s["strategy"];
  }
  EXPECT_EQ(names, (std::vector<std::string>{"serial", "threads", "threads-all-cores", "processes",
                                             "processes (+start-up)", "shared-pool-serial",
                                             "shared-pool-threads", "loom"}));
  EXPECT_NE(j["verdict"].get<std::string>().find("loom = "), std::string::npos);
  EXPECT_NE(j["plan"].get<std::string>().find("plan: adaptive hint"), std::string::npos);
  // The ideal, measured in every repetition on one core alone and on every core at once, and
  // Loom's fraction of each: that repetition's Loom run over that repetition's passes.
  ASSERT_EQ(j["ideal_throughputs"].size(), 1u);
  ASSERT_EQ(j["busy_ideal_throughputs"].size(), 1u);
  EXPECT_GT(j["ideal_throughput"].get<double>(), 0);
  EXPECT_GT(j["busy_ideal_throughput"].get<double>(), 0);
  const double loom = j["strategies"].back()["throughputs"][0].get<double>();
  EXPECT_NEAR(j["of_ideal"].get<double>(), loom / j["ideal_throughputs"][0].get<double>(), 1e-9);
  EXPECT_NEAR(j["of_busy_ideal"].get<double>(), loom / j["busy_ideal_throughputs"][0].get<double>(),
              1e-9);
  char quoted[64];
  std::snprintf(quoted, sizeof quoted, "%.2f of ideal (%.2f of the busy-cores ideal)",
                j["of_ideal"].get<double>(), j["of_busy_ideal"].get<double>());
  EXPECT_NE(j["verdict"].get<std::string>().find(quoted), std::string::npos) << j["verdict"];
}

// The OCR chain over a page: the three strategies, every page read, and the ideal from the
// models' single-thread costs (a one-core engine's runs) spread over the usable cores.
TEST(CliBench, ChainReportsTheStrategiesAndTheChainsIdeal) {
  Result r = Loom("bench chain --pipeline " + std::string(LOOM_SOURCE_DIR) +
                  "/pipelines/ocr.yaml --input " + testing::DataPath("imageTextN.png") +
                  " --reps 1 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["frames"], 1);
  std::vector<std::string> names;
  for (const auto& s : j["strategies"]) {
    names.push_back(s["strategy"]);
    EXPECT_GT(s["fps"].get<double>(), 0) << s["strategy"];
  }
  EXPECT_EQ(names, (std::vector<std::string>{"sequential", "thread-per-model", "loom"}));
  const double model_ms = j["model_ms_per_frame"].get<double>();
  EXPECT_GT(model_ms, 0);
  EXPECT_NEAR(j["ideal_fps"].get<double>(), j["usable_cores"].get<int>() * 1000.0 / model_ms, 1e-6);
  EXPECT_NE(j["verdict"].get<std::string>().find("of ideal"), std::string::npos);
  // Measured in every repetition: alone on one core, and on every core at once.
  EXPECT_EQ(j["model_ms_runs"].size(), 1u);
  EXPECT_EQ(j["busy_model_ms_runs"].size(), 1u);
  const double busy_ms = j["busy_model_ms_per_frame"].get<double>();
  EXPECT_GT(busy_ms, 0);
  EXPECT_NEAR(j["busy_ideal_fps"].get<double>(), j["usable_cores"].get<int>() * 1000.0 / busy_ms,
              1e-6);
  // Loom's fraction of each ideal, round by round: that round's Loom run over that round's pass.
  ASSERT_EQ(j["of_ideal_runs"].size(), 1u);
  const double loom_fps = j["strategies"][2]["fps_runs"][0].get<double>();
  EXPECT_NEAR(
      j["of_ideal_runs"][0].get<double>(),
      loom_fps * j["model_ms_runs"][0].get<double>() / (j["usable_cores"].get<int>() * 1000.0),
      1e-9);
  EXPECT_NEAR(
      j["of_busy_ideal"].get<double>(),
      loom_fps * j["busy_model_ms_runs"][0].get<double>() / (j["usable_cores"].get<int>() * 1000.0),
      1e-9);
  char quoted[32];
  std::snprintf(quoted, sizeof quoted, "%.2f of ideal", j["of_ideal"].get<double>());
  EXPECT_NE(j["verdict"].get<std::string>().find(quoted), std::string::npos) << j["verdict"];
  // Every node of the chain has its split: own compute, model wait, core wait.
  for (const char* node : {"det", "boxes", "crops", "cls", "upright", "rec", "text"}) {
    EXPECT_TRUE(j["loom_nodes"].contains(node)) << node;
  }
  EXPECT_GT(j["loom_nodes"]["text"]["model_wait_ms"].get<double>(), 0);
}

// A folder job's bench: beside the sequential loop and thread per model, the folder strategies
// (a thread per core over a share of the files, a process per share with and without its
// start-up), and the ideal with the host work in it.
TEST(CliBench, PipelineBenchOverAFolderAddsThreadsAndProcesses) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.Path("in"));
  for (int i = 0; i < 4; ++i) {
    std::filesystem::copy_file(testing::DataPath("messi5.jpg"),
                               dir.Path("in/p" + std::to_string(i) + ".jpg"));
  }
  Result r = Loom("pipeline bench " + std::string(LOOM_SOURCE_DIR) +
                  "/pipelines/detect-folder.yaml --input '" + dir.Path("in") +
                  "/*.jpg' --model det=" + ModelPath("seeded_yolov5n.onnx") +
                  " --set det_in.size=320 --reps 1 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (const auto& s : j["strategies"]) {
    names.push_back(s["strategy"]);
    EXPECT_GT(s["fps"].get<double>(), 0) << s["strategy"];
  }
  const int cores = j["usable_cores"].get<int>();
  if (cores > 1) {
    EXPECT_EQ(names, (std::vector<std::string>{"sequential", "thread-per-model", "threads",
                                               "processes", "processes (with start-up)", "loom"}));
    EXPECT_LT(j["strategies"][4]["fps"].get<double>(), j["strategies"][3]["fps"].get<double>())
        << "start-up is part of the second";
  }
  const double full_ms = j["full_ms_per_frame"].get<double>();
  EXPECT_GT(full_ms, j["model_ms_per_frame"].get<double>())
      << "the whole time holds the models' and more";
  EXPECT_NEAR(j["full_ideal_fps"].get<double>(), cores * 1000.0 / full_ms, 1e-6);
  EXPECT_NE(j["verdict"].get<std::string>().find("with host work in the ideal"), std::string::npos);
}

// Chrome trace-event JSON: a named track per worker, a span per run whose rows add up to the
// timed repetition's inferences, a queue-wait span pair per request.
TEST(CliTrace, BenchCopiesTracesLoomsRuns) {
  testing::ScratchDir dir;
  Result r = Loom("bench copies --model " + ModelPath(testing::kBlazeFaceFront) +
                  " --copies 2 --images 3 "
                  "--image " +
                  testing::DataPath("messi5.jpg") +
                  " --reps 1 --warmup 0 --strategies serial "
                  "--trace " +
                  dir.Path("trace.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto trace = nlohmann::json::parse(testing::ReadFile(dir.Path("trace.json")));
  int rows = 0, queue_begins = 0, queue_ends = 0, worker_tracks = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name" && Contains(e["args"]["name"], "worker "))
      ++worker_tracks;
    if (e.value("cat", "") == "run") {
      rows += e["args"]["rows"].get<int>();
      EXPECT_GE(e["dur"].get<double>(), 0);
    }
    if (e.value("cat", "") == "queue") (e["ph"] == "b" ? queue_begins : queue_ends) += 1;
  }
  EXPECT_EQ(rows, 6) << "2 copies x 3 images";
  EXPECT_EQ(queue_begins, 6);
  EXPECT_EQ(queue_ends, 6);
  EXPECT_GE(worker_tracks, 1);
}

TEST(CliTrace, PipelineRunTracesEveryNodeOfEveryFrame) {
  testing::ScratchDir dir;
  Result r = Loom("pipeline run " + testing::SourcePath("pipelines/faces.yaml") + " --input " +
                  testing::DataPath("Megamind.avi") + " --limit 3 --output " + dir.Path("out") +
                  " --trace " + dir.Path("trace.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto trace = nlohmann::json::parse(testing::ReadFile(dir.Path("trace.json")));
  std::map<std::string, std::set<int>> frames_by_node;
  int runs = 0;
  double first_node = 1e300, first_run = 1e300;
  for (const auto& e : trace["traceEvents"]) {
    if (e.value("cat", "") == "node") {
      frames_by_node[e["name"]].insert(e["args"]["frame"].get<int>());
      first_node = std::min(first_node, e["ts"].get<double>());
    }
    if (e.value("cat", "") == "run") {
      ++runs;
      first_run = std::min(first_run, e["ts"].get<double>());
    }
  }
  for (const char* node : {"face_in", "face", "faces"}) {
    EXPECT_EQ(frames_by_node[node], (std::set<int>{0, 1, 2})) << node;
  }
  EXPECT_EQ(runs, 3) << "one model run per frame";
  // One clock: the first model run starts after the first node began, within the run's seconds.
  EXPECT_GE(first_run, first_node);
  EXPECT_LT(first_run - first_node, 60e6);
}

// `loom bench load` end to end on a short run: every plan at each level, and the ideals (alone
// and with every core busy) in the verdict.
TEST(CliBench, LoadReportsEveryPlanAndBothIdeals) {
  Result r = Loom("bench load --model " + ModelPath(testing::kBlazeFaceFront) + " --image " +
                  testing::DataPath("messi5.jpg") +
                  " --clients 1,2 --rates 0.5 --seconds 0.2 --reps 1 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["levels"].size(), 3u);
  for (const auto& level : j["levels"]) {
    for (const char* plan : {"latency", "throughput", "adaptive"}) {
      EXPECT_GT(level["plans"][plan]["throughput"].get<double>(), 0)
          << level["loop"] << " " << plan;
    }
  }
  const double ideal = j["ideal"].get<double>(), busy = j["busy_ideal"].get<double>();
  EXPECT_GT(ideal, 0);
  EXPECT_GT(busy, 0);
  const double adaptive = j["levels"][1]["plans"]["adaptive"]["throughput"].get<double>();
  char quoted[64];
  std::snprintf(quoted, sizeof quoted, "%.2f of ideal (%.2f of the busy-cores ideal)",
                adaptive / ideal, adaptive / busy);
  EXPECT_NE(j["verdict"].get<std::string>().find(quoted), std::string::npos) << j["verdict"];
}

TEST(CliBench, FanoutSweepAddsEveryStaticLayout) {
  Result r =
      Loom("bench fanout --model " + ModelPath(testing::kBlazeFaceFront) + " --model " +
           ModelPath(testing::kOcrCls) + " --video " + testing::DataPath("Megamind.avi") +
           " --frames 2 --size 192x48 --reps 1 --warmup 0 --sweep --strategies serial --csv -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "strategy,throughput,")) << r.out;
  EXPECT_TRUE(Contains(r.out, "\nserial,")) << r.out;
  EXPECT_TRUE(Contains(r.out, "\nloom,")) << r.out;
  EXPECT_TRUE(Contains(r.out, "\nstatic 1x1 nospin,")) << r.out;
  EXPECT_TRUE(Contains(r.out, "\nstatic 1x1 spin,")) << r.out;
  EXPECT_FALSE(Contains(r.out, "\nthreads,")) << "--strategies limits the naive ones";
}

TEST(CliBench, OverheadReportsBothPaths) {
  Result r = Loom("bench overhead --runs 200 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["runs"], 200);
  EXPECT_GT(j["bare_p50_us"].get<double>(), 0);
  EXPECT_GT(j["engine_p50_us"].get<double>(), 0);
}

TEST(CliBench, BadModelFailsWithTheMessage) {
  Result r = Loom("bench copies --model /nonexistent.onnx --image " +
                  testing::DataPath("messi5.jpg") + " --reps 1 --warmup 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "loom bench: model file '/nonexistent.onnx' does not exist"))
      << r.err;
  r = Loom("bench fanout --video /nonexistent.avi --reps 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "video '/nonexistent.avi' cannot be opened")) << r.err;
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// One name per idea: --reps for repetitions, --images for image files, --count for how many, the
// unit in a timed flag's name; the unlisted aliases parse into the same values.
TEST(CliVocabulary, OneNamePerIdeaAndTheUnlistedAliasesWork) {
  const std::string run_help = Loom("run --help").out;
  EXPECT_TRUE(Contains(run_help, "--reps")) << run_help;
  EXPECT_FALSE(Contains(run_help, "--repeat")) << run_help;
  const std::string copies_help = Loom("bench copies --help").out;
  EXPECT_TRUE(Contains(copies_help, "--count")) << copies_help;
  EXPECT_TRUE(Contains(copies_help, "--images")) << copies_help;
  EXPECT_FALSE(Contains(copies_help, "--image ")) << copies_help;
  const std::string serve_help = Loom("serve --help").out;
  EXPECT_TRUE(Contains(serve_help, "--drain-timeout-s")) << serve_help;
  EXPECT_TRUE(Contains(serve_help, "--drain-delay-s")) << serve_help;
  EXPECT_FALSE(Contains(serve_help, "--drain-timeout ")) << serve_help;

  for (const char* reps : {"--reps", "--repeat"}) {
    Result r =
        Loom("run " + ModelPath(testing::kBlazeFaceFront) + " --random --threads 1 " + reps + " 2");
    EXPECT_EQ(r.exit_code, 0) << reps << ": " << r.err;
    EXPECT_TRUE(Contains(r.out, "over 2 runs")) << reps << ": " << r.out;
  }
  for (const char* reps : {"--reps", "--runs"}) {
    Result r = Loom(std::string("bench overhead --cores 1 --json - ") + reps + " 200");
    ASSERT_EQ(r.exit_code, 0) << reps << ": " << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["runs"], 200) << reps;
  }
  Result r = Loom("bench copies --model " + ModelPath(testing::kBlazeFaceFront) +
                  " --copies 2 --count 3 --images " + testing::DataPath("messi5.jpg") +
                  " --reps 1 --warmup 0 --strategies serial --json -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["inferences_per_run"], 6);
}

TEST(CliBench, AnUnknownStrategyIsRefusedWithTheKnownOnes) {
  Result r = Loom("bench copies --strategies serial,nosuch --reps 1");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Contains(r.err, "unknown strategy 'nosuch'")) << r.err;
  EXPECT_TRUE(Contains(r.err, "known: serial, threads, threads-all-cores, processes")) << r.err;
}

TEST(CliPipeline, NodesListsEveryNodeType) {
  Result r = Loom("pipeline nodes");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* type : {"preprocess\n", "infer\n", "ctc\n", "yolo\n"}) {
    EXPECT_TRUE(Contains(r.out, type)) << type << r.out;
  }
}

TEST(CliPipeline, RunWritesRecordsInOrderAndPrintsASummary) {
  ScratchDir out;
  Result r = Loom("pipeline run " + testing::SourcePath("pipelines/faces.yaml") + " --input " +
                  testing::DataPath("Megamind.avi") + " --limit 5 --output " + out.Path("o"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "5 frames in")) << r.err;
  EXPECT_TRUE(Contains(r.err, "frames 5/5")) << r.err;
  EXPECT_TRUE(Contains(r.err, "plan: adaptive hint")) << r.err;
  EXPECT_TRUE(Contains(r.err, "Loom's own threads: pre/post-processing")) << r.err;
  std::istringstream lines(testing::ReadFile(out.Path("o/faces.jsonl")));
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["frame"], n);
    EXPECT_TRUE(j.contains("faces") && j.contains("timings_ms")) << line;
  }
  EXPECT_EQ(n, 5);
  EXPECT_TRUE(std::filesystem::exists(out.Path("o/faces.avi")));
  EXPECT_TRUE(std::filesystem::exists(out.Path("o/faces/frame_000004.jpg")));
}

TEST(CliPipeline, FailingFramesMakeTheRunExitOneAfterWritingEverything) {
  ScratchDir in, out;
  std::filesystem::copy_file(testing::DataPath("messi5.jpg"), in.Path("a.jpg"));
  in.Write("b.jpg", "broken");
  Result r = Loom("pipeline run " + testing::SourcePath("pipelines/faces.yaml") + " --input " +
                  in.Path("") + " --output " + out.Path("o"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(Contains(r.err, "2 frames in")) << r.err;
  EXPECT_TRUE(Contains(r.err, "1 failed")) << r.err;
  EXPECT_TRUE(Contains(r.err, "b.jpg' cannot be decoded")) << r.err;
  const std::string records = testing::ReadFile(out.Path("o/faces.jsonl"));
  EXPECT_EQ(std::count(records.begin(), records.end(), '\n'), 2);
}

TEST(CliPipeline, UsageAndLoadErrors) {
  Result r = Loom("pipeline");
  EXPECT_EQ(r.exit_code, 2);
  r = Loom("pipeline run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Contains(r.err, "FILE is required")) << r.err;
  r = Loom("pipeline run /nonexistent.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "pipeline file '/nonexistent.yaml' cannot be read")) << r.err;
  EXPECT_EQ(Loom("pipeline bench --help").exit_code, 0);
}

// Every command that reads YAML, under broken YAML: exit 1 and FILE:LINE:COLUMN, never an abort.
TEST(CliPipeline, EveryYamlCommandReportsBadYamlWithItsPosition) {
  ScratchDir dir;
  const std::string head = "models:\n  - {name: face, path: " + ModelPath(testing::kBlazeFaceBack) +
                           "}\nsource: {path: " + testing::DataPath("messi5.jpg") + "}\n";
  const std::string nodes =
      "nodes:\n  - {name: face_in, type: preprocess, model: face}\n"
      "  - {name: face, type: infer, model: face, input: face_in}\n";
  struct Case {
    std::string yaml, message;
  };
  for (const Case& c : std::vector<Case>{
           {head + nodes + "sinks: [jsonl]\n", "p.yaml:7:9: a sink must be a mapping"},
           {head + nodes + "sinks:\n  - jsonl\n  - text\n", "p.yaml:8:5: a sink must be a mapping"},
           {head + "nodes:\n  - {name: fi, type: preprocess, model: face, sise: 3}\n",
            "p.yaml:5:47: node 'fi': unknown key 'sise' in the node; did you mean 'size'?"},
           {head + nodes + "in_flight: lots\n",
            "p.yaml:7:12: 'in_flight' must be an integer in [1, 64], got 'lots'"},
           {head + "nodes: {a: 1}\n",
            "p.yaml:4:8: 'nodes' must be a non-empty list, got a mapping"},
           {"models: [\n", "p.yaml:2:1: "},
           {"\t- tab\n", "p.yaml:1:"},
           {"models:\n  - {name: x, path: " + ModelPath(testing::kBlazeFaceBack) +
                ", instances: 99999999999999999999}\n",
            "'instances' must be an integer in [1, 4096] or 'auto'"},
       }) {
    SCOPED_TRACE(c.yaml);
    const std::string path = dir.Write("p.yaml", c.yaml);
    for (const std::string& command :
         {"pipeline run --output " + dir.Path("o"), std::string("pipeline bench")}) {
      SCOPED_TRACE(command);
      Result r = Loom(command + " " + path);
      EXPECT_EQ(r.exit_code, 1) << r.err;
      EXPECT_TRUE(Contains(r.err, c.message)) << r.err;
    }
  }
}

}  // namespace
}  // namespace loom
