// The gRPC front end of `loom serve`: service inference.GRPCInferenceService (the Open Inference
// Protocol, with Triton's repository extension) on gRPC's async API, translated onto the
// DataPlane, nothing more. Each of its threads polls a completion queue of its own and handles
// the calls that come there, an inference included when a worker of its model is idle: a call's
// way from the socket to the model and back has no hand-off between threads.
//
// Inputs come as typed `contents` or as `raw_input_contents` (borrowed, never copied); outputs are
// always answered as `raw_output_contents`, as Triton does. A call the client cancels (or whose
// deadline passes) marks its request cancelled: if it is still queued, the engine drops it.
// Messages over max_body_bytes are refused by gRPC itself with RESOURCE_EXHAUSTED.
#ifndef LOOM_SERVE_GRPC_SERVER_H_
#define LOOM_SERVE_GRPC_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "serve/data_plane.h"

namespace loom::serve {

class GrpcServer {
 public:
  ~GrpcServer();  // Shutdown(0)
  // Listens on host:port (port 0: any free one) with `threads` completion queues, each polled by
  // a thread of its own (0: DefaultThreads()).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(DataPlane& plane, const std::string& host, int port,
                                                           int threads = 0);
  // The cores this process may use (up to 16) plus 2: threads busy running a model inline leave others to
  // take new calls.
  static int DefaultThreads();
  int port() const;
  // Stops accepting calls; the calls under way have until `grace` to finish, then are cancelled.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  struct Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_GRPC_SERVER_H_
