// The `loom` command line: each subcommand registers its options on the CLI11 app and returns the
// function that runs it. Exit codes: 0 success, 1 runtime error (message on stderr), 2 usage error.
#ifndef LOOM_APPS_LOOM_COMMANDS_H_
#define LOOM_APPS_LOOM_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <functional>

namespace loom::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;
inline constexpr int kExitUsage = 2;

using CommandFn = std::function<int()>;

CommandFn AddInfoCommand(CLI::App& app);
CommandFn AddRunCommand(CLI::App& app);
CommandFn AddBenchCommand(CLI::App& app);
CommandFn AddBenchChildCommand(CLI::App& app);
CommandFn AddPipelineCommand(CLI::App& app);
CommandFn AddServeCommand(CLI::App& app);

}  // namespace loom::cli

#endif  // LOOM_APPS_LOOM_COMMANDS_H_
