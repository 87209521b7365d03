// `loom`: run many models over many inputs at the limit of the machine.
#include <cstdio>
#include <iostream>
#include <map>

#include "apps/loom/commands.h"
#include "loom/session.h"

int main(int argc, char** argv) {
  CLI::App app{"Loom: many neural networks over many inputs, at the limit of the hardware.",
               "loom"};
  app.require_subcommand(1);
  app.set_version_flag(
      "--version",
      [] {
        return std::string("loom ") + LOOM_VERSION_STRING + " (" + loom::BackendVersions() + ")";
      },
      "Print Loom's version and the ONNX Runtime and OpenCV versions it runs with");

  std::map<CLI::App*, loom::cli::CommandFn> commands;
  auto add = [&](const char* name, const char* description, auto adder) {
    CLI::App* sub = app.add_subcommand(name, description);
    commands[sub] = adder(*sub);
  };
  add("info", "Print a model's inputs, outputs, opset and batchability.",
      loom::cli::AddInfoCommand);
  add("run", "Run a model on an image (or random input) and time it.", loom::cli::AddRunCommand);
  add("bench", "Naive strategies and Loom side by side on your models and machine.",
      loom::cli::AddBenchCommand);
  add("pipeline", "Run a YAML pipeline of several models per frame, or benchmark it.",
      loom::cli::AddPipelineCommand);
  add("serve", "Serve models over KServe v2 (Open Inference Protocol): HTTP/REST and gRPC.",
      loom::cli::AddServeCommand);
  add("bench-child", "", loom::cli::AddBenchChildCommand);

  // CLI11 reports an unknown first word as a missing subcommand; name it instead.
  bool known = argc <= 1 || argv[1][0] == '-';
  for (const auto& [sub, fn] : commands) known |= argc > 1 && sub->get_name() == argv[1];
  if (!known) {
    std::cerr << "loom: unknown command '" << argv[1] << "'\n\n" << app.help();
    return loom::cli::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return loom::cli::kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return loom::cli::kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help of the subcommand that failed to parse, if any, else of the whole program.
    const CLI::App* failed = &app;
    for (const auto& [sub, fn] : commands) {
      if (sub->parsed()) failed = sub;
    }
    if (e.get_name() == "CallForHelp" || e.get_name() == "CallForAllHelp") {
      std::cout << failed->help();
      return loom::cli::kExitOk;
    }
    // A hidden alias's errors come without its name, which the message itself gives.
    std::string message = e.what();
    if (message.rfind(": ", 0) == 0) message.erase(0, 2);
    std::cerr << "loom: " << message << "\n\n" << failed->help();
    return loom::cli::kExitUsage;
  }
  // Every command reports its errors itself; anything that still escapes (a bug, or memory the
  // machine does not have) is an exit 1 with a message, never an abort.
  for (const auto& [sub, fn] : commands) {
    if (!sub->parsed()) continue;
    try {
      return fn();
    } catch (const std::bad_alloc&) {
      std::cerr << "loom " << sub->get_name() << ": out of memory\n";
    } catch (const std::exception& e) {
      std::cerr << "loom " << sub->get_name() << ": internal error: " << e.what() << "\n";
    } catch (...) {
      std::cerr << "loom " << sub->get_name() << ": internal error\n";
    }
    return loom::cli::kExitRuntimeError;
  }
  std::cerr << app.help();
  return loom::cli::kExitUsage;
}
