// The Open Inference Protocol's data, independent of the transport: datatypes by their v2 names,
// request and response tensors, the server's limits, and the one table that maps the engine's
// status codes onto HTTP and gRPC.
#ifndef LOOM_SERVE_TYPES_H_
#define LOOM_SERVE_TYPES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"
#include "loom/tensor.h"

namespace loom::serve {

enum class WireType { kBool, kUInt8, kUInt16, kUInt32, kUInt64, kInt8, kInt16, kInt32, kInt64, kFp16, kFp32, kFp64, kBytes };

absl::StatusOr<WireType> ParseWireType(std::string_view name);  // "FP32" ...; error names the accepted ones
const char* WireTypeName(WireType type);
size_t WireTypeSize(WireType type);  // bytes per element; 0 for BYTES (length-prefixed)
// The engine's dtype for a wire type (UINT16/32/64 and BYTES have none).
std::optional<DType> ToDType(WireType type);
WireType FromDType(DType dtype);

// What a request may carry, checked before anything is allocated or computed from it.
struct ServeLimits {
  int64_t max_body_bytes = int64_t{64} << 20;    // HTTP body; gRPC message
  int64_t max_header_bytes = 16 << 10;           // HTTP header block
  int64_t max_tensor_elements = int64_t{1} << 28;
  int max_rank = 8;
  int max_tensors = 64;                          // inputs (and requested outputs) per request
  int max_connections = 256;                     // HTTP connections at once (beyond: refused)
  int64_t read_timeout_ms = 10000;               // a client that sends slower than this is cut off
  int max_json_depth = 32;                       // nesting of JSON `data`
};

// A request's tensor: its data borrowed from the request's own memory (binary) or owned
// (decoded from JSON or typed contents). BYTES tensors keep their elements instead.
struct WireTensor {
  std::string name;
  WireType type = WireType::kFp32;
  Shape shape;
  Tensor tensor;                    // not BYTES
  std::vector<std::string> bytes;   // BYTES: one entry per element
};

struct RequestedOutput {
  std::string name;
  bool binary = false;
};

struct InferRequest {
  std::string model, version, id;
  std::vector<WireTensor> inputs;
  std::vector<RequestedOutput> outputs;  // empty: every output
  bool binary_outputs = false;           // for outputs not listed (HTTP binary_data_output)
  std::optional<int64_t> timeout_us;     // the `timeout` parameter: the engine's deadline
  std::shared_ptr<const std::atomic<bool>> cancelled;  // the client went away
};

struct InferResponse {
  std::string model, version, id;
  std::vector<WireTensor> outputs;  // in the order the client asked for (or the model's)
  std::vector<bool> binary;         // per output: send as raw bytes
};

// The checked tensor of `type` and `shape` over `data` (borrowed: keep it alive): the rank, every
// dim, the element count and the byte size are checked against `limits` and against `data`'s
// length before anything is read. BYTES: the elements are parsed from 4-byte length prefixes.
absl::StatusOr<WireTensor> TensorFromBytes(const std::string& name, WireType type, const Shape& shape,
                                           std::string_view data, const ServeLimits& limits);
// Checks a shape from a request (rank, non-negative dims, element count) without any data.
absl::Status CheckWireShape(const std::string& name, const Shape& shape, const ServeLimits& limits,
                            int64_t* elements = nullptr);
// The tensor's bytes as the protocol sends them (BYTES: length-prefixed elements).
std::string_view TensorBytes(const WireTensor& t, std::string& storage);

// The one mapping of the engine's status codes onto the transports: the HTTP status, and the gRPC
// status code (grpc::StatusCode's numbering). A full queue (RESOURCE_EXHAUSTED in the engine) is
// "try again later" to a client: 503 and UNAVAILABLE.
int HttpStatus(const absl::Status& status);
int GrpcCode(const absl::Status& status);

}  // namespace loom::serve

#endif  // LOOM_SERVE_TYPES_H_
