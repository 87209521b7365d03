#include <gtest/gtest.h>

#include "loom/engine.h"
#include "tests/test_util.h"

namespace loom {
namespace {

TEST(EngineConfig, ReadsYamlWithAutoAndNumbers) {
  testing::ScratchDir dir;
  const std::string path = dir.Write("engine.yaml", R"(cores: 1
hint: latency
models:
  - name: text
    path: models/ch_PP-OCRv4_det_infer.onnx
    instances: auto
    max_batch_size: 4
    preferred_batch_sizes: [2, 4]
    max_queue_delay_us: 800
    queue_capacity: 16
    default_timeout_us: 100000
    weight: 2
  - path: /abs/face.onnx
    instances: 2
    threads: 1
)");
  auto config = LoadEngineConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->options.cores, 1);
  EXPECT_EQ(config->options.hint, PlanHint::kLatency);
  ASSERT_EQ(config->models.size(), 2u);
  const ModelConfig& text = config->models[0];
  EXPECT_EQ(text.path, dir.Path("models/ch_PP-OCRv4_det_infer.onnx")) << "relative to the file";
  EXPECT_FALSE(text.instances.has_value());
  EXPECT_EQ(text.max_batch_size, 4);
  EXPECT_EQ(text.preferred_batch_sizes, (std::vector<int>{2, 4}));
  EXPECT_EQ(text.max_queue_delay_us, 800);
  EXPECT_EQ(text.queue_capacity, 16);
  EXPECT_EQ(text.default_timeout_us, 100000);
  EXPECT_EQ(text.weight, 2.0);
  EXPECT_EQ(config->models[1].instances, 2);
  EXPECT_EQ(config->models[1].path, "/abs/face.onnx");
}

TEST(EngineConfig, JsonIsAccepted) {
  testing::ScratchDir dir;
  const std::string path =
      dir.Write("engine.json", R"({"models": [{"name": "a", "path": "/m.onnx", "threads": 2}]})");
  auto config = LoadEngineConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->models[0].threads, 2);
}

TEST(EngineConfig, ErrorsGiveLineColumnAndKey) {
  testing::ScratchDir dir;
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : {
           Case{"models:\n  - path: a.onnx\n    instnaces: 2\n",
                ":3:5: unknown key 'instnaces' in a model; did you mean 'instances'? (known: "
                "backend, "
                "default_timeout_us, instances, max_batch_size, max_queue_delay_us, name, path, "
                "preferred_batch_sizes, queue_capacity, threads, weight)"},
           Case{"models:\n  - path: a.onnx\n    threads: many\n",
                ":3:14: 'threads' must be an integer in [1, 4096] or 'auto', got 'many'"},
           Case{"models:\n  - path: a.onnx\n    threads: 99999999999999999999999\n",
                ":3:14: 'threads' must be an integer in [1, 4096] or 'auto'"},
           Case{"models:\n  - path: a.onnx\n    queue_capacity: 4294967297\n",
                ":3:21: 'queue_capacity' must be an integer in [1, 1048576] or 'auto', got "
                "'4294967297'"},
           Case{"models:\n  - path: a.onnx\n    default_timeout_us: 9223372036854775807\n",
                ":3:25: 'default_timeout_us' must be an integer in [1, 3600000000] or 'auto'"},
           Case{"models:\n  - path: a.onnx\n    weight: .nan\n",
                ":3:13: 'weight' must be a number in"},
           Case{"models:\n  - name: x\n", ":2:5: a model needs 'path'"},
           Case{"models: []\n", ":1:9: 'models' must be a non-empty list, got an empty list"},
           Case{"models: [a.onnx]\n", ":1:10: a model must be a mapping, got 'a.onnx'"},
           Case{"models: a.onnx\n", ":1:9: 'models' must be a non-empty list, got 'a.onnx'"},
           Case{"hint: fast\nmodels:\n  - path: a.onnx\n",
                ":1:7: 'hint' must be one of adaptive, throughput, latency, got 'fast'"},
           Case{"hnt: latency\nmodels:\n  - path: a.onnx\n",
                ":1:1: unknown key 'hnt' in the file; did you mean 'hint'?"},
           Case{"- models\n", ":1:1: the file must be a mapping, got a list"},
           Case{"models:\n  - path: [a\n", ":3:1: "},
       }) {
    SCOPED_TRACE(c.text);
    const std::string path = dir.Write("bad.yaml", c.text);
    auto config = LoadEngineConfig(path);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().message().substr(0, path.size()), path);
    EXPECT_NE(config.status().message().find(c.message), std::string::npos) << config.status();
  }
  EXPECT_EQ(LoadEngineConfig(dir.Path("none.yaml")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loom
