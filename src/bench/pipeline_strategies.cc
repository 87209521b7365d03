#include "bench/pipeline_strategies.h"

#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bench/child_process.h"
#include "core/stats.h"

namespace loom::bench {

std::vector<std::vector<std::string>> Shares(const std::vector<std::string>& files, int parts) {
  std::vector<std::vector<std::string>> out(static_cast<size_t>(std::max(parts, 1)));
  const size_t n = files.size(), k = out.size();
  size_t next = 0;
  for (size_t p = 0; p < k; ++p) {
    const size_t count = n / k + (p < n % k ? 1 : 0);
    out[p].assign(files.begin() + static_cast<ptrdiff_t>(next),
                  files.begin() + static_cast<ptrdiff_t>(next + count));
    next += count;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ThreadsStrategy>> ThreadsStrategy::Load(
    const std::string& file, const PipelineOptions& options, int threads) {
  auto s = std::unique_ptr<ThreadsStrategy>(new ThreadsStrategy());
  for (int t = 0; t < threads; ++t) {
    PipelineOptions o = options;
    o.strategy = PipelineStrategy::kSequential;
    o.sinks = false;
    o.in_flight = 1;
    LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(file, o));
    s->pipelines_.push_back(std::move(p));
  }
  return s;
}

absl::StatusOr<double> ThreadsStrategy::Run(const std::vector<std::string>& files) {
  const auto shares = Shares(files, static_cast<int>(pipelines_.size()));
  std::vector<absl::Status> status(pipelines_.size());
  const auto start = Clock::now();
  {
    std::vector<std::jthread> threads;
    for (size_t t = 0; t < pipelines_.size(); ++t) {
      if (shares[t].empty()) continue;
      threads.emplace_back([&, t] {
        try {
          status[t] = pipelines_[t]->Run(RunOptions{.files = shares[t]}).status();
        } catch (const std::exception& e) {
          status[t] = absl::InternalError(e.what());
        }
      });
    }
  }  // joined
  const double wall = MillisecondsSince(start) / 1000.0;
  for (const absl::Status& s : status) LOOM_RETURN_IF_ERROR(s);
  return wall;
}

absl::StatusOr<ProcessesRun> RunProcesses(const std::string& self_exe, const std::string& file,
                                          const std::vector<std::string>& args,
                                          const std::vector<std::string>& files, int count,
                                          const std::string& scratch_dir) {
  const auto shares = Shares(files, count);
  std::vector<std::string> lists;
  for (size_t p = 0; p < shares.size(); ++p) {
    lists.push_back(absl::StrCat(scratch_dir, "/share-", p, ".txt"));
    std::ofstream out(lists.back());
    for (const std::string& f : shares[p]) out << f << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write '", lists.back(), "'"));
  }
  ProcessesRun run;
  std::vector<Child> children;
  auto abandon = [&](absl::Status s) {
    Abandon(children);
    return s;
  };
  const auto spawned = Clock::now();
  for (size_t p = 0; p < shares.size(); ++p) {
    if (shares[p].empty()) continue;
    std::vector<std::string> argv = {self_exe, "pipeline", "bench-child",
                                     file,     "--files",  lists[p]};
    argv.insert(argv.end(), args.begin(), args.end());
    auto child = Spawn(argv);
    if (!child.ok()) return abandon(child.status());
    children.push_back(*child);
  }
  for (Child& c : children) {
    const std::string line = ReadLine(c.from);
    if (line != "ready")
      return abandon(absl::InternalError(absl::StrCat("a pipeline process: ", line)));
  }
  const auto go = Clock::now();
  for (Child& c : children) WriteLine(c.to, "go");
  std::vector<std::string> answers;
  for (Child& c : children) answers.push_back(ReadLine(c.from));
  run.wall_s = MillisecondsSince(go) / 1000.0;
  for (Child& c : children) {
    int status = 0;
    waitpid(c.pid, &status, 0);
    fclose(c.to);
    fclose(c.from);
  }
  children.clear();
  run.wall_with_startup_s = MillisecondsSince(spawned) / 1000.0;
  for (const std::string& a : answers) {
    const nlohmann::json j = nlohmann::json::parse(a, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("frames"))
      return absl::InternalError(absl::StrCat("a pipeline process: ", a));
  }
  return run;
}

int PipelineChildMain(const std::string& file, const PipelineOptions& options,
                      const std::string& files_list) {
  auto fail = [](const absl::Status& s) {
    std::cout << "error: " << s.message() << std::endl;
    return 1;
  };
  std::vector<std::string> files;
  std::ifstream in(files_list);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) files.push_back(line);
  }
  if (files.empty())
    return fail(absl::InvalidArgumentError(absl::StrCat("no file listed in '", files_list, "'")));
  PipelineOptions o = options;
  o.strategy = PipelineStrategy::kSequential;
  o.sinks = false;
  o.in_flight = 1;
  auto p = Pipeline::Load(file, o);
  if (!p.ok()) return fail(p.status());
  std::cout << "ready" << std::endl;
  std::string go;
  if (!std::getline(std::cin, go) || go != "go") return fail(absl::CancelledError("no 'go'"));
  const auto start = Clock::now();
  auto summary = (*p)->Run(RunOptions{.files = files});
  if (!summary.ok()) return fail(summary.status());
  std::cout << nlohmann::json{{"frames", summary->frames},
                              {"seconds", MillisecondsSince(start) / 1000.0}}
                   .dump()
            << std::endl;
  return 0;
}

}  // namespace loom::bench
