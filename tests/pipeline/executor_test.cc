// The executor on its own, with test nodes: order, bounded frames in flight, and failures that stay
// inside their frame. Gates decide the order in which frames finish; nothing waits on time.
#include "pipeline/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

namespace loom::pipeline {
namespace {

// A node that waits for its frame's gate, then fails, throws or records its frame's index.
class GatedNode final : public Node {
 public:
  explicit GatedNode(std::vector<std::shared_future<void>> gates)
      : Node("gated"), gates_(std::move(gates)) {}
  absl::Status Process(Frame& frame, NodeContext&) const override {
    const size_t i = static_cast<size_t>(frame.index);
    if (i < gates_.size()) gates_[i].wait();
    if (frame.source == "throw") throw std::runtime_error("node bug");
    if (frame.source == "fail") return absl::InvalidArgumentError("bad frame");
    frame.record["seen"] = frame.index;
    return absl::OkStatus();
  }

 private:
  std::vector<std::shared_future<void>> gates_;
};

class NoModels final : public InferenceService {
 public:
  const ModelInfo* FindModel(const std::string&) const override { return nullptr; }
  PendingOutputs Submit(const std::string&, NamedTensors) override { return {}; }
};

std::unique_ptr<Frame> MakeFrame(int64_t index, std::string source = "") {
  auto f = std::make_unique<Frame>();
  f->index = index;
  f->source = std::move(source);
  return f;
}

TEST(Executor, FramesLeaveInOrderWhateverOrderTheyFinishIn) {
  constexpr int kFrames = 4;
  std::vector<std::promise<void>> open(kFrames);
  std::vector<std::shared_future<void>> gates;
  for (auto& p : open) gates.push_back(p.get_future().share());
  Graph graph;
  graph.inference = std::make_unique<NoModels>();
  graph.nodes.push_back(std::make_unique<GatedNode>(gates));
  Executor executor(graph, 2);  // two frames in flight: a Push returns once one of them is done
  ASSERT_TRUE(executor.Push(MakeFrame(0)));
  ASSERT_TRUE(executor.Push(MakeFrame(1)));
  for (int i = 1; i + 1 < kFrames; ++i) {
    open[static_cast<size_t>(i)].set_value();      // frame i finishes before frame 0...
    ASSERT_TRUE(executor.Push(MakeFrame(i + 1)));  // ...as this Push's return says
    EXPECT_EQ(executor.Pop(false), nullptr)
        << "frame " << i << " is done, frame 0 is not: nothing may leave";
  }
  executor.Finish();
  open[kFrames - 1].set_value();
  open[0].set_value();
  for (int i = 0; i < kFrames; ++i) {
    auto f = executor.Pop(true);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->index, i);
    EXPECT_EQ(f->record["seen"], i);
  }
  EXPECT_EQ(executor.Pop(true), nullptr) << "finished and drained";
}

TEST(Executor, AFrameThatThrowsOrFailsGetsItsErrorAndTheOthersGoOn) {
  Graph graph;
  graph.inference = std::make_unique<NoModels>();
  graph.nodes.push_back(std::make_unique<GatedNode>(std::vector<std::shared_future<void>>{}));
  Executor executor(graph, 2);
  executor.Push(MakeFrame(0));
  executor.Push(MakeFrame(1, "throw"));
  executor.Push(MakeFrame(2, "fail"));
  executor.Push(MakeFrame(3));
  executor.Finish();
  std::vector<std::string> errors;
  while (auto f = executor.Pop(true)) errors.push_back(f->error);
  EXPECT_EQ(errors, (std::vector<std::string>{"", "node 'gated': node bug",
                                              "node 'gated': bad frame", ""}));
}

TEST(Executor, PushWaitsForRoomAndAbortReleasesEveryone) {
  std::promise<void> open;
  std::vector<std::shared_future<void>> gates(3, open.get_future().share());
  Graph graph;
  graph.inference = std::make_unique<NoModels>();
  graph.nodes.push_back(std::make_unique<GatedNode>(gates));
  auto executor = std::make_unique<Executor>(graph, 2);
  ASSERT_TRUE(executor->Push(MakeFrame(0)));
  ASSERT_TRUE(executor->Push(MakeFrame(1)));
  std::promise<bool> third;
  std::atomic<bool> opened{false};
  bool pushed_after_opening = false;
  std::thread pusher([&] {
    const bool ok = executor->Push(MakeFrame(2));
    pushed_after_opening = opened.load();
    third.set_value(ok);
  });
  auto pushed = third.get_future();
  // Two frames in flight: full. The pusher waits for room (a state, no time limit of its own).
  while (executor->waiting_pushers() == 0) std::this_thread::yield();
  opened = true;
  open.set_value();  // frames 0 and 1 finish; there is room
  EXPECT_TRUE(pushed.get());
  EXPECT_TRUE(pushed_after_opening) << "the third Push returned before there was room";
  pusher.join();
  executor->Abort();
  EXPECT_EQ(executor->Pop(true), nullptr);
  EXPECT_FALSE(executor->Push(MakeFrame(3)));
  executor.reset();  // joins with nothing left behind
}

}  // namespace
}  // namespace loom::pipeline
