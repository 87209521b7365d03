#include "serve/http_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <optional>
#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/log.h"

namespace loom::serve {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

// Names from a request may be any bytes: invalid UTF-8 is replaced, never thrown over.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
HttpResponse Json(int status, const json& body) { return {status, "application/json", Dump(body), -1}; }
HttpResponse Error(const absl::Status& s) { return Json(HttpStatus(s), {{"error", std::string(s.message())}}); }
HttpResponse Error(int status, const std::string& message) { return Json(status, {{"error", message}}); }

// The deepest nesting of arrays/objects in JSON text (outside strings): checked before parsing.
int JsonDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    if (c == ']' || c == '}') --depth;
  }
  return deepest;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    int hi = 0, lo = 0;
    if (s[i] == '%' && i + 2 < s.size() &&
        std::isxdigit(static_cast<unsigned char>(s[i + 1])) && std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      hi = std::isdigit(static_cast<unsigned char>(s[i + 1])) ? s[i + 1] - '0' : (std::tolower(s[i + 1]) - 'a' + 10);
      lo = std::isdigit(static_cast<unsigned char>(s[i + 2])) ? s[i + 2] - '0' : (std::tolower(s[i + 2]) - 'a' + 10);
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Appends the leaves of a (possibly nested) JSON array to `out`, up to `limit` of them.
absl::Status Flatten(const json& value, int depth, int max_depth, size_t limit, std::vector<const json*>& out) {
  if (depth > max_depth) return absl::InvalidArgumentError("'data' is nested too deeply");
  if (!value.is_array()) {
    if (out.size() >= limit) return absl::InvalidArgumentError("'data' has more elements than its shape");
    out.push_back(&value);
    return absl::OkStatus();
  }
  for (const json& v : value) LOOM_RETURN_IF_ERROR(Flatten(v, depth + 1, max_depth, limit, out));
  return absl::OkStatus();
}

template <typename T>
absl::Status Store(const std::vector<const json*>& leaves, Tensor& t, const std::string& name, bool integral,
                   bool unsigned_only) {
  T* out = static_cast<T*>(t.data());
  for (size_t i = 0; i < leaves.size(); ++i) {
    const json& v = *leaves[i];
    if (integral ? !(v.is_number_integer() && (!unsigned_only || v.is_number_unsigned())) : !v.is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "': element ", i, " is ", Dump(v),
                                                     integral ? ", not an integer" : ", not a number"));
    }
    if constexpr (std::is_integral_v<T>) {
      // Out of the datatype's range is an error, never a silent wrap (the gRPC path checks alike).
      const bool fits = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                            : v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                  (std::is_unsigned_v<T> || v.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max()));
      if (!fits) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': element ", i, " is ", Dump(v),
                                                       ", out of its datatype's range"));
      }
    }
    out[i] = v.get<T>();
  }
  return absl::OkStatus();
}

// A JSON input's `data` as a tensor of `type` and `shape` (elements checked against the shape
// before anything is allocated).
absl::StatusOr<WireTensor> TensorFromJson(const std::string& name, WireType type, const Shape& shape,
                                          const json& data, size_t text_size, const ServeLimits& limits) {
  int64_t elements = 0;
  LOOM_RETURN_IF_ERROR(CheckWireShape(name, shape, limits, &elements));
  if (static_cast<size_t>(elements) > text_size) {  // every JSON element takes at least a byte
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': shape ", ShapeToString(shape), " needs ",
                                                   elements, " elements; the request is too small to hold them"));
  }
  if (!data.is_array()) return absl::InvalidArgumentError(absl::StrCat("input '", name, "': 'data' must be an array"));
  std::vector<const json*> leaves;
  LOOM_RETURN_IF_ERROR(Flatten(data, 0, limits.max_json_depth, static_cast<size_t>(elements) + 1, leaves));
  if (static_cast<int64_t>(leaves.size()) != elements) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': shape ", ShapeToString(shape), " has ",
                                                   elements, " elements, 'data' has ", leaves.size()));
  }
  WireTensor t;
  t.name = name;
  t.type = type;
  t.shape = shape;
  if (type == WireType::kBytes) {
    for (const json* v : leaves) {
      if (!v->is_string()) return absl::InvalidArgumentError(absl::StrCat("input '", name, "': BYTES elements are strings"));
      t.bytes.push_back(v->get<std::string>());
    }
    return t;
  }
  const std::optional<DType> dtype = ToDType(type);
  if (!dtype || type == WireType::kFp16) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': datatype ", WireTypeName(type),
                                                   type == WireType::kFp16 ? " has no JSON form: send it as binary data"
                                                                           : " is not one Loom's models take"));
  }
  LOOM_ASSIGN_OR_RETURN(t.tensor, Tensor::TryAllocate(*dtype, shape));
  switch (type) {
    case WireType::kBool: {
      uint8_t* out = static_cast<uint8_t*>(t.tensor.data());
      for (size_t i = 0; i < leaves.size(); ++i) {
        if (!leaves[i]->is_boolean()) return absl::InvalidArgumentError(absl::StrCat("input '", name, "': element ", i, " is not true or false"));
        out[i] = leaves[i]->get<bool>() ? 1 : 0;
      }
      return t;
    }
    case WireType::kUInt8: LOOM_RETURN_IF_ERROR(Store<uint8_t>(leaves, t.tensor, name, true, true)); return t;
    case WireType::kInt8: LOOM_RETURN_IF_ERROR(Store<int8_t>(leaves, t.tensor, name, true, false)); return t;
    case WireType::kInt16: LOOM_RETURN_IF_ERROR(Store<int16_t>(leaves, t.tensor, name, true, false)); return t;
    case WireType::kInt32: LOOM_RETURN_IF_ERROR(Store<int32_t>(leaves, t.tensor, name, true, false)); return t;
    case WireType::kInt64: LOOM_RETURN_IF_ERROR(Store<int64_t>(leaves, t.tensor, name, true, false)); return t;
    case WireType::kFp32: LOOM_RETURN_IF_ERROR(Store<float>(leaves, t.tensor, name, false, false)); return t;
    case WireType::kFp64: LOOM_RETURN_IF_ERROR(Store<double>(leaves, t.tensor, name, false, false)); return t;
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat("input '", name, "': datatype ", WireTypeName(type), " is not supported"));
}

template <typename T>
json Values(const WireTensor& t) {
  const T* p = static_cast<const T*>(t.tensor.data());
  json out = json::array();
  for (int64_t i = 0, n = t.tensor.element_count(); i < n; ++i) out.push_back(p[i]);
  return out;
}

absl::StatusOr<json> OutputData(const WireTensor& t) {
  switch (t.type) {
    case WireType::kBool: {
      json out = json::array();
      const uint8_t* p = static_cast<const uint8_t*>(t.tensor.data());
      for (int64_t i = 0; i < t.tensor.element_count(); ++i) out.push_back(p[i] != 0);
      return out;
    }
    case WireType::kUInt8: return Values<uint8_t>(t);
    case WireType::kInt8: return Values<int8_t>(t);
    case WireType::kInt16: return Values<int16_t>(t);
    case WireType::kInt32: return Values<int32_t>(t);
    case WireType::kInt64: return Values<int64_t>(t);
    case WireType::kFp32: return Values<float>(t);
    case WireType::kFp64: return Values<double>(t);
    case WireType::kBytes: return json(t.bytes);
    default:
      return absl::InvalidArgumentError(absl::StrCat("output '", t.name, "' is ", WireTypeName(t.type),
                                                     ", which has no JSON form: ask for it as binary data"));
  }
}

// The parsed request's parameters.
absl::StatusOr<InferRequest> ParseInfer(const std::string& model, const std::string& version, const json& header,
                                        std::string_view binary, size_t text_size, const ServeLimits& limits) {
  InferRequest r;
  r.model = model;
  r.version = version;
  if (!header.is_object()) return absl::InvalidArgumentError("the request must be a JSON object");
  if (header.contains("id")) {
    if (!header["id"].is_string()) return absl::InvalidArgumentError("'id' must be a string");
    r.id = header["id"].get<std::string>();
  }
  if (header.contains("parameters")) {
    const json& p = header["parameters"];
    if (!p.is_object()) return absl::InvalidArgumentError("'parameters' must be an object");
    if (p.contains("binary_data_output")) {
      if (!p["binary_data_output"].is_boolean()) return absl::InvalidArgumentError("'binary_data_output' must be true or false");
      r.binary_outputs = p["binary_data_output"].get<bool>();
    }
    if (p.contains("timeout")) {
      if (!p["timeout"].is_number_unsigned()) return absl::InvalidArgumentError("'timeout' must be a non-negative integer (microseconds)");
      const uint64_t us = p["timeout"].get<uint64_t>();
      if (us > 0) r.timeout_us = static_cast<int64_t>(std::min<uint64_t>(us, uint64_t{1} << 50));  // 0: none (Triton)
    }
  }
  if (!header.contains("inputs") || !header["inputs"].is_array()) {
    return absl::InvalidArgumentError("the request needs an 'inputs' array");
  }
  const json& inputs = header["inputs"];
  if (static_cast<int>(inputs.size()) > limits.max_tensors) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", inputs.size(), " inputs, over the limit of ",
                                                   limits.max_tensors, " (max_tensors)"));
  }
  size_t offset = 0;
  for (const json& in : inputs) {
    if (!in.is_object()) return absl::InvalidArgumentError("each input must be an object");
    if (!in.contains("name") || !in["name"].is_string()) return absl::InvalidArgumentError("an input needs a 'name' (string)");
    const std::string name = in["name"].get<std::string>();
    if (!in.contains("datatype") || !in["datatype"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' needs a 'datatype' (string)"));
    }
    LOOM_ASSIGN_OR_RETURN(WireType type, ParseWireType(in["datatype"].get<std::string>()));
    if (!in.contains("shape") || !in["shape"].is_array() || static_cast<int>(in["shape"].size()) > limits.max_rank) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' needs a 'shape': a list of at most ",
                                                     limits.max_rank, " dims"));
    }
    Shape shape;
    for (const json& d : in["shape"]) {
      if (!d.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("input '", name, "': shape dims are integers"));
      if (d.is_number_unsigned() && d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': a dim of the shape overflows"));
      }
      shape.push_back(d.get<int64_t>());
    }
    const bool has_data = in.contains("data");
    std::optional<int64_t> binary_size;
    if (in.contains("parameters")) {
      const json& p = in["parameters"];
      if (!p.is_object()) return absl::InvalidArgumentError(absl::StrCat("input '", name, "': 'parameters' must be an object"));
      if (p.contains("binary_data_size")) {
        if (!p["binary_data_size"].is_number_unsigned()) {
          return absl::InvalidArgumentError(absl::StrCat("input '", name, "': 'binary_data_size' must be a non-negative integer"));
        }
        const uint64_t n = p["binary_data_size"].get<uint64_t>();
        if (n > binary.size()) {
          return absl::InvalidArgumentError(absl::StrCat("input '", name, "': 'binary_data_size' is ", n, " bytes but only ",
                                                         binary.size() - std::min(offset, binary.size()),
                                                         " binary bytes remain in the request"));
        }
        binary_size = static_cast<int64_t>(n);
      }
    }
    if (has_data == binary_size.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' must set exactly one of 'data' and "
                                                     "'parameters.binary_data_size'"));
    }
    if (binary_size) {
      if (static_cast<uint64_t>(*binary_size) > binary.size() - offset) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': 'binary_data_size' is ", *binary_size,
                                                       " bytes but only ", binary.size() - offset, " remain"));
      }
      LOOM_ASSIGN_OR_RETURN(WireTensor t, TensorFromBytes(name, type, shape, binary.substr(offset, static_cast<size_t>(*binary_size)), limits));
      offset += static_cast<size_t>(*binary_size);
      r.inputs.push_back(std::move(t));
    } else {
      LOOM_ASSIGN_OR_RETURN(WireTensor t, TensorFromJson(name, type, shape, in["data"], text_size, limits));
      r.inputs.push_back(std::move(t));
    }
  }
  if (offset != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat(binary.size() - offset,
                                                   " bytes of binary data follow the inputs that no input claims"));
  }
  if (header.contains("outputs")) {
    const json& outputs = header["outputs"];
    if (!outputs.is_array() || static_cast<int>(outputs.size()) > limits.max_tensors) {
      return absl::InvalidArgumentError("'outputs' must be a list of at most max_tensors outputs");
    }
    for (const json& o : outputs) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return absl::InvalidArgumentError("each requested output needs a 'name' (string)");
      }
      RequestedOutput ro{o["name"].get<std::string>(), r.binary_outputs};  // binary_data_output is the default
      if (o.contains("parameters")) {
        const json& p = o["parameters"];
        if (!p.is_object()) return absl::InvalidArgumentError("an output's 'parameters' must be an object");
        if (p.contains("binary_data")) {
          if (!p["binary_data"].is_boolean()) return absl::InvalidArgumentError("'binary_data' must be true or false");
          ro.binary = p["binary_data"].get<bool>();
        }
      }
      r.outputs.push_back(std::move(ro));
    }
  }
  return r;
}

HttpResponse Respond(const InferResponse& response) {
  json outputs = json::array();
  std::string blobs, storage;
  for (size_t i = 0; i < response.outputs.size(); ++i) {
    const WireTensor& t = response.outputs[i];
    json o = {{"name", t.name}, {"datatype", WireTypeName(t.type)}, {"shape", t.shape}};
    if (response.binary[i]) {
      const std::string_view bytes = TensorBytes(t, storage);
      o["parameters"] = {{"binary_data_size", bytes.size()}};
      blobs.append(bytes);
    } else {
      auto data = OutputData(t);
      if (!data.ok()) return Error(data.status());
      o["data"] = std::move(*data);
    }
    outputs.push_back(std::move(o));
  }
  json header = {{"model_name", response.model}, {"model_version", response.version}, {"outputs", std::move(outputs)}};
  if (!response.id.empty()) header["id"] = response.id;
  std::string body = Dump(header);
  if (blobs.empty()) return {200, "application/json", std::move(body), -1};
  const int64_t header_length = static_cast<int64_t>(body.size());
  body += blobs;
  return {200, "application/octet-stream", std::move(body), header_length};
}

HttpResponse HandleInfer(DataPlane& plane, const std::string& model, const std::string& version,
                         const std::optional<std::string>& header_length, const std::string& body) {
  // An unknown model is named before anything of the body is read.
  if (absl::Status s = plane.ModelReady(model, version); s.code() == absl::StatusCode::kNotFound) return Error(s);
  size_t json_size = body.size();
  if (header_length) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(*header_length, &n) || n < 0 || static_cast<uint64_t>(n) > body.size()) {
      return Error(400, absl::StrCat("Inference-Header-Content-Length is '", *header_length,
                                     "', but the body has ", body.size(), " bytes"));
    }
    json_size = static_cast<size_t>(n);
  }
  const std::string_view text(body.data(), json_size);
  if (JsonDepth(text) > plane.limits().max_json_depth + 4) {
    return Error(400, absl::StrCat("the request's JSON is nested deeper than ", plane.limits().max_json_depth + 4));
  }
  json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    plane.CountRejected(model, "http", absl::InvalidArgumentError(""));
    return Error(400, "the request is not valid JSON");
  }
  auto request = ParseInfer(model, version, header, std::string_view(body).substr(json_size), json_size, plane.limits());
  if (!request.ok()) {
    plane.CountRejected(model, "http", request.status());
    return Error(request.status());
  }
  auto response = plane.InferSync(std::move(*request), "http");
  if (!response.ok()) return Error(response.status());
  return Respond(*response);
}

}  // namespace

HttpResponse HandleHttp(DataPlane& plane, const std::string& method, const std::string& target,
                        std::optional<std::string> header_length, const std::string& body) {
  const std::string path = PercentDecode(target.substr(0, target.find('?')));
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  const bool get = method == "GET", post = method == "POST";
  auto wrong_method = [&] { return Error(405, absl::StrCat("method ", method, " is not allowed on ", path)); };
  if (parts.size() == 1 && parts[0] == "metrics") {
    if (!get) return wrong_method();
    return {200, "text/plain; version=0.0.4", plane.Metrics(), -1};
  }
  if (parts.empty() || parts[0] != "v2") return Error(404, absl::StrCat("no route ", path, " (this is a KServe v2 server: /v2/...)"));
  if (parts.size() == 1) {
    if (!get) return wrong_method();
    const ServerMetadata m = plane.Metadata();
    return Json(200, {{"name", m.name}, {"version", m.version}, {"extensions", m.extensions}});
  }
  if (parts.size() == 3 && parts[1] == "health" && (parts[2] == "live" || parts[2] == "ready")) {
    if (!get) return wrong_method();
    if (parts[2] == "live") return Json(200, {{"live", true}});
    const bool ready = plane.Ready();
    return Json(ready ? 200 : 503, {{"ready", ready}});
  }
  if (parts.size() >= 2 && parts[1] == "repository") {
    if (!post) return wrong_method();
    if (parts.size() == 3 && parts[2] == "index") {
      bool ready_only = false;
      if (!body.empty()) {
        json j = json::parse(body, nullptr, false);
        if (j.is_discarded() || !j.is_object()) return Error(400, "the index request is not a JSON object");
        if (j.contains("ready")) {
          if (!j["ready"].is_boolean()) return Error(400, "'ready' must be true or false");
          ready_only = j["ready"].get<bool>();
        }
      }
      json out = json::array();
      for (const RepositoryEntry& e : plane.Index(ready_only)) {
        json entry = {{"name", e.name}, {"state", e.state}};
        if (!e.version.empty()) entry["version"] = e.version;
        if (!e.reason.empty()) entry["reason"] = e.reason;
        out.push_back(std::move(entry));
      }
      return Json(200, out);
    }
    if (parts.size() == 5 && parts[2] == "models" && (parts[4] == "load" || parts[4] == "unload")) {
      const absl::Status s = parts[4] == "load" ? plane.Load(parts[3]) : plane.Unload(parts[3]);
      return s.ok() ? Json(200, json::object()) : Error(s);
    }
    return Error(404, absl::StrCat("no route ", path));
  }
  if (parts.size() >= 3 && parts[1] == "models") {
    const std::string model = parts[2];
    std::string version;
    size_t next = 3;
    if (parts.size() >= 5 && parts[3] == "versions") {
      version = parts[4];
      next = 5;
    }
    if (parts.size() == next) {
      if (!get) return wrong_method();
      auto m = plane.Metadata(model, version);
      if (!m.ok()) return Error(m.status());
      auto tensors = [](const std::vector<TensorMetadata>& ts) {
        json out = json::array();
        for (const TensorMetadata& t : ts) out.push_back({{"name", t.name}, {"datatype", WireTypeName(t.type)}, {"shape", t.shape}});
        return out;
      };
      return Json(200, {{"name", m->name}, {"versions", m->versions}, {"platform", m->platform},
                        {"inputs", tensors(m->inputs)}, {"outputs", tensors(m->outputs)}});
    }
    if (parts.size() == next + 1 && parts[next] == "ready") {
      if (!get) return wrong_method();
      const absl::Status s = plane.ModelReady(model, version);
      if (s.code() == absl::StatusCode::kNotFound) return Error(s);
      return Json(s.ok() ? 200 : 503, {{"name", model}, {"ready", s.ok()}});
    }
    if (parts.size() == next + 1 && parts[next] == "infer") {
      if (!post) return wrong_method();
      return HandleInfer(plane, model, version, header_length, body);
    }
  }
  return Error(404, absl::StrCat("no route ", path));
}

// ------------------------------------------------------------------------------------------------
// The server: an accept thread, and a thread per connection.

struct HttpServer::Impl {
  DataPlane& plane;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  int port = 0;
  std::thread accept_thread;
  std::mutex mu;
  struct Connection {
    std::mutex fd_mu;
    int fd = -1;  // requires fd_mu; -1 once closed
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<bool> idle{true};  // waiting for the first byte of its next request
  };
  std::list<Connection> connections;  // requires mu
  std::atomic<bool> stopping{false};
  std::atomic<int> active{0};

  explicit Impl(DataPlane& p) : plane(p) {}

  void Reap() {  // requires mu: joins the threads of closed connections
    for (auto it = connections.begin(); it != connections.end();) {
      if (it->done) {
        it->thread.join();
        it = connections.erase(it);
      } else {
        ++it;
      }
    }
  }

  void Accept() {
    while (!stopping) {
      tcp::socket socket(io);
      boost::system::error_code ec;
      acceptor.accept(socket, ec);
      if (ec) {
        if (stopping) return;
        continue;
      }
      std::lock_guard<std::mutex> lock(mu);
      Reap();
      if (active >= plane.limits().max_connections) {
        // Over the limit: answered at once, closed, nothing read.
        const std::string body = absl::StrCat("{\"error\":\"too many connections (max_connections ",
                                              plane.limits().max_connections, ")\"}");
        const std::string reply = absl::StrCat("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                               "Connection: close\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
        asio::write(socket, asio::buffer(reply), ec);
        socket.shutdown(tcp::socket::shutdown_both, ec);
        continue;
      }
      ++active;
      connections.emplace_back();
      Connection& c = connections.back();
      c.fd = socket.native_handle();
      try {
        c.thread = std::thread([this, &c, s = std::move(socket)]() mutable {
          try {
            Serve(std::move(s), c);
          } catch (const std::exception& e) {
            Log().error("HTTP connection: {}", e.what());
          }
          --active;
          c.done = true;
        });
      } catch (const std::system_error& e) {
        // No thread to be had (a pids limit): this connection is closed unanswered, the server goes on.
        Log().error("HTTP connection refused: cannot start its thread: {}", e.what());
        --active;
        connections.pop_back();
      }
    }
  }

  // Waits until `fd` is ready for `events` or `deadline` passes (false).
  // `give_up` is asked every 100 ms (a connection idle when the server stops).
  static bool WaitFd(int fd, short events, std::chrono::steady_clock::time_point deadline,
                     const std::function<bool()>& give_up = nullptr) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || (give_up && give_up())) return false;
      pollfd p{fd, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  static bool WouldBlock(const boost::system::error_code& ec) {
    return ec == asio::error::would_block || ec == asio::error::try_again;
  }

  // Serves one connection until the client closes it, a request fails, a deadline passes or the
  // server stops. The socket is non-blocking and every wait is a poll() bounded by the deadline:
  // reading a request (from its first wait) and writing an answer each have read_timeout_ms.
  void Serve(tcp::socket socket, Connection& connection) {
    const int fd = socket.native_handle();
    const auto timeout = std::chrono::milliseconds(plane.limits().read_timeout_ms);
    boost::system::error_code ec;
    socket.non_blocking(true, ec);
    int yes = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
    beast::flat_buffer buffer;
    while (!stopping && !ec) {
      connection.idle = buffer.size() == 0;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<uint32_t>(plane.limits().max_header_bytes));
      parser.body_limit(static_cast<uint64_t>(plane.limits().max_body_bytes));
      // A client that trickles a byte at a time (slowloris), or says nothing, is cut off at the
      // deadline; it holds this connection's thread meanwhile, never an engine worker.
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      bool too_slow = false, continued = false;
      while (!parser.is_done()) {
        if (buffer.size() > 0) {
          const size_t used = parser.put(buffer.data(), ec);
          buffer.consume(used);
          if (ec == http::error::need_more) {
            ec = {};
          } else if (ec) {
            break;
          }
          if (parser.is_header_done() && !continued && !parser.is_done()) {
            // `Expect: 100-continue` (curl, for large bodies): say go on instead of making it wait.
            continued = true;
            const auto expect = parser.get().find(http::field::expect);
            if (expect != parser.get().end() && beast::iequals(expect->value(), "100-continue")) {
              static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
              if (!WriteAll(socket, fd, kContinue, deadline)) break;
            }
          }
          if (parser.is_done()) break;
          if (used > 0 && buffer.size() > 0) continue;
        }
        const size_t got = socket.read_some(buffer.prepare(64 << 10), ec);
        buffer.commit(got);
        if (got > 0) connection.idle = false;
        if (WouldBlock(ec)) {
          ec = {};
          if (!WaitFd(fd, POLLIN, deadline, [&] { return stopping && connection.idle; })) {
            too_slow = true;
            break;
          }
          continue;
        }
        if (ec == asio::error::eof) {
          if (!parser.got_some() && buffer.size() == 0) {
            ec = http::error::end_of_stream;
          } else {
            ec = {};
            parser.put_eof(ec);
          }
          break;
        }
        if (ec) break;
      }
      if (too_slow || (stopping && connection.idle)) break;
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) break;
      // Closed by Stop() while idle: a request that was never read is not answered half-read.
      if (ec && stopping) break;
      HttpResponse out;
      bool close = false;
      if (ec == http::error::body_limit) {
        out = Error(413, absl::StrCat("the request body is over the limit of ", plane.limits().max_body_bytes,
                                      " bytes (max_body_bytes)"));
        close = true;
      } else if (ec == http::error::header_limit) {
        out = Error(431, absl::StrCat("the request header is over the limit of ", plane.limits().max_header_bytes,
                                      " bytes (max_header_bytes)"));
        close = true;
      } else if (ec) {
        out = Error(400, absl::StrCat("malformed HTTP request: ", ec.message()));
        close = true;
      } else {
        const auto& req = parser.get();
        std::optional<std::string> header_length;
        if (auto it = req.find("Inference-Header-Content-Length"); it != req.end()) header_length = std::string(it->value());
        try {
          out = HandleHttp(plane, std::string(req.method_string()), std::string(req.target()), header_length, req.body());
        } catch (const std::exception& e) {
          out = Error(500, absl::StrCat("internal error: ", e.what()));
        }
        close = !req.keep_alive();
      }
      // Draining or stopping: this answer closes the connection, so clients leave cleanly.
      close = close || stopping || plane.draining();
      http::response<http::string_body> res{static_cast<http::status>(out.status), 11};
      res.set(http::field::server, "loom");
      res.set(http::field::content_type, out.content_type);
      if (out.header_length >= 0) res.set("Inference-Header-Content-Length", std::to_string(out.header_length));
      res.keep_alive(!close);
      res.body() = std::move(out.body);
      res.prepare_payload();
      ec = {};
      http::serializer<false, http::string_body> serializer{res};
      const auto write_deadline = std::chrono::steady_clock::now() + timeout;
      while (!serializer.is_done()) {
        http::write_some(socket, serializer, ec);
        if (WouldBlock(ec)) {
          ec = {};
          if (!WaitFd(fd, POLLOUT, write_deadline)) {
            ec = asio::error::timed_out;  // a client that does not read its answer is cut off
            break;
          }
          continue;
        }
        if (ec) break;
      }
      if (ec || close) break;
    }
    {
      std::lock_guard<std::mutex> lock(connection.fd_mu);  // Stop() never shuts down a reused fd
      connection.fd = -1;
      socket.shutdown(tcp::socket::shutdown_both, ec);
      socket.close(ec);
    }
  }

  static bool WriteAll(tcp::socket& socket, int fd, std::string_view bytes, std::chrono::steady_clock::time_point deadline) {
    boost::system::error_code ec;
    while (!bytes.empty()) {
      const size_t n = socket.write_some(asio::buffer(bytes.data(), bytes.size()), ec);
      bytes.remove_prefix(n);
      if (WouldBlock(ec)) {
        if (!WaitFd(fd, POLLOUT, deadline)) return false;
        continue;
      }
      if (ec) return false;
    }
    return true;
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(DataPlane& plane, const std::string& host, int port) {
  auto impl = std::make_unique<Impl>(plane);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("'", host, "' is not an IP address to listen on"));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port, ": ", ec.message()));
  impl->port = impl->acceptor.local_endpoint().port();
  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->Accept(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  boost::system::error_code ec;
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);  // unblocks accept()
  impl_->acceptor.close(ec);
  if (impl_->accept_thread.joinable()) impl_->accept_thread.join();
  std::lock_guard<std::mutex> lock(impl_->mu);
  // Connections waiting for a request are closed; one being read or answered finishes first (its
  // read is bounded by read_timeout_ms) and then closes.
  for (auto& c : impl_->connections) {
    std::lock_guard<std::mutex> fd_lock(c.fd_mu);
    if (!c.done && c.idle && c.fd >= 0) ::shutdown(c.fd, SHUT_RD);
  }
  for (auto& c : impl_->connections) c.thread.join();
  impl_->connections.clear();
}

}  // namespace loom::serve
