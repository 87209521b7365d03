// Hostile input, seeded and bounded: mutated model files, configs, pipelines, images and tensors
// fed to the runtime, the engine, pipelines and the CLI. The only acceptable outcomes are success
// or a clear error (a non-empty message naming the culprit); a crash, a hang or a sanitizer report
// fails the suite. Runs under ASan+UBSan in CI.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "loom/engine.h"
#include "loom/pipeline.h"
#include "onnx/onnx_pb.h"
#include "runtime/synthetic_models.h"
#include "runtime/warmup_inputs.h"
#include "tests/test_util.h"
#include "vision/blob.h"

namespace loom {
namespace {

using testing::ScratchDir;

// How many mutants of each kind (a longer run: LOOM_HOSTILE_SCALE=10).
int Scale() {
  const char* s = std::getenv("LOOM_HOSTILE_SCALE");
  return s ? std::max(1, std::atoi(s)) : 1;
}

std::string Mutate(std::string bytes, std::mt19937& rng) {
  if (bytes.empty()) return bytes;
  switch (rng() % 5) {
    case 0:  // truncate
      bytes.resize(rng() % bytes.size());
      break;
    case 1:  // flip a few bytes
      for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i)
        bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
      break;
    case 2: {  // overwrite a run with one value
      const size_t at = rng() % bytes.size(),
                   n = std::min<size_t>(bytes.size() - at, 1 + rng() % 64);
      std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(at), n,
                  static_cast<char>(rng() % 256));
      break;
    }
    case 3: {  // insert random bytes
      std::string junk(1 + rng() % 32, '\0');
      for (char& c : junk) c = static_cast<char>(rng() % 256);
      bytes.insert(rng() % bytes.size(), junk);
      break;
    }
    default:  // duplicate a slice
      const size_t at = rng() % bytes.size(),
                   n = std::min<size_t>(bytes.size() - at, 1 + rng() % 256);
      const std::string slice(bytes.data() + at, n);
      bytes.insert(at, slice);
  }
  return bytes;
}

// A model whose declared sizes are hostile but whose protobuf is well formed.
std::string StructuralMutant(const std::string& valid, std::mt19937& rng) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(valid));
  auto* graph = model.mutable_graph();
  const int64_t values[] = {-7,       0, 1, 3, int64_t{1} << 31, int64_t{1} << 40, int64_t{1} << 62,
                            INT64_MAX};
  switch (rng() % 4) {
    case 0:  // a dim of an input or output
      for (auto* v : {graph->mutable_input(0), graph->mutable_output(0)}) {
        auto* shape = v->mutable_type()->mutable_tensor_type()->mutable_shape();
        if (shape->dim_size() > 0)
          shape->mutable_dim(static_cast<int>(rng() % shape->dim_size()))
              ->set_dim_value(values[rng() % 8]);
      }
      break;
    case 1:  // an element type Loom does not know
      graph->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
          static_cast<int>(rng() % 40));
      break;
    case 2:  // rank far above anything real
      for (int i = 0; i < 40; ++i)
        graph->mutable_input(0)
            ->mutable_type()
            ->mutable_tensor_type()
            ->mutable_shape()
            ->add_dim()
            ->set_dim_value(2);
      break;
    default:  // an initializer's dims lie about its data
      if (graph->initializer_size() > 0)
        graph->mutable_initializer(0)->set_dims(0, values[rng() % 8]);
  }
  return model.SerializeAsString();
}

// Loads and runs whatever the file turned out to be; every failure must be a message.
void LoadAndRun(const std::string& path, Backend backend) {
  SessionOptions options;
  options.backend = backend;
  options.intra_op_threads = 1;
  auto session = CreateSession(path, options);
  if (!session.ok()) {
    EXPECT_FALSE(session.status().message().empty());
    return;
  }
  TensorLimits small;
  small.max_bytes = int64_t{64} << 20;  // keep mutants from asking for gigabytes
  auto inputs = RandomInputs((*session)->info(), ShapeSpec{.height = 64, .width = 64}, 1, small);
  if (!inputs.ok()) {
    EXPECT_FALSE(inputs.status().message().empty());
    return;
  }
  auto outputs = (*session)->Run(*inputs);
  if (!outputs.ok()) {
    EXPECT_FALSE(outputs.status().message().empty());
  }
}

TEST(Hostile, MutatedModelFilesAreErrorsNotCrashes) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 8).ok());
  const std::vector<std::string> seeds = {
      testing::ReadFile(testing::ModelPath(testing::kBlazeFaceFront)),
      testing::ReadFile(dir.Path("add.onnx"))};
  std::mt19937 rng(20261123);
  int errors = 0;
  for (int i = 0; i < 40 * Scale(); ++i) {
    const std::string& seed = seeds[static_cast<size_t>(i) % seeds.size()];
    const std::string bytes = i % 4 == 3 ? StructuralMutant(seed, rng) : Mutate(seed, rng);
    const std::string path = dir.Write("mutant.onnx", bytes);
    SCOPED_TRACE(i);
    auto info = ReadModelInfo(path);
    if (!info.ok()) {
      ++errors;
      EXPECT_NE(info.status().message().find(path), std::string::npos) << info.status();
      continue;
    }
    LoadAndRun(path, i % 5 == 0 ? Backend::kOpenCv : Backend::kOnnxRuntime);
  }
  EXPECT_GT(errors, 0) << "most mutants are refused when read";
}

TEST(Hostile, MutatedModelsThroughTheEngineAndTheCli) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 8).ok());
  const std::string seed = testing::ReadFile(dir.Path("add.onnx"));
  std::mt19937 rng(7);
  for (int i = 0; i < 12 * Scale(); ++i) {
    SCOPED_TRACE(i);
    const std::string bytes = i % 2 ? StructuralMutant(seed, rng) : Mutate(seed, rng);
    const std::string path = dir.Path(absl::StrCat("m", i, ".onnx"));
    std::ofstream(path, std::ios::binary) << bytes;
    auto engine =
        Engine::Create({{.name = "m", .path = path}}, EngineOptions{.cores = 1, .measure_runs = 1});
    if (!engine.ok()) {
      EXPECT_NE(engine.status().message().find("model 'm'"), std::string::npos) << engine.status();
    }
    for (const std::string& args :
         {"info " + path, "run " + path + " --random --repeat 1 --size 64x64"}) {
      const int status =
          std::system((std::string(LOOM_BINARY) + " " + args + " >/dev/null 2>&1").c_str());
      ASSERT_TRUE(WIFEXITED(status)) << args << ": killed by signal " << WTERMSIG(status);
      EXPECT_LE(WEXITSTATUS(status), 1) << args;
    }
  }
}

TEST(Hostile, MutatedEngineConfigsAndPipelinesAreErrorsAtTheirPosition) {
  ScratchDir dir;
  const std::string face = testing::ModelPath(testing::kBlazeFaceFront);
  const std::string config =
      "cores: 1\nhint: adaptive\nmeasure_runs: 1\nmodels:\n  - name: face\n    path: " + face +
      "\n    max_batch_size: 1\n    queue_capacity: 16\n    default_timeout_us: 100000\n";
  const std::string pipeline =
      "models:\n  - {name: face, path: " + face +
      "}\nsource: {path: " + testing::DataPath("messi5.jpg") +
      ", limit: 1}\nin_flight: 2\nnodes:\n"
      "  - {name: face_in, type: preprocess, model: face, scale: 0.0078431, mean: 127.5}\n"
      "  - {name: face, type: infer, model: face, input: face_in}\n"
      "  - {name: faces, type: blazeface, input: face, model: face, threshold: 0.5}\n"
      "sinks: [{type: jsonl, path: out.jsonl}]\n";
  std::mt19937 rng(11);
  const char* tokens[] = {"-1",       "0",       "99999999999999999999",
                          "1e308",    ".nan",    "[",
                          "]",        "{",       "}",
                          ":",        "auto",    "~",
                          "'",        "\"",      "\t",
                          "\n  - ",   "&a",      "*a",
                          "!!binary", "\xff\xfe"};
  int loaded = 0;
  for (int i = 0; i < 30 * Scale(); ++i) {
    SCOPED_TRACE(i);
    std::string text = i % 2 ? pipeline : config;
    for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k) {
      const size_t at = rng() % text.size();
      if (rng() % 2) {
        text.insert(at, tokens[rng() % std::size(tokens)]);
      } else {
        text.erase(at, 1 + rng() % 6);
      }
    }
    const std::string path = dir.Write("c.yaml", text);
    if (i % 2) {
      auto p = Pipeline::Load(path, {.output_dir = dir.Path("out"), .cores = 1});
      if (!p.ok()) {
        EXPECT_FALSE(p.status().message().empty());
        continue;
      }
      ++loaded;
      auto run = (*p)->Run();
      if (!run.ok()) {
        EXPECT_FALSE(run.status().message().empty());
      }
    } else {
      auto c = LoadEngineConfig(path);
      if (!c.ok()) {
        EXPECT_NE(c.status().message().find(path), std::string::npos) << c.status();
        continue;
      }
      ++loaded;
      auto engine = Engine::Create(c->models, c->options);
      if (!engine.ok()) {
        EXPECT_FALSE(engine.status().message().empty());
      }
    }
  }
  EXPECT_LT(loaded, 30 * Scale()) << "most mutants are refused";
}

TEST(Hostile, MutatedImagesAreDecodeErrorsOrFrames) {
  const std::vector<std::string> seeds = {testing::ReadFile(testing::DataPath("messi5.jpg")),
                                          testing::ReadFile(testing::DataPath("imageTextN.png"))};
  auto p =
      Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"), {.cores = 1, .sinks = false});
  ASSERT_TRUE(p.ok()) << p.status();
  std::mt19937 rng(3);
  int submitted = 0;
  for (int i = 0; i < 30 * Scale(); ++i) {
    const std::string bytes = Mutate(seeds[static_cast<size_t>(i) % seeds.size()], rng);
    auto index = (*p)->SubmitEncoded(bytes, "mutant" + std::to_string(i));
    if (index.ok()) {
      ++submitted;
    } else {
      EXPECT_NE(index.status().message().find("cannot be decoded"), std::string::npos)
          << index.status();
    }
  }
  (*p)->Finish();
  int records = 0;
  while (auto r = (*p)->Next(true)) ++records;
  EXPECT_EQ(records, submitted);
}

TEST(Hostile, RandomTensorsAreRefusedBeforeTheyAreRead) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 0).ok());
  ModelConfig add{.name = "add", .path = dir.Path("add.onnx")};
  add.max_batch_size = 8;
  // Limits as small as the one buffer every tensor points at: a shape that passes them fits it.
  EngineOptions options{.cores = 1, .measure_runs = 1};
  options.limits.max_bytes = 1 << 20;
  options.max_request_bytes = 1 << 20;
  auto engine = Engine::Create(
      {add, {.name = "face", .path = testing::ModelPath(testing::kBlazeFaceFront)}}, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::mt19937 rng(5);
  const int64_t dims[] = {
      -5, -1, 0, 1, 2, 3, 4, 128, int64_t{1} << 31, int64_t{1} << 40, int64_t{1} << 62, INT64_MAX};
  const DType dtypes[] = {DType::kFloat32, DType::kInt64,   DType::kUInt8,
                          DType::kFloat16, DType::kUnknown, DType::kBool};
  std::vector<char> scratch(1 << 20);  // every tensor points here; a valid one is never larger
  int ok = 0;
  for (int i = 0; i < 300 * Scale(); ++i) {
    Shape shape(rng() % 11);
    for (int64_t& d : shape) d = dims[rng() % std::size(dims)];
    const DType dtype = dtypes[rng() % std::size(dtypes)];
    const std::string model = rng() % 2 ? "add" : "face";
    const std::string name = rng() % 4 == 0 ? "nope" : (model == "add" ? "x" : "input:0");
    // Only shapes the limits pass and that fit the scratch buffer may point at it; others
    // claim more memory than exists and must be refused on their shape alone.
    auto count = CheckedElementCount(dtype, shape, options.limits);
    const bool fits =
        count.ok() && *count * static_cast<int64_t>(std::max<size_t>(DTypeSize(dtype), 1)) <=
                          static_cast<int64_t>(scratch.size());
    NamedTensors inputs = {{name, Tensor::Borrow(dtype, shape, scratch.data())}};
    if (rng() % 5 == 0) inputs.push_back(inputs[0]);  // the same input twice
    auto r = (*engine)->Infer(model, inputs);
    if (r.ok()) {
      ++ok;
      EXPECT_TRUE(fits);
    } else {
      EXPECT_FALSE(r.status().message().empty());
    }
  }
  EXPECT_GT((*engine)->Stats("add")->rejected + (*engine)->Stats("face")->rejected, 200 * Scale());
  (void)ok;
}

}  // namespace
}  // namespace loom
