// The HTTP/REST encoding of inference requests and answers: JSON tensors and Triton's binary
// tensor data extension (a JSON header of Inference-Header-Content-Length bytes, then each
// binary tensor's bytes in order). Tensors themselves are read and written by json_tensors.h and
// types.h (TensorFromBytes), shared with the gRPC front end.
#ifndef LOOM_SERVE_HTTP_CODEC_H_
#define LOOM_SERVE_HTTP_CODEC_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/types.h"

namespace loom::serve {

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  int64_t header_length = -1;  // Inference-Header-Content-Length, when >= 0
  std::vector<std::pair<std::string, std::string>> headers;  // more header fields
  // An inference answer not encoded yet: the connection encodes it (EncodeDeferred) on its own
  // thread, so that an engine worker never spends its cores on text.
  std::shared_ptr<const InferResponse> infer;
  // What the answer keeps charged to the in-flight budget until it is written.
  std::shared_ptr<void> hold;
};

// Encodes `r.infer` into `r`, if set.
void EncodeDeferred(HttpResponse& r);

// {"error": message} with the status's HTTP code.
HttpResponse ErrorResponse(const absl::Status& status);
HttpResponse ErrorResponse(int http_status, std::string_view message);

// An inference request from its HTTP body. `header_length` is the Inference-Header-Content-Length
// field, if any. Binary inputs borrow `body`'s bytes: `*borrows` says whether any does. Tensors
// decoded from JSON are charged to `charge` before they are made.
absl::StatusOr<InferRequest> ParseHttpInfer(const std::string& model, const std::string& version,
                                            std::string_view body,
                                            const std::optional<std::string>& header_length,
                                            const ServeLimits& limits,
                                            InflightBudget::Charge* charge, bool* borrows);

// The answer's body: JSON, or a JSON header and the binary outputs after it.
HttpResponse EncodeHttpInfer(const InferResponse& response);

}  // namespace loom::serve

#endif  // LOOM_SERVE_HTTP_CODEC_H_
