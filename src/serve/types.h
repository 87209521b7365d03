// The Open Inference Protocol's data, independent of the transport: datatypes by their v2 names,
// request and response tensors, the server's limits, the checks every name from a request passes,
// the shared budget of bytes in flight, and the one table that maps the engine's status codes onto
// HTTP and gRPC.
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

enum class WireType {
  kBool,
  kUInt8,
  kUInt16,
  kUInt32,
  kUInt64,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kFp32,
  kFp64,
  kBytes
};

// "FP32" ...; the error names the accepted ones.
absl::StatusOr<WireType> ParseWireType(std::string_view name);
const char* WireTypeName(WireType type);
size_t WireTypeSize(WireType type);  // bytes per element; 0 for BYTES (length-prefixed)
// The engine's dtype for a wire type (UINT16/32/64 and BYTES have none).
std::optional<DType> ToDType(WireType type);
WireType FromDType(DType dtype);

// What a request may carry, checked before anything is allocated or computed from it.
struct ServeLimits {
  int64_t max_body_bytes = int64_t{64} << 20;  // HTTP inference body; gRPC message
  int64_t max_admin_body_bytes = 64 << 10;     // HTTP repository and other small bodies
  int64_t max_header_bytes = 16 << 10;         // HTTP header block; gRPC metadata
  int64_t max_tensor_elements = int64_t{1} << 28;
  int max_rank = 8;
  int max_tensors = 64;        // inputs (and requested outputs) per request
  int max_name_bytes = 256;    // model, version and tensor names
  int max_connections = 1024;  // HTTP connections at once (beyond: the longest idle is closed)
  int64_t header_timeout_ms = 5000;  // a request's header, from its first byte (or the connect)
  int64_t idle_timeout_ms = 60000;   // a kept-alive connection with no request
  int64_t read_timeout_ms = 10000;   // a request's body
  // At the connection cap, a body arriving slower than this (after the grace) may be cut off to
  // make room, after idle connections and slow headers.
  int64_t min_body_bytes_per_s = 32 << 10;
  int64_t body_rate_grace_ms = 1000;
  int max_json_depth = 32;                          // nesting of JSON `data`
  int64_t max_inflight_bytes = int64_t{512} << 20;  // all requests' bytes at once, both protocols
};

// OK if `name` may be a model, version or tensor name: 1 to max_name_bytes bytes, no NUL nor other
// control characters. INVALID_ARGUMENT naming `what` otherwise (the name itself is not echoed).
absl::Status CheckName(std::string_view what, std::string_view name, const ServeLimits& limits);

// A request's tensor: its data borrowed from the request's own memory (binary) or owned (decoded
// from JSON or typed contents).
struct WireTensor {
  std::string name;
  WireType type = WireType::kFp32;
  Shape shape;
  Tensor tensor;  // not BYTES
  // BYTES: the elements in the protocol's own form (each a 4-byte little-endian length, then its
  // bytes), checked against the shape; borrowed from the request or pointing into `owned_bytes`.
  std::string_view bytes;
  std::shared_ptr<const std::string> owned_bytes;
};

// A BYTES tensor that owns `wire` (elements in the protocol's length-prefixed form).
WireTensor OwnedBytesTensor(std::string name, Shape shape, std::string wire);
// Appends one element in the length-prefixed form.
void AppendBytesElement(std::string& wire, std::string_view element);
// Calls `fn(element)` for each element of a checked BYTES tensor's data.
template <typename Fn>
void ForEachBytesElement(std::string_view wire, Fn fn) {
  while (wire.size() >= 4) {
    uint32_t length = 0;
    for (int i = 3; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>(wire[i]);
    fn(wire.substr(4, length));
    wire.remove_prefix(4 + length);
  }
}

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
// The bytes of an answer's tensors.
int64_t ResponseBytes(const InferResponse& r);

// The checked tensor of `type` and `shape` over `data` (borrowed: keep it alive): the rank, every
// dim, the element count and the byte size are checked against `limits` and against `data`'s
// length before anything is read. BYTES: every element's 4-byte length prefix is checked.
absl::StatusOr<WireTensor> TensorFromBytes(const std::string& name, WireType type,
                                           const Shape& shape, std::string_view data,
                                           const ServeLimits& limits);
// Checks a shape from a request (rank, non-negative dims, element count) without any data.
absl::Status CheckWireShape(const std::string& name, const Shape& shape, const ServeLimits& limits,
                            int64_t* elements = nullptr);
// The tensor's bytes as the protocol sends them (BYTES: length-prefixed elements).
std::string_view TensorBytes(const WireTensor& t);

// The bytes of requests in flight, shared by every front end: a request is charged what it holds
// (its body or message, and the tensors decoded from it) before they are read or made, and the
// charge is returned when the request is answered. Thread-safe.
class InflightBudget {
 public:
  explicit InflightBudget(int64_t limit) : limit_(limit) {}
  // A charge held until destroyed (or Release). Movable.
  class Charge {
   public:
    Charge() = default;
    Charge(Charge&& other) noexcept { *this = std::move(other); }
    Charge& operator=(Charge&& other) noexcept;
    ~Charge() { Release(); }
    void Release();
    // Adds `bytes` to this charge; false (nothing added) when over the budget.
    bool Add(int64_t bytes);
    int64_t bytes() const { return bytes_; }
    // OK after adding `bytes`, or RESOURCE_EXHAUSTED (OverBudget) with nothing added.
    absl::Status Take(int64_t bytes);
    // Adds `bytes` even over the budget: memory that exists already (an answer being written),
    // counted so that new requests wait for it to go.
    void Hold(int64_t bytes);

   private:
    friend class InflightBudget;
    InflightBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };
  // An empty charge on this budget, to Add to.
  Charge Open() {
    Charge c;
    c.budget_ = this;
    return c;
  }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_; }

 private:
  bool Take(int64_t bytes);
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

// The error for a request over the budget: RESOURCE_EXHAUSTED whose message names the flag.
absl::Status OverBudget(int64_t bytes, const InflightBudget& budget);

// The one mapping of the engine's status codes onto the transports: the HTTP status, and the gRPC
// status code (grpc::StatusCode's numbering). A full queue (RESOURCE_EXHAUSTED in the engine) is
// "try again later" to a client: 503 and UNAVAILABLE. UNAUTHENTICATED is 401.
int HttpStatus(const absl::Status& status);
int GrpcCode(const absl::Status& status);

}  // namespace loom::serve

#endif  // LOOM_SERVE_TYPES_H_
