// Engine: sessions. The options of a worker's narrow session and of a wide group's session, making
// a session (the configured factory or the backend) on the cores it will run on and warming it
// up there, the cache of sessions by key that a re-plan reuses, and the scheduler's layout of a
// plan (every model's sessions).
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/guard.h"
#include "core/tensor_rows.h"
#include "engine/engine_impl.h"
#include "runtime/warmup_inputs.h"

namespace loom {
namespace engine_internal {
namespace {

// Options of a session that a worker runs on `cpus`: its thread on cpus[0], intra-op thread i on
// cpus[i + 1].
SessionOptions NarrowOptions(const ModelConfig& config, const std::vector<int>& cpus, bool spin) {
  SessionOptions options;
  options.backend = config.backend;
  options.intra_op_threads = static_cast<int>(cpus.size());
  options.allow_spinning = spin;
  for (size_t i = 1; i < cpus.size(); ++i) options.thread_affinities.push_back({cpus[i]});
  return options;
}

// A wide session spans a group's cpus; whichever worker of the group runs it, its intra-op
// threads may use any of the group's cores (the runner's own thread stays on its cores), and
// they spin only while it runs.
SessionOptions WideOptions(const ModelConfig& config, const std::vector<int>& cpus) {
  SessionOptions options;
  options.backend = config.backend;
  options.intra_op_threads = static_cast<int>(cpus.size());
  options.allow_spinning = true;
  options.stop_spinning_after_run = true;
  for (size_t i = 1; i < cpus.size(); ++i) options.thread_affinities.push_back(cpus);
  return options;
}

absl::StatusOr<std::unique_ptr<Session>> MakeSession(const ModelConfig& config,
                                                     const SessionOptions& options) {
  absl::StatusOr<std::unique_ptr<Session>> session = absl::InternalError("no session");
  try {
    session = config.session_factory ? config.session_factory(options)
                                     : CreateSession(config.path, options);
  } catch (const std::exception& e) {
    session = absl::InternalError(absl::StrCat("making a session threw: ", e.what()));
  } catch (...) {
    session = absl::InternalError("making a session threw");
  }
  if (session.ok() && !*session) session = absl::InternalError("the session factory returned null");
  if (!session.ok()) {
    return absl::Status(session.status().code(),
                        absl::StrCat("model '", config.name, "': ", session.status().message()));
  }
  return session;
}

std::string SessionKey(const std::string& model, const std::vector<int>& cpus, bool spin,
                       bool wide) {
  return absl::StrCat(model, "|", FormatCpuList(cpus), "|", spin ? "spin" : "nospin", "|",
                      wide ? "wide" : "narrow");
}

}  // namespace

absl::Status RunPinned(const std::vector<int>& cpus, const std::function<absl::Status()>& fn) {
  absl::Status status;
  std::thread probe([&] {
    status = CatchAll("", [&] {
      absl::Status pinned = PinCurrentThread(cpus);
      return pinned.ok() ? fn() : pinned;
    });
  });
  probe.join();
  return status;
}

bool Serves(const WorkerPlan& w, const std::string& model) {
  return std::find(w.models.begin(), w.models.end(), model) != w.models.end();
}

}  // namespace engine_internal

absl::StatusOr<NamedTensors> Engine::Impl::WarmupInputs(const ModelEntry& m, int rows) const {
  NamedTensors one;
  if (!m.config.warmup_inputs.empty()) {
    one = m.config.warmup_inputs;
  } else {
    auto random = RandomInputs(m.info, ShapeSpec{}, 1, options.limits);
    if (!random.ok()) {
      return absl::Status(
          random.status().code(),
          absl::StrCat("model '", m.config.name, "': warm-up: ", random.status().message()));
    }
    one = std::move(*random);
  }
  if (rows == 1) return one;
  const std::vector<const NamedTensors*> parts(static_cast<size_t>(rows), &one);
  return ConcatRows(parts, options.limits);
}

absl::StatusOr<std::shared_ptr<Session>> Engine::Impl::SessionFor(const ModelEntry& m,
                                                                  const std::vector<int>& cpus,
                                                                  bool spin, bool wide,
                                                                  SessionMap& made) {
  const std::string key = engine_internal::SessionKey(m.config.name, cpus, spin, wide);
  if (auto it = made.find(key); it != made.end()) return it->second;
  if (auto it = sessions.find(key); it != sessions.end()) {
    made[key] = it->second;
    return it->second;
  }
  std::shared_ptr<Session> session;
  // Made and warmed up on its own cores: the first runs allocate the memory arena and are several
  // times slower than the rest; that is paid here, not by a request.
  absl::Status status = engine_internal::RunPinned(cpus, [&]() -> absl::Status {
    const SessionOptions session_options =
        wide ? engine_internal::WideOptions(m.config, cpus)
             : engine_internal::NarrowOptions(m.config, cpus, spin);
    LOOM_ASSIGN_OR_RETURN(auto s, engine_internal::MakeSession(m.config, session_options));
    LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, WarmupInputs(m));
    if (absl::Status warm = s->Run(inputs).status(); !warm.ok()) {
      return absl::Status(warm.code(),
                          absl::StrCat("model '", m.config.name, "': warm-up: ", warm.message()));
    }
    session = std::move(s);
    return absl::OkStatus();
  });
  LOOM_RETURN_IF_ERROR(status);
  made[key] = session;
  return session;
}

absl::StatusOr<sched::Scheduler::Layout> Engine::Impl::BuildLayout(const EnginePlan& plan,
                                                                   const Entries& entries,
                                                                   SessionMap& made) {
  sched::Scheduler::Layout layout;
  for (const WorkerPlan& w : plan.workers) layout.workers.push_back({w.cpus, w.group});
  for (const WideGroupPlan& g : plan.groups) layout.groups.push_back({g.workers});
  int max_id = -1;
  for (const auto& e : entries) max_id = std::max(max_id, e->id);
  layout.narrow.resize(static_cast<size_t>(max_id + 1));
  layout.wide.resize(static_cast<size_t>(max_id + 1));
  for (const auto& e : entries) {
    auto& narrow = layout.narrow[static_cast<size_t>(e->id)];
    auto& wide = layout.wide[static_cast<size_t>(e->id)];
    narrow.resize(plan.workers.size());
    wide.resize(plan.groups.size());
    for (size_t w = 0; w < plan.workers.size(); ++w) {
      const WorkerPlan& wp = plan.workers[w];
      if (!engine_internal::Serves(wp, e->config.name)) continue;
      LOOM_ASSIGN_OR_RETURN(narrow[w], SessionFor(*e, wp.cpus, wp.allow_spinning, false, made));
    }
    if (e->dedicated) continue;
    for (size_t g = 0; g < plan.groups.size(); ++g) {
      LOOM_ASSIGN_OR_RETURN(wide[g], SessionFor(*e, plan.groups[g].cpus, true, true, made));
    }
  }
  return layout;
}

}  // namespace loom
