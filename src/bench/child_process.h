// A child process of this binary with a line protocol over its stdin and stdout: what the
// benchmarks' process strategies start (`loom bench-child`, `loom pipeline bench-child`).
#ifndef LOOM_BENCH_CHILD_PROCESS_H_
#define LOOM_BENCH_CHILD_PROCESS_H_

#include <sys/types.h>

#include <cstdio>
#include <string>
#include <vector>

#include "loom/status.h"

namespace loom::bench {

// Owns its pipes; the caller ends the process (Wait, or Kill then Wait).
struct Child {
  pid_t pid = -1;
  FILE* to = nullptr;    // its stdin
  FILE* from = nullptr;  // its stdout
};

// Starts `argv` (argv[0] a path) with its stdin and stdout piped to the returned Child.
absl::StatusOr<Child> Spawn(const std::vector<std::string>& argv);
// One line from the child (without the newline); empty at end of file.
std::string ReadLine(FILE* f);
// Sends `line` and a newline.
void WriteLine(FILE* f, const std::string& line);
// Kills (SIGKILL) every child not yet ended, waits for all and closes their pipes.
void Abandon(std::vector<Child>& children);

}  // namespace loom::bench

#endif  // LOOM_BENCH_CHILD_PROCESS_H_
