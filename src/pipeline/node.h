// A pipeline node: one step of the per-frame graph (preprocess, infer, postprocess, crop fan-out).
//
// Lifecycle: built once from its YAML entry by its factory (which checks its parameters — every
// key known, every value typed and bounded — and the types and shapes of its inputs against what
// earlier nodes produce, and declares its own output), then Process is called once per frame.
// Threading: Process is const and may run on several frames at once from different threads; a
// node keeps no per-frame state of its own. It runs on a core leased from the engine's plan, and
// waits for models only through NodeContext::Await, which gives the core back while it waits.
// An exception from Process fails that frame only (the executor records it).
//
// Adding a node type: see docs/design.md ("Adding a pipeline node").
#ifndef LOOM_PIPELINE_NODE_H_
#define LOOM_PIPELINE_NODE_H_

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/yaml_reader.h"
#include "loom/engine.h"
#include "pipeline/value.h"

namespace loom::pipeline {

// Whether a model runs rows of one shape faster together than one at a time: measured like the
// engine's auto max_batch_size (a batch of 1 and a batch of `probe_rows`, each run once to warm
// up and then timed, one measurement at a time, on the engine's workers), once per model and row
// shape. The decision is this machine's: on another, rows may share requests that here run alone
// (a row's result is the same either way up to float rounding).
struct RowBatching {
  std::string model;
  Shape row_shape;  // without dim 0
  int probe_rows = 0;
  double ms_per_row_alone = 0;  // the timed runs
  double ms_per_row_batched = 0;
  int rows_per_request = 1;  // the decision: 1 = every row its own request
  std::string note;          // why, when not measured (a model without a batch dim, an error)
};

// The decision from the measured figures: `probe_rows` rows share a request when a row costs at
// most 0.8 of its cost alone (as the engine's auto max_batch_size); otherwise 1. Not measured
// (probe_rows 0): 1.
int DecideRowsPerRequest(const RowBatching& measured);

// Runs models for the nodes: the Engine, or the naive strategies of `pipeline bench`.
class InferenceService {
 public:
  virtual ~InferenceService() = default;
  virtual const ModelInfo* FindModel(const std::string& model) const = 0;
  // Starts a run; the future holds the outputs (model order) or the error.
  virtual PendingOutputs Submit(const std::string& model, NamedTensors inputs) = 0;
  // How many rows of `row_shape` (a request's shape without dim 0) go in one request of the model:
  // 0 for no limit (the naive strategies send a fan-out as one request). The engine's service
  // measures it (see RowBatching) on first sight of the shape and caches it; Known… asks the
  // cache only.
  virtual std::optional<int> KnownRowsPerRequest(const std::string& model,
                                                 const Shape& row_shape) const {
    (void)model, (void)row_shape;
    return 0;
  }
  virtual int RowsPerRequest(const std::string& model, const Shape& row_shape) {
    return KnownRowsPerRequest(model, row_shape).value_or(0);
  }
  // The measured decisions so far, for the report.
  virtual std::vector<RowBatching> RowBatchings() const { return {}; }
  // A core for the calling thread's own work (the engine's lease; the naive strategies run
  // unplanned and lease nothing: an empty lease).
  virtual absl::StatusOr<CoreLease> Lease() { return CoreLease(); }
  virtual Engine* engine() { return nullptr; }
};

// What a node sees of the frame's run besides the frame: the models, and the one way to wait for
// them (the frame's core is given up while it waits, and the time is counted as model wait).
class NodeContext {
 public:
  virtual ~NodeContext() = default;
  virtual PendingOutputs Submit(const std::string& model, NamedTensors inputs) = 0;
  virtual const ModelInfo* FindModel(const std::string& model) const = 0;
  // See InferenceService::RowsPerRequest; a measurement gives up the frame's core while it runs.
  virtual int RowsPerRequest(const std::string& model, const Shape& row_shape) = 0;
  virtual absl::StatusOr<NamedTensors> Await(const PendingOutputs& outputs) = 0;
};

class Node {
 public:
  virtual ~Node() = default;
  // Reads its inputs from `frame.values`, writes its output under name(). An error fails this
  // frame only.
  virtual absl::Status Process(Frame& frame, NodeContext& context) const = 0;
  const std::string& name() const { return name_; }

 protected:
  explicit Node(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

// What the graph knows about a value at build time.
struct ValueSpec {
  ValueSpec(ValueType t = ValueType::kImage, std::optional<Shape> s = std::nullopt,
            std::string p = "")
      : type(t), shape(std::move(s)), producer(std::move(p)) {}
  ValueType type = ValueType::kImage;
  std::optional<Shape> shape;  // tensors: the exact shape, when it does not vary per frame
  std::string producer;        // node name ("image" for the source)
  // Fan-out tensors: the row shapes (without dim 0) a frame's rows are bucketed into, smallest
  // first, when known at build time: infer nodes measure row batching on them at load, and a
  // row takes the decision of the first class at least as large.
  std::vector<Shape> row_classes;
};

// Everything a factory may consult, and where errors point (build_context.cc).
class BuildContext {
 public:
  BuildContext(std::string file, std::string base_dir, const InferenceService* models)
      : file_(std::move(file)), base_dir_(std::move(base_dir)), models_(models) {}

  // Reads the node's parameters: errors say "FILE:LINE:COL: node 'NAME': ...".
  YamlReader Reader(const std::string& node) const {
    return YamlReader(file_, "node '" + node + "': ");
  }
  // The node's keys must all be known (`name` and `type` always are).
  absl::Status Keys(const YAML::Node& params, const std::string& node,
                    std::vector<std::string> known) const;
  // "FILE:LINE:COL: node 'NAME': MESSAGE" for the YAML node `at`.
  absl::Status Error(const YAML::Node& at, const std::string& node,
                     const std::string& message) const;
  // The value named by `params[port]` (default: the frame, for images), which must exist and be
  // of `type`.
  absl::StatusOr<ValueSpec> Input(const YAML::Node& params, const std::string& node,
                                  const std::string& port, ValueType type) const {
    return Input(params, node, port, std::vector<ValueType>{type});
  }
  // The same, for a port that takes any of `types` (the first is the default's type).
  absl::StatusOr<ValueSpec> Input(const YAML::Node& params, const std::string& node,
                                  const std::string& port,
                                  const std::vector<ValueType>& types) const;
  // The value named `value` (a node's name), which must exist and be of `type`; `at` for errors.
  absl::StatusOr<ValueSpec> Value(const YAML::Node& at, const std::string& node,
                                  const std::string& value, ValueType type) const;
  std::string Path(const std::string& relative) const;  // resolved against the YAML's folder
  // Class names under `params[key]`: a list of strings, or a file (one name per line); none when
  // the key is absent.
  absl::StatusOr<std::vector<std::string>> Labels(const YAML::Node& params, const std::string& node,
                                                  const std::string& key = "labels") const;
  const ModelInfo* Model(const std::string& name) const { return models_->FindModel(name); }

  void Declare(const std::string& name, ValueSpec spec) { values_[name] = std::move(spec); }
  // A request of the shapes the graph will send `model`, for the engine's plan and warm-up.
  void AddWarmup(const std::string& model, NamedTensors inputs) {
    warmups_[model] = std::move(inputs);
  }
  const std::map<std::string, NamedTensors>& warmups() const { return warmups_; }
  // Row shapes to measure row batching on at load (see RowBatching).
  void AddRowClasses(const std::string& model, const std::vector<Shape>& shapes) {
    for (const Shape& s : shapes) row_classes_[model].push_back(s);
  }
  const std::map<std::string, std::vector<Shape>>& row_classes() const { return row_classes_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }

 private:
  std::string file_, base_dir_;
  const InferenceService* models_;
  std::map<std::string, ValueSpec> values_;
  std::map<std::string, NamedTensors> warmups_;
  std::map<std::string, std::vector<Shape>> row_classes_;
};

using NodeFactory = std::function<absl::StatusOr<std::unique_ptr<Node>>(
    const std::string& name, const YAML::Node& params, BuildContext& context)>;

// Node types by name (registry.cc). Unknown: nullptr.
const NodeFactory* FindNodeType(const std::string& type);
std::vector<std::string> NodeTypeNames();

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_NODE_H_
