// The gRPC front end of `loom serve`: service inference.GRPCInferenceService (the Open Inference
// Protocol, with Triton's repository extension) on gRPC's callback API, translated onto the
// DataPlane, nothing more.
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
  // Listens on host:port (port 0: any free one).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(DataPlane& plane, const std::string& host, int port);
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
