#include "bench/child_process.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace loom::bench {

absl::StatusOr<Child> Spawn(const std::vector<std::string>& argv) {
  int in[2], out[2];
  if (pipe(in) != 0) return absl::InternalError("pipe failed");
  if (pipe(out) != 0) {
    close(in[0]);
    close(in[1]);
    return absl::InternalError("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Child child;
  const int rc = posix_spawn(&child.pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    return absl::InternalError(absl::StrCat("cannot start '", absl::StrJoin(argv, " "), "'"));
  }
  child.to = fdopen(in[1], "w");
  child.from = fdopen(out[0], "r");
  return child;
}

std::string ReadLine(FILE* f) {
  std::string line;
  for (int c; (c = std::fgetc(f)) != EOF && c != '\n';) line.push_back(static_cast<char>(c));
  return line;
}

void WriteLine(FILE* f, const std::string& line) {
  std::fputs(line.c_str(), f);
  std::fputc('\n', f);
  std::fflush(f);
}

void Abandon(std::vector<Child>& children) {
  for (Child& c : children) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
    fclose(c.to);
    fclose(c.from);
  }
  children.clear();
}

}  // namespace loom::bench
