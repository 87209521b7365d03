// Pipelines under bad input and careless callers: every case ends in a clear error or an error
// record, never a crash, a hang, or a thread left behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <thread>

#include "loom/pipeline.h"
#include "tests/test_util.h"

namespace loom {
namespace {

using testing::ScratchDir;

std::string Faces(const std::string& extra, const std::string& source = "") {
  return "models:\n  - {name: face, path: " + testing::ModelPath(testing::kBlazeFaceBack) + "}\n" +
         "source: {path: " + (source.empty() ? testing::DataPath("messi5.jpg") : source) + "}\n" +
         "nodes:\n"
         "  - {name: face_in, type: preprocess, model: face, scale: 0.0078431, mean: 127.5}\n"
         "  - {name: face, type: infer, model: face, input: face_in}\n"
         "  - {name: faces, type: blazeface, input: face, model: face}\n" +
         extra;
}

absl::Status LoadError(const ScratchDir& dir, const std::string& yaml) {
  auto p = Pipeline::Load(dir.Write("p.yaml", yaml), {.output_dir = dir.Path("out")});
  return p.ok() ? absl::OkStatus() : p.status();
}

TEST(PipelineFaults, BadYamlIsAnErrorAtTheValueNeverAnException) {
  ScratchDir dir;
  struct Case {
    std::string yaml, message;
  };
  const std::string models =
      "models:\n  - {name: face, path: " + testing::ModelPath(testing::kBlazeFaceBack) + "}\n";
  for (const Case& c : std::vector<Case>{
           {Faces("sinks: [jsonl]\n"),
            "p.yaml:8:9: a sink must be a mapping such as {type: jsonl, path: out.jsonl}, got "
            "'jsonl'"},
           {Faces("sinks: [{type: csv}]\n"),
            "'type' must be one of annotate, jsonl, text, video, got 'csv'"},
           {Faces("sinks: [{type: jsonl, pth: a}]\n"),
            "sink 'jsonl': unknown key 'pth' in the sink; did you mean 'path'?"},
           {Faces("sinks: {type: jsonl}\n"), "'sinks' must be a list, got a mapping"},
           {Faces("in_flight: 100000\n"),
            "'in_flight' must be an integer in [1, 64], got '100000'"},
           {Faces("in_flight: -1\n"), "'in_flight' must be an integer in [1, 64]"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                "}\nnodes:\n  - {name: fi, type: preprocess, sise: [4, 4]}\n",
            "node 'fi': unknown key 'sise' in the node; did you mean 'size'?"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                "}\nnodes:\n  - {name: fi, type: preprocess, size: [99999999, 4]}\n",
            "node 'fi': 'size' must be an integer in [1, 16384], got '99999999'"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                "}\nnodes:\n  - {name: fi, type: preprocess, size: 4}\n",
            "node 'fi': 'size' must be a list of 2 integers, got '4'"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                "}\nnodes:\n  - {name: fi, type: preprocss}\n",
            "node 'fi': unknown node type 'preprocss'; did you mean 'preprocess'?"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                "}\nnodes: [preprocess]\n",
            "a node must be a mapping"},
           {models + "source: {path: " + testing::DataPath("messi5.jpg"),
            "p.yaml:"},  // unterminated flow map
           {models + "source: {path: " + testing::DataPath("messi5.jpg") +
                ", stride: 0}\nnodes: []\n",
            "source: 'stride' must be an integer in [1, 1048576], got '0'"},
           {"models: 3\n", "'models' must be a non-empty list, got '3'"},
           {"[1, 2]\n", "the file must be a mapping, got a list"},
       }) {
    SCOPED_TRACE(c.yaml);
    const absl::Status s = LoadError(dir, c.yaml);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s;
  }
}

TEST(PipelineFaults, ACallbackThatThrowsEndsTheRunWithAnError) {
  auto p = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"),
                          {.input = testing::DataPath("Megamind.avi"),
                           .limit = 12,
                           .sinks = false,
                           .on_record = [](const PipelineRecord& r) {
                             if (r.frame == 3) throw std::runtime_error("user bug");
                           }});
  ASSERT_TRUE(p.ok()) << p.status();
  auto run = (*p)->Run();
  EXPECT_EQ(run.status().message(), "the on_record callback threw: user bug");
  // The pipeline is still usable: a callback that behaves runs it to the end.
  auto q = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"),
                          {.input = testing::DataPath("Megamind.avi"), .limit = 5, .sinks = false});
  ASSERT_TRUE(q.ok());
  auto progress = (*q)->Run([](int64_t done, int64_t) {
    if (done == 2) throw 42;
  });
  EXPECT_EQ(progress.status().message(), "the progress callback threw");
  auto again = (*q)->Run();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->frames, 5);
}

TEST(PipelineFaults, AVideoWithoutFramesOrCutShortIsReported) {
  ScratchDir dir;
  {
    cv::VideoWriter empty(dir.Path("empty.avi"), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 25,
                          cv::Size(64, 48));
  }
  auto p = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"),
                          {.input = dir.Path("empty.avi"), .sinks = false});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("empty.avi"), std::string::npos) << p.status();
  // Megamind.avi cut to a third: its header still declares every frame.
  const std::string whole = testing::ReadFile(testing::DataPath("Megamind.avi"));
  dir.Write("cut.avi", whole.substr(0, whole.size() / 3));
  p = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"),
                     {.input = dir.Path("cut.avi"), .sinks = false});
  ASSERT_TRUE(p.ok()) << p.status();
  auto run = (*p)->Run();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_GT(run->frames, 0);
  EXPECT_NE(run->source_error.find("ended after " + std::to_string(run->frames) + " of its"),
            std::string::npos)
      << run->source_error;
}

TEST(PipelineFaults, FramesFromTheCallerComeBackInOrder) {
  auto p = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"), {.sinks = false});
  ASSERT_TRUE(p.ok()) << p.status();
  cv::VideoCapture video(testing::DataPath("Megamind.avi"), cv::CAP_FFMPEG);
  cv::Mat frame;
  std::vector<PipelineRecord> records;
  for (int i = 0; i < 10 && video.read(frame); ++i) {
    auto index = (*p)->Submit(ImageView{frame.cols, frame.rows, 3, frame.data, frame.step});
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_EQ(*index, i);
    while (auto r = (*p)->Next(false)) records.push_back(*r);
  }
  const std::string png = testing::ReadFile(testing::DataPath("messi5.jpg"));
  ASSERT_TRUE((*p)->SubmitEncoded(png, "messi").ok());
  EXPECT_EQ((*p)->SubmitEncoded("not an image", "junk").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*p)->Submit(ImageView{0, 0, 3, frame.data, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  (*p)->Finish();
  while (auto r = (*p)->Next(true)) records.push_back(*r);
  ASSERT_EQ(records.size(), 11u);
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i].frame, static_cast<int64_t>(i));
  const auto messi = nlohmann::json::parse(records[10].json);
  EXPECT_EQ(messi["source"], "messi");
  EXPECT_EQ(messi["faces"].size(), 1u);
  EXPECT_TRUE(records[10].timings.count("faces"));
}

// Three threads submit at once while a fourth, started before any frame, takes the records:
// every frame gets its own index, and the records leave in index order, each once.
TEST(PipelineFaults, SeveralThreadsSubmitWhileAnotherTakesTheRecords) {
  auto p = Pipeline::Load(testing::SourcePath("pipelines/faces.yaml"), {.sinks = false});
  ASSERT_TRUE(p.ok()) << p.status();
  const cv::Mat image = cv::imread(testing::DataPath("messi5.jpg"));
  ASSERT_FALSE(image.empty());
  constexpr int kThreads = 3, kPerThread = 4;
  std::vector<int64_t> taken;
  std::thread taker([&] {
    while (auto r = (*p)->Next(true)) taken.push_back(r->frame);
  });
  std::vector<std::vector<int64_t>> given(kThreads);
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto index = (*p)->Submit(ImageView{image.cols, image.rows, 3, image.data, image.step});
        if (index.ok()) given[t].push_back(*index);
      }
    });
  }
  for (auto& t : submitters) t.join();
  (*p)->Finish();
  taker.join();
  std::vector<int64_t> all;
  for (const auto& g : given) {
    EXPECT_EQ(g.size(), static_cast<size_t>(kPerThread));
    all.insert(all.end(), g.begin(), g.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expected(kThreads * kPerThread);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(all, expected) << "each frame its own index";
  EXPECT_EQ(taken, expected) << "the records in index order, each once";
}

}  // namespace
}  // namespace loom
