// The gRPC front end of `loom serve`: service inference.GRPCInferenceService (the Open Inference
// Protocol, with Triton's repository extension) on gRPC's async API, translated onto the
// DataPlane, nothing more. Each of its threads polls a completion queue of its own and handles
// the calls that come there, an inference included when a worker of its model is idle: a call's
// way from the socket to the model and back has no hand-off between threads.
//
// Every request's bytes are checked before protobuf parses them (grpc_codec.h): an inference is
// charged to the in-flight budget (RESOURCE_EXHAUSTED beyond it), other calls take at most
// max_admin_body_bytes. Inputs come as typed `contents` or as `raw_input_contents` (borrowed,
// never copied); outputs are always answered as `raw_output_contents`, as Triton does. A call the
// client cancels (or whose deadline passes) marks its request cancelled: if it is still queued,
// the engine drops it. Credentials (security.h) come as `authorization: Bearer <token>` metadata;
// TLS and client certificates with gRPC's own SSL credentials. Connections are bounded by gRPC's
// channel arguments: handshake timeout, streams per connection, idle and age limits, and a
// resource quota on the transport's memory.
#ifndef LOOM_SERVE_GRPC_SERVER_H_
#define LOOM_SERVE_GRPC_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "serve/data_plane.h"
#include "serve/security.h"

namespace loom::serve {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;           // 0: any free one
  int threads = 0;        // completion queues, a thread each (0: DefaultThreads())
  int max_streams = 128;  // concurrent calls per connection
  std::chrono::milliseconds max_connection_idle{std::chrono::minutes(1)};
  std::chrono::milliseconds max_connection_age{std::chrono::minutes(30)};
};

class GrpcServer {
 public:
  ~GrpcServer();  // Shutdown(0)
  // `plane` and `access` must outlive the server.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(DataPlane& plane, const Access& access,
                                                           const GrpcServerOptions& options);
  // The cores this process may use (up to 16) plus 2: threads busy running a model inline leave
  // others to take new calls.
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
