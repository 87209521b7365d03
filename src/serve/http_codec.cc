#include "serve/http_codec.h"

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "serve/json_tensors.h"

namespace loom::serve {
namespace {

using json = nlohmann::json;

absl::Status Invalid(std::string_view message) {
  return absl::InvalidArgumentError(std::string(message));
}

// The request's top-level fields other than its tensors.
absl::Status ParseParameters(const json& header, InferRequest& r) {
  if (header.contains("id")) {
    if (!header["id"].is_string()) return Invalid("'id' must be a string");
    r.id = header["id"].get<std::string>();
  }
  if (!header.contains("parameters")) return absl::OkStatus();
  const json& p = header["parameters"];
  if (!p.is_object()) return Invalid("'parameters' must be an object");
  if (p.contains("binary_data_output")) {
    if (!p["binary_data_output"].is_boolean()) {
      return Invalid("'binary_data_output' must be true or false");
    }
    r.binary_outputs = p["binary_data_output"].get<bool>();
  }
  if (p.contains("timeout")) {
    if (!p["timeout"].is_number_unsigned()) {
      return Invalid("'timeout' must be a non-negative integer (microseconds)");
    }
    const uint64_t us = p["timeout"].get<uint64_t>();
    // 0: none (Triton)
    if (us > 0) r.timeout_us = static_cast<int64_t>(std::min<uint64_t>(us, uint64_t{1} << 50));
  }
  return absl::OkStatus();
}

// An input's `parameters.binary_data_size`, if it has one.
absl::StatusOr<std::optional<uint64_t>> BinarySize(const json& in, const std::string& name) {
  if (!in.contains("parameters")) return std::nullopt;
  const json& p = in["parameters"];
  if (!p.is_object()) {
    return Invalid(absl::StrCat("input '", name, "': 'parameters' must be an object"));
  }
  if (!p.contains("binary_data_size")) return std::nullopt;
  if (!p["binary_data_size"].is_number_unsigned()) {
    return Invalid(
        absl::StrCat("input '", name, "': 'binary_data_size' must be a non-negative integer"));
  }
  return p["binary_data_size"].get<uint64_t>();
}

// The shape of an input with binary data (a JSON input's was read with its data).
absl::StatusOr<Shape> ParseShape(const json& in, const std::string& name,
                                 const ServeLimits& limits) {
  if (!in.contains("shape") || !in["shape"].is_array() ||
      static_cast<int>(in["shape"].size()) > limits.max_rank) {
    return Invalid(absl::StrCat("input '", name, "' needs a 'shape': a list of at most ",
                                limits.max_rank, " dims"));
  }
  Shape shape;
  for (const json& d : in["shape"]) {
    if (!d.is_number_integer()) {
      return Invalid(absl::StrCat("input '", name, "': shape dims are integers"));
    }
    if (d.is_number_unsigned() && d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Invalid(absl::StrCat("input '", name, "': a dim of the shape overflows"));
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// One entry of `inputs`: its tensor, from its decoded JSON data or from the binary part at
// `*offset` (advanced past it).
absl::StatusOr<WireTensor> ParseInput(const json& in, size_t index, JsonRequest& parsed,
                                      std::string_view binary, size_t* offset,
                                      const ServeLimits& limits) {
  if (!in.is_object()) return Invalid("each input must be an object");
  if (!in.contains("name") || !in["name"].is_string()) {
    return Invalid("an input needs a 'name' (string)");
  }
  const std::string name = in["name"].get<std::string>();
  LOOM_RETURN_IF_ERROR(CheckName("input", name, limits));
  if (!in.contains("datatype") || !in["datatype"].is_string()) {
    return Invalid(absl::StrCat("input '", name, "' needs a 'datatype' (string)"));
  }
  LOOM_ASSIGN_OR_RETURN(WireType type, ParseWireType(in["datatype"].get<std::string>()));
  LOOM_ASSIGN_OR_RETURN(Shape shape, ParseShape(in, name, limits));
  LOOM_ASSIGN_OR_RETURN(std::optional<uint64_t> binary_size, BinarySize(in, name));
  if (in.contains("data") == binary_size.has_value()) {
    return Invalid(absl::StrCat("input '", name,
                                "' must set exactly one of 'data' and "
                                "'parameters.binary_data_size'"));
  }
  if (!binary_size) {
    auto it = parsed.decoded.find(index);
    if (it == parsed.decoded.end()) {
      return Invalid(absl::StrCat("input '", name, "': 'data' must be an array"));
    }
    WireTensor t = std::move(it->second);
    t.name = name;
    return t;
  }
  if (*binary_size > binary.size() - *offset) {
    return Invalid(absl::StrCat("input '", name, "': 'binary_data_size' is ", *binary_size,
                                " bytes but only ", binary.size() - *offset,
                                " binary bytes remain in the request"));
  }
  const std::string_view bytes = binary.substr(*offset, static_cast<size_t>(*binary_size));
  *offset += static_cast<size_t>(*binary_size);
  return TensorFromBytes(name, type, shape, bytes, limits);
}

absl::Status ParseOutputs(const json& header, InferRequest& r, const ServeLimits& limits) {
  if (!header.contains("outputs")) return absl::OkStatus();
  const json& outputs = header["outputs"];
  if (!outputs.is_array() || static_cast<int>(outputs.size()) > limits.max_tensors) {
    return Invalid("'outputs' must be a list of at most max_tensors outputs");
  }
  for (const json& o : outputs) {
    if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
      return Invalid("each requested output needs a 'name' (string)");
    }
    // binary_data_output is the default
    RequestedOutput ro{o["name"].get<std::string>(), r.binary_outputs};
    LOOM_RETURN_IF_ERROR(CheckName("output", ro.name, limits));
    if (o.contains("parameters")) {
      const json& p = o["parameters"];
      if (!p.is_object()) return Invalid("an output's 'parameters' must be an object");
      if (p.contains("binary_data")) {
        if (!p["binary_data"].is_boolean()) return Invalid("'binary_data' must be true or false");
        ro.binary = p["binary_data"].get<bool>();
      }
    }
    r.outputs.push_back(std::move(ro));
  }
  return absl::OkStatus();
}

}  // namespace

HttpResponse ErrorResponse(int http_status, std::string_view message) {
  HttpResponse r;
  r.status = http_status;
  r.body = "{\"error\":";
  AppendJsonString(r.body, message);
  r.body += '}';
  return r;
}

HttpResponse ErrorResponse(const absl::Status& status) {
  return ErrorResponse(HttpStatus(status), std::string(status.message()));
}

absl::StatusOr<InferRequest> ParseHttpInfer(const std::string& model, const std::string& version,
                                            std::string_view body,
                                            const std::optional<std::string>& header_length,
                                            const ServeLimits& limits,
                                            InflightBudget::Charge* charge, bool* borrows) {
  *borrows = false;
  size_t json_size = body.size();
  if (header_length) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(*header_length, &n) || n < 0 || static_cast<uint64_t>(n) > body.size()) {
      return Invalid(absl::StrCat("Inference-Header-Content-Length is '",
                                  header_length->substr(0, 32), "', but the body has ", body.size(),
                                  " bytes"));
    }
    json_size = static_cast<size_t>(n);
  }
  LOOM_ASSIGN_OR_RETURN(JsonRequest parsed,
                        ParseJsonRequest(body.substr(0, json_size), limits, charge));
  const json& header = parsed.header;
  if (!header.is_object()) return Invalid("the request must be a JSON object");
  InferRequest r;
  r.model = model;
  r.version = version;
  LOOM_RETURN_IF_ERROR(ParseParameters(header, r));
  if (!header.contains("inputs") || !header["inputs"].is_array()) {
    return Invalid("the request needs an 'inputs' array");
  }
  const json& inputs = header["inputs"];
  if (static_cast<int>(inputs.size()) > limits.max_tensors) {
    return Invalid(absl::StrCat("the request has ", inputs.size(), " inputs, over the limit of ",
                                limits.max_tensors, " (max_tensors)"));
  }
  const std::string_view binary = body.substr(json_size);
  size_t offset = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(WireTensor t, ParseInput(inputs[i], i, parsed, binary, &offset, limits));
    r.inputs.push_back(std::move(t));
  }
  if (offset != binary.size()) {
    return Invalid(absl::StrCat(binary.size() - offset,
                                " bytes of binary data follow the inputs that no input claims"));
  }
  *borrows = offset > 0;
  LOOM_RETURN_IF_ERROR(ParseOutputs(header, r, limits));
  return r;
}

HttpResponse EncodeHttpInfer(const InferResponse& response) {
  // Sizes first: the body is written once, into a buffer of the right size.
  size_t blob_bytes = 0, text_bytes = 256 + response.model.size() + response.id.size();
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const WireTensor& t = response.outputs[i];
    const size_t n = TensorBytes(t).size();
    if (response.binary[i]) {
      blob_bytes += n;
    } else {  // a number's text: at most 25 bytes per 4 or 8 of binary
      text_bytes +=
          t.type == WireType::kBytes ? 2 * n : static_cast<size_t>(t.tensor.element_count()) * 26;
    }
    text_bytes += 128 + t.name.size();
  }
  HttpResponse out;
  std::string& body = out.body;
  body.reserve(text_bytes + blob_bytes);
  body += "{\"model_name\":";
  AppendJsonString(body, response.model);
  body += ",\"model_version\":";
  AppendJsonString(body, response.version);
  if (!response.id.empty()) {
    body += ",\"id\":";
    AppendJsonString(body, response.id);
  }
  body += ",\"outputs\":[";
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const WireTensor& t = response.outputs[i];
    body += i > 0 ? ",{\"name\":" : "{\"name\":";
    AppendJsonString(body, t.name);
    absl::StrAppend(&body, ",\"datatype\":\"", WireTypeName(t.type), "\",\"shape\":[");
    for (size_t d = 0; d < t.shape.size(); ++d)
      absl::StrAppend(&body, d > 0 ? "," : "", t.shape[d]);
    body += ']';
    if (response.binary[i]) {
      absl::StrAppend(&body, ",\"parameters\":{\"binary_data_size\":", TensorBytes(t).size(), "}}");
      continue;
    }
    body += ",\"data\":";
    if (absl::Status s = AppendJsonData(body, t); !s.ok()) return ErrorResponse(s);
    body += '}';
  }
  body += "]}";
  if (blob_bytes == 0) return out;
  out.header_length = static_cast<int64_t>(body.size());
  out.content_type = "application/octet-stream";
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    if (!response.binary[i]) continue;
    const std::string_view bytes = TensorBytes(response.outputs[i]);
    body.append(bytes.data(), bytes.size());
  }
  return out;
}

void EncodeDeferred(HttpResponse& r) {
  if (!r.infer) return;
  std::shared_ptr<const InferResponse> infer = std::move(r.infer);
  auto headers = std::move(r.headers);
  r = EncodeHttpInfer(*infer);
  r.headers.insert(r.headers.end(), headers.begin(), headers.end());
}

}  // namespace loom::serve
