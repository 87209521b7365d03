// JSON tensors of the Open Inference Protocol's HTTP requests, read in bounded memory: the request
// is parsed as a stream of events (nlohmann's SAX interface). Everything but the inputs' `data`
// becomes a small DOM (at most max_json_values values); each input's `data` is checked against
// its declared datatype and shape and written straight into its tensor's buffer (BYTES: into the
// protocol's length-prefixed form, no object per element). When `data` comes before `datatype`
// and `shape` in its input, the request is read a second time for that input's data. Peak memory
// is the text plus the tensors, whatever the nesting or the count of elements.
//
// Also the JSON text of tensors going out (numbers and strings written directly, no DOM).
#ifndef LOOM_SERVE_JSON_TENSORS_H_
#define LOOM_SERVE_JSON_TENSORS_H_

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "serve/types.h"

namespace loom::serve {

// Most JSON values outside the inputs' data one request may hold.
inline constexpr int64_t kMaxJsonValues = 65536;

struct JsonRequest {
  nlohmann::json header;                 // the request, each input's `data` replaced by null
  std::map<size_t, WireTensor> decoded;  // inputs[i] that had `data`: its tensor
};

// Parses an inference request's JSON `text`. INVALID_ARGUMENT for text that is not JSON, nested
// too deeply, too many values, duplicate keys, or data that does not fit its datatype and shape.
// Each tensor's bytes are added to `charge` before it is made (RESOURCE_EXHAUSTED if over).
absl::StatusOr<JsonRequest> ParseJsonRequest(std::string_view text, const ServeLimits& limits,
                                             InflightBudget::Charge* charge);

// `value` as a JSON string (quoted, escaped; invalid UTF-8 replaced).
void AppendJsonString(std::string& out, std::string_view value);
// The tensor's elements as a flat JSON array. UNIMPLEMENTED-like INVALID_ARGUMENT for types with no
// JSON form (FP16): the client asks for them as binary data.
absl::Status AppendJsonData(std::string& out, const WireTensor& t);

}  // namespace loom::serve

#endif  // LOOM_SERVE_JSON_TENSORS_H_
