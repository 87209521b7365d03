// The gRPC encoding of inference requests and answers (the Open Inference Protocol's protobuf
// messages), shared tensor checks in types.h. A request's bytes are scanned before protobuf
// parses them, so that a message cannot make the server allocate many times its size: counts of
// repeated fields are checked against the limits and the memory parsing and decoding will take is
// bounded from above, to be charged to the in-flight budget first.
#ifndef LOOM_SERVE_GRPC_CODEC_H_
#define LOOM_SERVE_GRPC_CODEC_H_

#include <grpcpp/support/byte_buffer.h>

#include "grpc_service.pb.h"
#include "serve/types.h"

namespace loom::serve {

// An upper bound of the bytes that parsing the ModelInferRequest in `message` and decoding its
// tensors take (beyond the message itself), or INVALID_ARGUMENT for a message with more inputs,
// outputs, raw contents, parameters or dims than the limits allow, or that is not protobuf.
absl::StatusOr<int64_t> ScanInferRequest(const grpc::ByteBuffer& message,
                                         const ServeLimits& limits);

// The request as the data plane takes it; raw inputs borrow the message's bytes.
absl::StatusOr<InferRequest> FromProto(const inference::ModelInferRequest& m,
                                       const ServeLimits& limits);
// The answer as a message: every output as raw_output_contents, as Triton does.
void ToProto(const InferResponse& r, inference::ModelInferResponse& m);

}  // namespace loom::serve

#endif  // LOOM_SERVE_GRPC_CODEC_H_
