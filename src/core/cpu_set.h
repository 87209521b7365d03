// The CPUs this process may use, and pinning threads to them.
#ifndef LOOM_CORE_CPU_SET_H_
#define LOOM_CORE_CPU_SET_H_

#include <string>
#include <vector>

#include "loom/status.h"

namespace loom {

// OS cpu ids this process may run on (sched_getaffinity), ascending. Honours taskset, cgroup
// cpusets and container limits, which std::thread::hardware_concurrency does not.
std::vector<int> UsableCpus();

// Pins the calling thread to `cpus`. INTERNAL with errno text on failure.
absl::Status PinCurrentThread(const std::vector<int>& cpus);

// The calling thread's allowed cpus.
std::vector<int> CurrentThreadCpus();

// CPU seconds (user + system) the calling thread has used so far.
double ThreadCpuSeconds();

// "0-3,6" for {0,1,2,3,6}.
std::string FormatCpuList(const std::vector<int>& cpus);

}  // namespace loom

#endif  // LOOM_CORE_CPU_SET_H_
