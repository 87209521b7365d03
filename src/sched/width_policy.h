// The narrow/wide choice of the scheduler (see scheduler.h, "Workers"): per model and size of
// request, whether a batch runs on one worker's session ("narrow") or on a wide group's session
// that spans every core of the group ("wide"), alone and under load.
//
// Modes holds one model's choices and the measurements behind them; ChooseWide decides a run's
// width, Record feeds its measured time back and switches a preference when the figures call for
// it. Pure data: no locking, no clock of its own. The scheduler owns one Modes per model and calls
// it under its mutex.
#ifndef LOOM_SCHED_WIDTH_POLICY_H_
#define LOOM_SCHED_WIDTH_POLICY_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "sched/batcher.h"

namespace loom::sched {

// How the choice is made (SchedulerOptions extends it).
struct WidthOptions {
  // Choose narrow or wide per batch. Off: always narrow.
  bool adaptive = true;
  // A preference switches only when the other mode is better by this fraction...
  double switch_margin = 0.05;
  // ...and at most this often per model and situation (alone / under load).
  std::chrono::milliseconds min_switch_interval{1000};
  // n decisions after the last try of the other mode (per model, size and situation), it is tried
  // again, to keep its measurement current; n grows with how much worse the other mode measured,
  // up to 8x, and doubles with each try, up to 32x, until a switch or a re-plan starts it over
  // (0: never explore).
  int explore_every = 50;
};

// The narrow/wide choice of one model at one size of request.
struct ModeState {
  // EWMAs, ms per request of the measured size (ModelSpec::measured_elements), or per row where
  // that is unknown. Wide runs alone and under load apart too: under load a wide run shares
  // memory bandwidth with the runs around it and is slower, and that must not decide the lone case.
  double narrow_alone_ms = 0, narrow_loaded_ms = 0, wide_ms = 0 /* alone */, wide_loaded_ms = 0;
  double WideLoaded() const { return wide_loaded_ms > 0 ? wide_loaded_ms : wide_ms; }
  double NarrowLoaded() const { return narrow_loaded_ms > 0 ? narrow_loaded_ms : narrow_alone_ms; }
  bool wide_alone = false, wide_loaded = false;
  TimePoint switched_alone{}, switched_loaded{};
  int64_t decisions_alone = 0, decisions_loaded = 0, narrow_runs = 0, wide_runs = 0;
  // Exploring backs off, per situation ([alone]): each try of the other width doubles the
  // interval to the next (at most kMaxExploreBackoff times), and a switch or a re-plan starts it
  // over. A try that leaves the choice as it was costs core time (under load, the partners' wait
  // as well): a choice confirmed again and again is re-checked less and less often, but always.
  static constexpr int kMaxExploreBackoff = 5;
  int explore_backoff[2] = {};
  int64_t explored_at[2] = {};  // the decision count of the last try or switch
  void StartExploringOver(bool alone) {
    explore_backoff[alone] = 0;
    explored_at[alone] = alone ? decisions_alone : decisions_loaded;
  }
  // A size first seen (not the measured one): the preferred width, then the other, runs
  // kFirstSightRuns times alone and under load (under load, wide only where it is preferred),
  // and then this size's own runs decide.
  bool first_sight = false;
  int64_t runs[2][2] = {};  // [alone][wide]
  std::string shape;        // a run's first input, naming the size in the plan,
  int64_t elements = 0;     // and its input elements per row

  // The width these figures call for, alone or under load: the other one only past the margin
  // (so that the choice does not flip on noise); the current one where a figure is missing.
  bool Wanted(bool alone, int group_workers, double margin) const;
  // What turns the EWMAs (per measured-size request) into figures at this size, for people.
  double ToThisSize(int size, int64_t measured_elements) const;
};

// One run, as the width policy learns from it.
struct RunRecord {
  const void* session = nullptr;  // the session it ran on (its first run at a shape is a warm-up)
  bool alone = false;
  bool wide = false;
  int64_t compute_us = 0;  // charged time (a wide run under load includes its partners' wait)
  int64_t rows = 0;        // all requests'
  int64_t elements = 0;    // input elements, all requests (see ModelSpec::measured_elements)
  const Request* first = nullptr;  // its first request, whose first input names the size
};

// A model's choices by size of request: input elements per row rounded down to a power of 2 (-1:
// sizes unknown, one choice per model, ms per row), but the measured request's own size is a
// class of its own (kMeasuredSize): the plan's figures are for that shape, not for its neighbours
// (PP-OCR det's load-time probe runs as fast on one thread as on two, a 544x256 page twice as fast
// on two). Per row, so that a model whose only dynamic dim is the batch keeps one choice at every
// batch size, as the measured request is one row.
struct Modes {
  static constexpr int64_t kFirstSightRuns = 2;
  static constexpr int kMeasuredSize =
      64;  // the power-of-2 classes are bit widths of an int64: 0..63
  std::map<int, ModeState> by_size;
  int measured = -1;  // the size the plan's costs were measured at
  // The (session, input elements per row) pairs that have run: a pair's first run is a warm-up.
  // Bounded (shapes come from requests): past the bound, runs count as warm.
  static constexpr size_t kMaxWarmed = 4096;
  std::set<std::pair<const void*, int64_t>> warmed;
  bool WarmUp(const void* session, int64_t per_row) {
    return warmed.size() < kMaxWarmed && warmed.insert({session, per_row}).second;
  }
  int group_workers = 1;  // k: narrow runs a wide run replaces

  // The size class of a run of `elements` input elements over `rows` rows.
  static int SizeOf(int64_t measured_elements, int64_t elements, int64_t rows);
  // The choice at `size`; a size first seen starts from the measured size's preferences.
  ModeState& At(int size);
  // The plan's costs at the size they were measured at (a re-plan's, perhaps on another layout):
  // that size's averages and preferences start from them, its counts go on (a choice can change
  // on the runs to come); what was measured at other sizes is forgotten (they see first sight
  // again); wide under load is measured afresh on the layout.
  void Seed(double narrow_ms, double wide_ms, int64_t measured_elements, double margin);
  // ms per measured-size request expected of a run at `size` (the measured size's where this one
  // has no measurement yet).
  double ExpectedMs(int size, bool wide);

  // Whether a run at `size` goes wide (the model has a wide session where it runs, and the
  // options are adaptive: the caller checks both). Counts the decision.
  bool ChooseWide(const WidthOptions& options, int size, bool alone);
  // Learns from a run that ended at `now` (`has_group`: it ran where a wide group exists, so that
  // a preference may change); returns the preference switches it made, as text for the plan's
  // history
  // ("alone: now wide (...) at [1,64]").
  std::vector<std::string> Record(const WidthOptions& options, int64_t measured_elements,
                                  bool has_group, TimePoint now, const RunRecord& run);
  // One line per size that has run (and the measured one), for the plan: the preferences and the
  // measurements behind them. `name`: the model's.
  std::string Describe(const std::string& name, int64_t measured_elements) const;
};

}  // namespace loom::sched

#endif  // LOOM_SCHED_WIDTH_POLICY_H_
