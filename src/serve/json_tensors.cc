#include "serve/json_tensors.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace loom::serve {
namespace {

using json = nlohmann::json;

// One element of `data` as the parser saw it.
struct Leaf {
  enum Kind { kNull, kBool, kInt, kUint, kFloat, kString } kind = kNull;
  bool b = false;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  const std::string* s = nullptr;
};

const char* KindName(Leaf::Kind k) {
  switch (k) {
    case Leaf::kNull:
      return "null";
    case Leaf::kBool:
      return "true or false";
    case Leaf::kInt:
    case Leaf::kUint:
      return "an integer";
    case Leaf::kFloat:
      return "a number with a fraction or exponent";
    case Leaf::kString:
      return "a string";
  }
  return "a value";
}

// Where one input's `data` goes: its tensor, allocated from the declared datatype and shape once
// they are checked, filled element by element.
class Target {
 public:
  // The target for the input object `input` (its datatype and shape read so far), or the error.
  static absl::StatusOr<Target> For(const json& input, size_t index, size_t text_size,
                                    const ServeLimits& limits, InflightBudget::Charge* charge) {
    Target t;
    t.t_.name = input.contains("name") && input["name"].is_string()
                    ? input["name"].get<std::string>()
                    : absl::StrCat("inputs[", index, "]");
    const std::string& name = t.t_.name;
    if (!input["datatype"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' needs a 'datatype' (string)"));
    }
    LOOM_ASSIGN_OR_RETURN(t.t_.type, ParseWireType(input["datatype"].get<std::string>()));
    const json& shape = input["shape"];
    if (!shape.is_array() || static_cast<int>(shape.size()) > limits.max_rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", name, "' needs a 'shape': a list of at most ", limits.max_rank, " dims"));
    }
    for (const json& d : shape) {
      if (!d.is_number_integer() ||
          (d.is_number_unsigned() && d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': shape dims are integers up to 2^63-1"));
      }
      t.t_.shape.push_back(d.get<int64_t>());
    }
    LOOM_RETURN_IF_ERROR(CheckWireShape(name, t.t_.shape, limits, &t.elements_));
    if (static_cast<size_t>(t.elements_) > text_size) {  // every element takes at least a byte
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': shape ", ShapeToString(t.t_.shape), " needs ",
                       t.elements_, " elements; the request is too small to hold them"));
    }
    if (t.t_.type == WireType::kBytes) {  // at most 4 bytes per element more than the text
      LOOM_RETURN_IF_ERROR(charge->Take(4 * t.elements_ + static_cast<int64_t>(text_size)));
      return t;
    }
    const std::optional<DType> dtype = ToDType(t.t_.type);
    if (!dtype || t.t_.type == WireType::kFp16) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': datatype ", WireTypeName(t.t_.type),
                       t.t_.type == WireType::kFp16 ? " has no JSON form: send it as binary data"
                                                    : " is not one Loom's models take"));
    }
    LOOM_RETURN_IF_ERROR(charge->Take(t.elements_ * static_cast<int64_t>(DTypeSize(*dtype))));
    LOOM_ASSIGN_OR_RETURN(t.t_.tensor, Tensor::TryAllocate(*dtype, t.t_.shape));
    return t;
  }

  absl::Status Put(const Leaf& leaf) {
    if (count_ >= elements_) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t_.name, "': shape ",
                                                     ShapeToString(t_.shape), " has ", elements_,
                                                     " elements, 'data' has more"));
    }
    absl::Status s;
    switch (t_.type) {
      case WireType::kBool:
        if (leaf.kind != Leaf::kBool) return Wrong(leaf, "true or false");
        static_cast<uint8_t*>(t_.tensor.data())[count_] = leaf.b ? 1 : 0;
        break;
      case WireType::kUInt8:
        s = Integer<uint8_t>(leaf);
        break;
      case WireType::kInt8:
        s = Integer<int8_t>(leaf);
        break;
      case WireType::kInt16:
        s = Integer<int16_t>(leaf);
        break;
      case WireType::kInt32:
        s = Integer<int32_t>(leaf);
        break;
      case WireType::kInt64:
        s = Integer<int64_t>(leaf);
        break;
      case WireType::kFp32:
        s = Number<float>(leaf);
        break;
      case WireType::kFp64:
        s = Number<double>(leaf);
        break;
      case WireType::kBytes:
        if (leaf.kind != Leaf::kString) return Wrong(leaf, "a string (BYTES elements are strings)");
        AppendBytesElement(wire_, *leaf.s);
        break;
      default:
        return absl::InvalidArgumentError("unsupported datatype");  // refused in For
    }
    ++count_;
    return s;
  }

  // The tensor once its data has ended.
  absl::StatusOr<WireTensor> Finish() {
    if (count_ != elements_) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t_.name, "': shape ",
                                                     ShapeToString(t_.shape), " has ", elements_,
                                                     " elements, 'data' has ", count_));
    }
    if (t_.type == WireType::kBytes) return OwnedBytesTensor(t_.name, t_.shape, std::move(wire_));
    return std::move(t_);
  }

 private:
  absl::Status Wrong(const Leaf& leaf, const char* wanted) const {
    return absl::InvalidArgumentError(absl::StrCat("input '", t_.name, "': element ", count_,
                                                   " is ", KindName(leaf.kind), ", not ", wanted));
  }

  template <typename T>
  absl::Status Integer(const Leaf& leaf) {
    // Out of the datatype's range is an error, never a silent wrap (the gRPC path checks alike).
    bool fits = false;
    T value = 0;
    if (leaf.kind == Leaf::kUint) {
      fits = leaf.u <= static_cast<uint64_t>(std::numeric_limits<T>::max());
      value = static_cast<T>(leaf.u);
    } else if (leaf.kind == Leaf::kInt) {  // negative
      if constexpr (std::is_signed_v<T> && sizeof(T) < sizeof(int64_t)) {
        fits = leaf.i >= static_cast<int64_t>(std::numeric_limits<T>::min());
      } else {
        fits = std::is_signed_v<T>;
      }
      value = static_cast<T>(leaf.i);
    } else {
      return Wrong(leaf, "an integer");
    }
    if (!fits) {
      return absl::InvalidArgumentError(absl::StrCat("input '", t_.name, "': element ", count_,
                                                     " is out of its datatype's range"));
    }
    static_cast<T*>(t_.tensor.data())[count_] = value;
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Number(const Leaf& leaf) {
    double v = 0;
    switch (leaf.kind) {
      case Leaf::kInt:
        v = static_cast<double>(leaf.i);
        break;
      case Leaf::kUint:
        v = static_cast<double>(leaf.u);
        break;
      case Leaf::kFloat:
        v = leaf.f;
        break;
      default:
        return Wrong(leaf, "a number");
    }
    if constexpr (std::is_same_v<T, float>) {  // beyond float's range: infinity, never UB
      if (std::fabs(v) > std::numeric_limits<float>::max()) {
        v = std::copysign(std::numeric_limits<double>::infinity(), v);
      }
    }
    static_cast<T*>(t_.tensor.data())[count_] = static_cast<T>(v);
    return absl::OkStatus();
  }

  WireTensor t_;
  int64_t elements_ = 0, count_ = 0;
  std::string wire_;  // BYTES
};

bool DeclaresType(const json& input) {
  return input.contains("datatype") && input.contains("shape");
}

// The parser's events. Pass 1 (`header` set) builds the DOM outside the inputs' data and decodes
// the data of each input whose datatype and shape came first; pass 2 (`header` null) decodes
// the inputs in `targets` only.
class RequestSax {
 public:
  RequestSax(const ServeLimits& limits, size_t text_size, json* header,
             std::map<size_t, Target>* targets, std::map<size_t, WireTensor>* decoded,
             InflightBudget::Charge* charge)
      : limits_(limits),
        text_size_(text_size),
        header_(header),
        targets_(targets),
        decoded_(decoded),
        charge_(charge) {}

  bool null() { return Scalar({}, nullptr); }
  bool boolean(bool b) { return Scalar({Leaf::kBool, b}, b); }
  bool number_integer(int64_t v) { return Scalar({Leaf::kInt, false, v}, v); }
  bool number_unsigned(uint64_t v) { return Scalar({Leaf::kUint, false, 0, v}, v); }
  bool number_float(double v, const std::string&) {
    return Scalar({Leaf::kFloat, false, 0, 0, v}, v);
  }
  bool string(std::string& s) {
    Leaf leaf;
    leaf.kind = Leaf::kString;
    leaf.s = &s;
    if (data_depth_ > 0) return DataLeaf(leaf);
    return Begin(json(std::move(s)), false, false);
  }
  bool binary(json::binary_t&) { return Fail("binary values are not JSON"); }
  bool start_object(size_t) {
    if (data_depth_ > 0 || AtData()) return Fail(Where() + "'data' must be an array of values");
    return Begin(json::object(), true, true);
  }
  bool key(std::string& k) {
    if (header_ && stack_.back().node->contains(k)) {
      return Fail(absl::StrCat("the key '", k.substr(0, 64), "' appears twice in one object"));
    }
    stack_.back().key = std::move(k);
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool start_array(size_t) {
    if (data_depth_ > 0) {
      if (++data_depth_ > limits_.max_json_depth)
        return Fail(Where() + "'data' is nested too deeply");
      return true;
    }
    if (AtData()) return StartData();
    return Begin(json::array(), true, false);
  }
  bool end_array() {
    if (data_depth_ > 0) return --data_depth_ > 0 || EndData();
    stack_.pop_back();
    return true;
  }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) {
    if (status_.ok()) status_ = absl::InvalidArgumentError("the request is not valid JSON");
    return false;
  }

  const absl::Status& status() const { return status_; }
  const std::set<size_t>& pending() const { return pending_; }

 private:
  struct Frame {
    json* node = nullptr;  // pass 1
    bool object = false;
    std::string key;   // an object's current key
    size_t count = 0;  // an array's values so far
  };

  bool Fail(std::string message) { return Fail(absl::InvalidArgumentError(std::move(message))); }
  bool Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
    return false;
  }
  std::string Where() const { return absl::StrCat("inputs[", InputIndex(), "]: "); }
  size_t InputIndex() const { return stack_.size() >= 2 ? stack_[1].count - 1 : 0; }

  // Whether the next value is an input's `data`: root["inputs"][i]["data"].
  bool AtData() const {
    return stack_.size() == 3 && stack_[0].object && stack_[0].key == "inputs" &&
           !stack_[1].object && stack_[2].object && stack_[2].key == "data";
  }

  template <typename V>
  bool Scalar(const Leaf& leaf, V value) {
    if (data_depth_ > 0) return DataLeaf(leaf);
    if (AtData()) return Fail(Where() + "'data' must be an array");
    return Begin(json(value), false, false);
  }

  // A value outside the data: into the DOM (pass 1), and onto the stack if a container.
  bool Begin(json value, bool container, bool object) {
    if (++values_ > kMaxJsonValues) {
      return Fail(absl::StrCat("the request's JSON has over ", kMaxJsonValues,
                               " values outside the inputs' data"));
    }
    json* node = nullptr;
    if (header_ != nullptr) {
      if (stack_.empty()) {
        *header_ = std::move(value);
        node = header_;
      } else if (stack_.back().object) {
        node = &((*stack_.back().node)[stack_.back().key] = std::move(value));
      } else {
        stack_.back().node->push_back(std::move(value));
        node = &stack_.back().node->back();
      }
    }
    if (!stack_.empty() && !stack_.back().object) ++stack_.back().count;
    if (!container) return true;
    if (static_cast<int>(stack_.size()) >= limits_.max_json_depth + 4) {
      return Fail(
          absl::StrCat("the request's JSON is nested deeper than ", limits_.max_json_depth + 4));
    }
    stack_.push_back({node, object, {}, 0});
    return true;
  }

  bool StartData() {
    const size_t index = InputIndex();
    if (header_ != nullptr) {
      const json& input = *stack_[2].node;
      if (!Begin(json(nullptr), false, false)) return false;  // a placeholder in the DOM
      if (DeclaresType(input)) {
        auto target = Target::For(input, index, text_size_, limits_, charge_);
        if (!target.ok()) return Fail(target.status());
        targets_->insert_or_assign(index, std::move(*target));
      } else {
        pending_.insert(index);  // read again once the whole input is known
      }
    }
    auto it = targets_->find(index);
    target_ = it == targets_->end() ? nullptr : &it->second;
    data_index_ = index;
    data_depth_ = 1;
    return true;
  }

  bool DataLeaf(const Leaf& leaf) {
    if (target_ == nullptr) return true;
    if (absl::Status s = target_->Put(leaf); !s.ok()) return Fail(s);
    return true;
  }

  bool EndData() {
    if (target_ == nullptr) return true;
    auto t = target_->Finish();
    if (!t.ok()) return Fail(t.status());
    decoded_->insert_or_assign(data_index_, std::move(*t));
    targets_->erase(data_index_);  // its memory now lives in `decoded_`
    target_ = nullptr;
    return true;
  }

  const ServeLimits& limits_;
  const size_t text_size_;
  json* header_;
  std::map<size_t, Target>* targets_;
  std::map<size_t, WireTensor>* decoded_;
  InflightBudget::Charge* charge_;
  std::vector<Frame> stack_;
  int64_t values_ = 0;
  int data_depth_ = 0;  // > 0 inside an input's data
  Target* target_ = nullptr;
  size_t data_index_ = 0;
  std::set<size_t> pending_;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<JsonRequest> ParseJsonRequest(std::string_view text, const ServeLimits& limits,
                                             InflightBudget::Charge* charge) {
  JsonRequest r;
  std::map<size_t, Target> targets;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  RequestSax first(limits, text.size(), &r.header, &targets, &r.decoded, charge);
  const bool parsed = json::sax_parse(begin, end, &first);
  if (!first.status().ok()) return first.status();
  if (!parsed) return absl::InvalidArgumentError("the request is not valid JSON");
  if (first.pending().empty()) return r;
  targets.clear();
  for (size_t i : first.pending()) {
    const json& input = r.header["inputs"][i];
    if (!DeclaresType(input)) continue;  // named by the request's checks
    LOOM_ASSIGN_OR_RETURN(Target t, Target::For(input, i, text.size(), limits, charge));
    targets.emplace(i, std::move(t));
  }
  RequestSax second(limits, text.size(), nullptr, &targets, &r.decoded, charge);
  json::sax_parse(begin, end, &second);
  if (!second.status().ok()) return second.status();
  return r;
}

void AppendJsonString(std::string& out, std::string_view value) {
  out += json(std::string(value)).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

template <typename T>
void AppendNumbers(std::string& out, const WireTensor& t) {
  const T* p = static_cast<const T*>(t.tensor.data());
  const int64_t n = t.tensor.element_count();
  char buffer[64];
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) out += ',';
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(p[i])) {  // JSON has no NaN nor infinity
        out += "null";
        continue;
      }
    }
    const auto r = std::to_chars(buffer, buffer + sizeof(buffer), p[i]);
    out.append(buffer, r.ptr);
    if constexpr (std::is_floating_point_v<T>) {
      if (std::string_view(buffer, static_cast<size_t>(r.ptr - buffer)).find_first_of(".e") ==
          std::string_view::npos) {
        out += ".0";  // a float stays a float to JSON readers
      }
    }
  }
}

}  // namespace

absl::Status AppendJsonData(std::string& out, const WireTensor& t) {
  out += '[';
  switch (t.type) {
    case WireType::kBool: {
      const uint8_t* p = static_cast<const uint8_t*>(t.tensor.data());
      for (int64_t i = 0; i < t.tensor.element_count(); ++i) {
        out += i > 0 ? "," : "";
        out += p[i] != 0 ? "true" : "false";
      }
      break;
    }
    case WireType::kUInt8:
      AppendNumbers<uint8_t>(out, t);
      break;
    case WireType::kInt8:
      AppendNumbers<int8_t>(out, t);
      break;
    case WireType::kInt16:
      AppendNumbers<int16_t>(out, t);
      break;
    case WireType::kInt32:
      AppendNumbers<int32_t>(out, t);
      break;
    case WireType::kInt64:
      AppendNumbers<int64_t>(out, t);
      break;
    case WireType::kFp32:
      AppendNumbers<float>(out, t);
      break;
    case WireType::kFp64:
      AppendNumbers<double>(out, t);
      break;
    case WireType::kBytes: {
      bool first = true;
      ForEachBytesElement(t.bytes, [&](std::string_view e) {
        if (!first) out += ',';
        first = false;
        AppendJsonString(out, e);
      });
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("output '", t.name, "' is ",
                                                     WireTypeName(t.type),
                                                     ", which has no JSON form: ask for it as "
                                                     "binary data"));
  }
  out += ']';
  return absl::OkStatus();
}

}  // namespace loom::serve
