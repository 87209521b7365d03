#include "serve/grpc_codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpcpp/impl/codegen/proto_buffer_reader.h>

#include <limits>

#include "absl/strings/str_cat.h"

namespace loom::serve {
namespace {

namespace pb = ::inference;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

constexpr int kMaxParameters = 64;  // entries of one `parameters` map

// Field numbers of the messages scanned (grpc_service.proto).
constexpr int kRequestParameters = 4, kRequestInputs = 5, kRequestOutputs = 6, kRequestRaw = 7;
constexpr int kInputShape = 3, kInputParameters = 4, kInputContents = 5;
constexpr int kOutputParameters = 2;
constexpr int kContentsBytes = 8;

absl::Status NotProtobuf() {
  return absl::InvalidArgumentError("the message is not a ModelInferRequest");
}

// Memory of one element of a contents field in a parsed message, and per wire byte of it packed.
int64_t ElementBytes(int field) {
  switch (field) {
    case 1:
      return 1;  // bool
    case 2:
    case 4:
      return 4;  // int32, uint32 (varints: a byte each at least)
    case 6:
      return 4;  // float
    default:
      return 8;  // int64, uint64, double
  }
}

// What a scan found: counts against the limits, and the bound of memory.
struct Scan {
  const ServeLimits& limits;
  int64_t bytes = 0;

  absl::Status Count(int64_t n, int64_t most, const char* what) const {
    if (n > most) {
      return absl::InvalidArgumentError(
          absl::StrCat("the message has over ", most, " ", what, " (limits of the server)"));
    }
    return absl::OkStatus();
  }

  // Skips one field's value; `length` is set for a length-delimited one (else -1).
  static bool Skip(CodedInputStream& in, uint32_t tag, int64_t* length) {
    *length = -1;
    switch (WireFormatLite::GetTagWireType(tag)) {
      case WireFormatLite::WIRETYPE_VARINT: {
        uint64_t v;
        return in.ReadVarint64(&v);
      }
      case WireFormatLite::WIRETYPE_FIXED64:
        return in.Skip(8);
      case WireFormatLite::WIRETYPE_FIXED32:
        return in.Skip(4);
      case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
        uint32_t n;
        if (!in.ReadVarint32(&n)) return false;
        *length = n;
        return in.Skip(static_cast<int>(n));
      }
      default:
        return false;  // groups: not in this protocol
    }
  }

  // An InferTensorContents: the parsed arrays (doubled: they grow by doubling) and the tensors
  // they become.
  absl::Status Contents(CodedInputStream& in, int64_t* bytes_elements) {
    while (uint32_t tag = in.ReadTag()) {
      const int field = WireFormatLite::GetTagFieldNumber(tag);
      int64_t length = 0;
      if (!Skip(in, tag, &length)) return NotProtobuf();
      if (field == kContentsBytes) {  // a std::string each, then 4 bytes more in the wire form
        ++*bytes_elements;
        bytes += 64 + 2 * std::max<int64_t>(length, 0);
      } else if (field >= 1 && field < kContentsBytes) {
        // Packed: floats and doubles take their size each, other values a byte at least.
        const int64_t width = field == 6 ? 4 : field == 7 ? 8 : 1;
        const int64_t elements = length >= 0 ? length / width : 1;
        // The parsed array (varints: grown by doubling) and the tensor made from it.
        bytes += elements * ElementBytes(field) * (width == 1 ? 3 : 2);
      }
    }
    return Count(*bytes_elements, limits.max_tensor_elements, "BYTES elements");
  }

  // An InferInputTensor.
  absl::Status Input(CodedInputStream& in, int64_t* bytes_elements) {
    int64_t dims = 0, parameters = 0;
    while (uint32_t tag = in.ReadTag()) {
      const int field = WireFormatLite::GetTagFieldNumber(tag);
      if (field == kInputContents &&
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        uint32_t n;
        if (!in.ReadVarint32(&n)) return NotProtobuf();
        const auto limit = in.PushLimit(static_cast<int>(n));
        LOOM_RETURN_IF_ERROR(Contents(in, bytes_elements));
        if (!in.ConsumedEntireMessage() || in.BytesUntilLimit() != 0) return NotProtobuf();
        in.PopLimit(limit);
        continue;
      }
      int64_t length = 0;
      if (!Skip(in, tag, &length)) return NotProtobuf();
      if (field == kInputShape)
        dims += length >= 0 ? length : 1;  // packed: a byte per dim at least
      if (field == kInputParameters) ++parameters;
    }
    LOOM_RETURN_IF_ERROR(Count(dims, int64_t{10} * limits.max_rank, "bytes of shape"));
    return Count(parameters, kMaxParameters, "parameters on an input");
  }

  // A ModelInferRequest: the whole message.
  absl::Status Request(CodedInputStream& in) {
    int64_t inputs = 0, outputs = 0, raw = 0, parameters = 0, bytes_elements = 0;
    while (uint32_t tag = in.ReadTag()) {
      const int field = WireFormatLite::GetTagFieldNumber(tag);
      if (field == kRequestInputs &&
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        LOOM_RETURN_IF_ERROR(Count(++inputs, limits.max_tensors, "inputs"));
        uint32_t n;
        if (!in.ReadVarint32(&n)) return NotProtobuf();
        const auto limit = in.PushLimit(static_cast<int>(n));
        LOOM_RETURN_IF_ERROR(Input(in, &bytes_elements));
        if (!in.ConsumedEntireMessage() || in.BytesUntilLimit() != 0) return NotProtobuf();
        in.PopLimit(limit);
        continue;
      }
      int64_t length = 0;
      if (!Skip(in, tag, &length)) return NotProtobuf();
      if (field == kRequestOutputs) {
        LOOM_RETURN_IF_ERROR(Count(++outputs, limits.max_tensors, "outputs"));
        bytes += 2 * kMaxParameters * 64;  // its own parameters, bounded by the message's bytes
      }
      if (field == kRequestRaw)
        LOOM_RETURN_IF_ERROR(Count(++raw, limits.max_tensors, "raw inputs"));
      if (field == kRequestParameters) {
        LOOM_RETURN_IF_ERROR(Count(++parameters, kMaxParameters, "parameters"));
      }
    }
    return in.ConsumedEntireMessage() ? absl::OkStatus() : NotProtobuf();
  }
};

// The `timeout` parameter (microseconds), if the request has one.
absl::Status ReadTimeout(const google::protobuf::Map<std::string, pb::InferParameter>& parameters,
                         std::optional<int64_t>& timeout_us) {
  auto it = parameters.find("timeout");
  if (it == parameters.end()) return absl::OkStatus();
  const pb::InferParameter& p = it->second;
  if (p.has_int64_param() && p.int64_param() >= 0) {
    timeout_us = p.int64_param();
  } else if (p.has_uint64_param()) {
    timeout_us = static_cast<int64_t>(std::min<uint64_t>(p.uint64_param(), uint64_t{1} << 50));
  } else {
    return absl::InvalidArgumentError(
        "parameter 'timeout' must be a non-negative integer (microseconds)");
  }
  timeout_us = std::min<int64_t>(*timeout_us, int64_t{1} << 50);
  if (*timeout_us == 0) timeout_us.reset();  // 0: no timeout, as Triton reads it
  return absl::OkStatus();
}

// Copies typed contents into a fresh tensor, checking each value fits the datatype.
template <typename T, typename Field>
absl::Status CopyValues(const Field& field, Tensor& tensor, const std::string& name,
                        const char* field_name) {
  T* out = static_cast<T*>(tensor.data());
  for (int i = 0; i < field.size(); ++i) {
    const auto v = field.Get(i);
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (v < static_cast<decltype(v)>(std::numeric_limits<T>::lowest()) ||
          v > static_cast<decltype(v)>(std::numeric_limits<T>::max())) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", field_name, "[", i,
                                                       "] = ", v,
                                                       " is out of its datatype's range"));
      }
    }
    out[i] = static_cast<T>(v);
  }
  return absl::OkStatus();
}

// The field a datatype's values travel in, and how many it holds.
std::pair<const char*, int> ContentsField(WireType type, const pb::InferTensorContents& c) {
  switch (type) {
    case WireType::kBool:
      return {"bool_contents", c.bool_contents_size()};
    case WireType::kInt8:
    case WireType::kInt16:
    case WireType::kInt32:
      return {"int_contents", c.int_contents_size()};
    case WireType::kInt64:
      return {"int64_contents", c.int64_contents_size()};
    case WireType::kUInt8:
    case WireType::kUInt16:
    case WireType::kUInt32:
      return {"uint_contents", c.uint_contents_size()};
    case WireType::kUInt64:
      return {"uint64_contents", c.uint64_contents_size()};
    case WireType::kFp32:
      return {"fp32_contents", c.fp32_contents_size()};
    case WireType::kFp64:
      return {"fp64_contents", c.fp64_contents_size()};
    case WireType::kBytes:
      return {"bytes_contents", c.bytes_contents_size()};
    case WireType::kFp16:
      break;
  }
  return {"", 0};
}

int AllContents(const pb::InferTensorContents& c) {
  return c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() +
         c.uint_contents_size() + c.uint64_contents_size() + c.fp32_contents_size() +
         c.fp64_contents_size() + c.bytes_contents_size();
}

absl::Status CopyTyped(WireType type, const pb::InferTensorContents& c, Tensor& t,
                       const std::string& n, const char* field) {
  switch (type) {
    case WireType::kBool:
      return CopyValues<uint8_t>(c.bool_contents(), t, n, field);
    case WireType::kInt8:
      return CopyValues<int8_t>(c.int_contents(), t, n, field);
    case WireType::kInt16:
      return CopyValues<int16_t>(c.int_contents(), t, n, field);
    case WireType::kInt32:
      return CopyValues<int32_t>(c.int_contents(), t, n, field);
    case WireType::kInt64:
      return CopyValues<int64_t>(c.int64_contents(), t, n, field);
    case WireType::kUInt8:
      return CopyValues<uint8_t>(c.uint_contents(), t, n, field);
    case WireType::kFp32:
      return CopyValues<float>(c.fp32_contents(), t, n, field);
    case WireType::kFp64:
      return CopyValues<double>(c.fp64_contents(), t, n, field);
    default:
      return absl::OkStatus();  // types without a dtype are refused before
  }
}

absl::StatusOr<WireTensor> FromContents(const pb::ModelInferRequest::InferInputTensor& in,
                                        WireType type, const Shape& shape,
                                        const ServeLimits& limits) {
  int64_t elements = 0;
  LOOM_RETURN_IF_ERROR(CheckWireShape(in.name(), shape, limits, &elements));
  if (type == WireType::kFp16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", in.name(), "': FP16 has no typed contents: send it in raw_input_contents"));
  }
  const pb::InferTensorContents& c = in.contents();
  const auto [field, count] = ContentsField(type, c);
  if (AllContents(c) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", in.name(), "': datatype ", WireTypeName(type),
                     " takes its values in ", field, " only; the request fills other fields too"));
  }
  if (count != elements) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': shape ",
                                                   ShapeToString(shape), " has ", elements,
                                                   " elements, ", field, " has ", count));
  }
  if (type == WireType::kBytes) {
    std::string wire;
    for (const std::string& e : c.bytes_contents()) AppendBytesElement(wire, e);
    return OwnedBytesTensor(in.name(), shape, std::move(wire));
  }
  const std::optional<DType> dtype = ToDType(type);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': datatype ",
                                                   WireTypeName(type),
                                                   " is not one Loom's models take"));
  }
  WireTensor t;
  t.name = in.name();
  t.type = type;
  t.shape = shape;
  LOOM_ASSIGN_OR_RETURN(t.tensor, Tensor::TryAllocate(*dtype, shape));
  LOOM_RETURN_IF_ERROR(CopyTyped(type, c, t.tensor, t.name, field));
  return t;
}

}  // namespace

absl::StatusOr<int64_t> ScanInferRequest(const grpc::ByteBuffer& message,
                                         const ServeLimits& limits) {
  grpc::ByteBuffer copy(message);  // shares the slices; the reader consumes only its view
  grpc::ProtoBufferReader reader(&copy);
  CodedInputStream in(&reader);
  Scan scan{limits};
  LOOM_RETURN_IF_ERROR(scan.Request(in));
  return scan.bytes + static_cast<int64_t>(message.Length());
}

absl::StatusOr<InferRequest> FromProto(const pb::ModelInferRequest& m, const ServeLimits& limits) {
  InferRequest r;
  r.model = m.model_name();
  r.version = m.model_version();
  r.id = m.id();
  LOOM_RETURN_IF_ERROR(ReadTimeout(m.parameters(), r.timeout_us));
  if (m.inputs_size() > limits.max_tensors || m.outputs_size() > limits.max_tensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request has ", m.inputs_size(), " inputs and ", m.outputs_size(),
                     " outputs; the limit is ", limits.max_tensors, " (max_tensors)"));
  }
  const bool raw = m.raw_input_contents_size() > 0;
  if (raw && m.raw_input_contents_size() != m.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", m.raw_input_contents_size(), " entries for ",
                     m.inputs_size(), " inputs: give one per input, or none"));
  }
  for (int i = 0; i < m.inputs_size(); ++i) {
    const auto& in = m.inputs(i);
    LOOM_RETURN_IF_ERROR(CheckName("input", in.name(), limits));
    LOOM_ASSIGN_OR_RETURN(WireType type, ParseWireType(in.datatype()));
    if (in.shape_size() > limits.max_rank) {
      return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "': rank ",
                                                     in.shape_size(), " is over the limit of ",
                                                     limits.max_rank, " (max_rank)"));
    }
    const Shape shape(in.shape().begin(), in.shape().end());
    if (raw && AllContents(in.contents()) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", in.name(), "' has both contents and raw_input_contents"));
    }
    LOOM_ASSIGN_OR_RETURN(
        WireTensor t, raw ? TensorFromBytes(in.name(), type, shape, m.raw_input_contents(i), limits)
                          : FromContents(in, type, shape, limits));
    r.inputs.push_back(std::move(t));
  }
  for (const auto& o : m.outputs()) {
    LOOM_RETURN_IF_ERROR(CheckName("output", o.name(), limits));
    r.outputs.push_back({o.name(), true});
  }
  return r;
}

void ToProto(const InferResponse& r, pb::ModelInferResponse& m) {
  m.set_model_name(r.model);
  m.set_model_version(r.version);
  m.set_id(r.id);
  for (const WireTensor& t : r.outputs) {
    auto* out = m.add_outputs();
    out->set_name(t.name);
    out->set_datatype(WireTypeName(t.type));
    for (int64_t d : t.shape) out->add_shape(d);
    const std::string_view bytes = TensorBytes(t);
    m.add_raw_output_contents()->assign(bytes.data(), bytes.size());
  }
}

}  // namespace loom::serve
