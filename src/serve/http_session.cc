#include "serve/http_session.h"

#include <array>
#include <boost/beast.hpp>
#include <limits>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace loom::serve::http_internal {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 4096;
// The read buffer holds a header, a chunk's header or trailer, or what a client sends ahead
// while its request runs: at most the header limit and this much more. (A body goes on into the
// request as it comes.)
constexpr size_t kBufferSlack = 64 << 10;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

bool PeerGone(const boost::system::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated;
}

template <typename Stream>
class Connection final : public Session {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  Connection(Hub& hub, Stream stream)
      : hub_(hub),
        stream_(std::move(stream)),
        buffer_(static_cast<size_t>(hub.limits().max_header_bytes) + kBufferSlack) {}

  void Start() override {
    // Every step on the connection's own thread, the first too.
    asio::post(stream_.get_executor(), [self = Self()] { self->Begin(); });
  }

  void Evict() override {
    asio::post(stream_.get_executor(), [self = Self()] {
      // Waiting, or reading a request (chosen as a slow sender): closed now.
      if (self->state_ == State::kIdle || self->state_ == State::kReading) return self->Shutdown();
      self->closing_ = true;  // a request came meanwhile: answered, then closed
    });
  }

  void CloseAfterAnswer() override {
    asio::post(stream_.get_executor(), [self = Self()] {
      self->closing_ = true;
      if (self->state_ == State::kIdle) self->Shutdown();
    });
  }

  void CloseIfExpired() override {
    asio::post(stream_.get_executor(), [self = Self()] {
      const int64_t d = self->deadline;
      if (d != 0 && d <= Clock::now().time_since_epoch().count()) self->Shutdown();
    });
  }

 private:
  void Begin() {
    if constexpr (kTls) {
      Arm(hub_.limits().header_timeout_ms);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = Self()](boost::system::error_code ec) {
                                if (ec) return self->Shutdown();
                                self->WaitRequest(true);
                              });
    } else {
      WaitRequest(true);
    }
  }

  enum class State { kReading, kWaitingAnswer, kWriting, kIdle };

  std::shared_ptr<Connection> Self() {
    return std::static_pointer_cast<Connection>(shared_from_this());
  }
  tcp::socket& Socket() { return beast::get_lowest_layer(stream_); }

  // The deadline of the step under way: past it, the Hub's sweep closes the socket (its
  // operations end). A store, no timer: a request's steps cost no timer operations.
  void Arm(int64_t ms) {
    deadline = (Clock::now() + std::chrono::milliseconds(ms)).time_since_epoch().count();
  }
  void Disarm() { deadline = 0; }

  void SetPhase(Phase p) {
    if (p != kBusy) phase_since = Clock::now().time_since_epoch().count();
    phase = p;
  }

  // Waits for the first byte of the next request (none buffered).
  void WaitRequest(bool fresh) {
    if (closing_) return Shutdown();
    if (buffer_.size() > 0) return ReadHeader();
    state_ = State::kIdle;
    SetPhase(kIdle);
    Arm(fresh ? hub_.limits().header_timeout_ms : hub_.limits().idle_timeout_ms);
    ReadSome();
  }

  // One read into the buffer: the wait for a request, or the watch while a request runs (one
  // read: it sees a client that goes away, or the first bytes of its next request, which are
  // kept and read once this request is answered).
  void ReadSome() {
    if (buffer_.max_size() - buffer_.size() < kReadChunk) return;
    reading_ = true;
    stream_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = Self()](boost::system::error_code ec, size_t n) {
                              self->reading_ = false;
                              self->OnBytes(ec, n);
                            });
  }

  void OnBytes(boost::system::error_code ec, size_t n) {
    if (ec) {
      if (state_ == State::kWaitingAnswer || state_ == State::kWriting) {
        // The client went away while its request runs: the engine drops it if it is still
        // queued (answered 499); an answer made anyway is still written if the socket takes it.
        // A client that only shuts its sending side looks the same on the wire (end of stream),
        // and is treated the same, as Go's net/http does: send the request, then read.
        if (cancelled_) cancelled_->store(true);
        // Counted once, while the answer is still to come (not when this server closes the
        // socket itself, nor once the answer is being written).
        if (state_ == State::kWaitingAnswer && !peer_closed_ &&
            ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor) {
          hub_.routes().plane().CountAbandoned(/*grpc=*/false);
        }
        peer_closed_ = true;
        return;
      }
      return Shutdown();
    }
    buffer_.commit(n);
    if (state_ == State::kIdle) return ReadHeader();
    // Bytes of a next request while this one runs: kept; read once this one is answered.
  }

  void ReadHeader() {
    SetPhase(kHeader);
    state_ = State::kReading;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(hub_.limits().max_header_bytes));
    // The route's limit is set once the header is read (Beast 1.74 compares a Content-Length with
    // an unset limit as over it: no limit is the largest number instead).
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    Arm(hub_.limits().header_timeout_ms);
    // A header already in the buffer (the usual case: it came in one read) is parsed here, with
    // no trip through the io_context.
    boost::system::error_code ec;
    if (Parse(ec) || ec) return OnHeader(ec);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = Self()](boost::system::error_code ec, size_t) { self->OnHeader(ec); });
  }

  // Feeds the buffered bytes to the parser, up to the end of the header (the parser stops
  // there) or of the message. True when that end was reached; `ec` on a parse error.
  bool Parse(boost::system::error_code& ec) {
    const bool header = !parser_->is_header_done();
    while (buffer_.size() > 0 && !parser_->is_done()) {
      const size_t n = parser_->put(buffer_.data(), ec);
      buffer_.consume(n);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec || n == 0 || (header && parser_->is_header_done())) break;
    }
    return header ? parser_->is_header_done() : parser_->is_done();
  }

  // A request whose framing or identity fields are ambiguous is refused: a Transfer-Encoding
  // other than chunked, or Host, Origin, Authorization or Content-Type given twice.
  std::optional<HttpResponse> CheckFraming() const {
    const auto& req = parser_->get();
    if (auto te = req.find(http::field::transfer_encoding); te != req.end()) {
      std::string_view value(te->value().data(), te->value().size());
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
      if (req.count(http::field::transfer_encoding) > 1 ||
          !beast::iequals(beast::string_view(value.data(), value.size()), "chunked")) {
        return ErrorResponse(501, "only 'Transfer-Encoding: chunked' is supported");
      }
    }
    for (const http::field f : {http::field::host, http::field::origin, http::field::authorization,
                                http::field::content_type}) {
      if (req.count(f) > 1) {
        return ErrorResponse(400, absl::StrCat("the header field ", std::string(to_string(f)),
                                               " is given more than once"));
      }
    }
    return std::nullopt;
  }

  HttpRequestHead Head() const {
    const auto& req = parser_->get();
    HttpRequestHead h;
    h.method = std::string(req.method_string());
    h.target = std::string(req.target());
    auto field = [&](auto name) {
      auto it = req.find(name);
      return it == req.end() ? std::string() : std::string(it->value());
    };
    h.host = field(http::field::host);
    h.content_type = field(http::field::content_type);
    h.origin = field(http::field::origin);
    h.authorization = field(http::field::authorization);
    if (auto it = req.find("Inference-Header-Content-Length"); it != req.end()) {
      h.header_length = std::string(it->value());
    }
    const auto length = parser_->content_length();
    h.content_length = parser_->chunked() ? -1 : static_cast<int64_t>(length ? *length : 0);
    return h;
  }

  void OnHeader(boost::system::error_code ec) {
    SetPhase(kBusy);
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return Refuse(ErrorResponse(
          431, absl::StrCat("the request header is over the limit of ",
                            hub_.limits().max_header_bytes, " bytes (max_header_bytes)")));
    }
    if (ec) {
      if (ec == http::error::end_of_stream || PeerGone(ec) ||
          ec == asio::error::operation_aborted) {
        return Shutdown();
      }
      return Refuse(ErrorResponse(400, absl::StrCat("malformed HTTP request: ", ec.message())));
    }
    if (std::optional<HttpResponse> bad = CheckFraming()) return Refuse(std::move(*bad));
    head_ = Head();
    keep_alive_ = parser_->get().keep_alive();
    charge_ = hub_.routes().plane().budget().Open();
    HttpRoutes::Admission a = hub_.routes().Admit(head_, &charge_);
    if (limited && !a.health && !a.refusal) {
      a.refusal = ErrorResponse(503, absl::StrCat("too many connections (max_connections ",
                                                  hub_.limits().max_connections, ")"));
    }
    if (a.refusal) {
      charge_.Release();
      return Refuse(std::move(*a.refusal));
    }
    parser_->body_limit(static_cast<uint64_t>(a.body_limit));
    const auto expect = parser_->get().find(http::field::expect);
    if (!parser_->is_done() && expect != parser_->get().end() &&
        beast::iequals(expect->value(), "100-continue")) {
      // curl asks before a large body: say go on instead of making it wait.
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = Self()](boost::system::error_code ec, size_t) {
                          if (ec) return self->Shutdown();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    boost::system::error_code ec;
    if (Parse(ec)) return Dispatch();  // the body came with the header
    if (ec) return OnBodyError(ec);
    Arm(hub_.limits().read_timeout_ms);
    body_bytes = 0;
    SetPhase(kBody);
    ReadMoreBody();
  }

  // The body in reads as it comes, each counted (the rate that ranks a slow sender at the cap).
  void ReadMoreBody() {
    http::async_read_some(stream_, buffer_, *parser_,
                          [self = Self()](boost::system::error_code ec, size_t n) {
                            if (ec) return self->OnBodyError(ec);
                            self->body_bytes += static_cast<int64_t>(n);
                            if (self->parser_->is_done()) return self->Dispatch();
                            self->ReadMoreBody();
                          });
  }

  // The body could not be read: answered when the client can still hear it.
  void OnBodyError(boost::system::error_code ec) {
    SetPhase(kBusy);
    charge_.Release();
    if (ec == http::error::body_limit) {
      return Refuse(ErrorResponse(413, "the request body is over the route's limit"));
    }
    if (ec == http::error::buffer_overflow) {
      return Refuse(ErrorResponse(
          431, absl::StrCat("a chunk header or the trailer is over the limit of ",
                            hub_.limits().max_header_bytes, " bytes (max_header_bytes)")));
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message || PeerGone(ec) ||
        ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) {
      return Shutdown();  // gone, or closed by the sweep at the read timeout
    }
    Refuse(ErrorResponse(400, absl::StrCat("malformed HTTP request body: ", ec.message())));
  }

  // The request is complete: the routes answer it, here or later.
  void Dispatch() {
    SetPhase(kBusy);
    Disarm();  // no deadline while the model runs
    state_ = State::kWaitingAnswer;
    cancelled_ = std::make_shared<std::atomic<bool>>(false);
    answer_.reset();
    handler_thread_ = std::this_thread::get_id();
    in_handler_ = true;
    auto once = std::make_shared<std::atomic<bool>>(false);
    auto respond = [self = Self(), once](HttpResponse r) {
      if (once->exchange(true)) return;
      if (self->in_handler_ && std::this_thread::get_id() == self->handler_thread_) {
        self->answer_ = std::move(r);  // answered inline: written once Handle returns
        return;
      }
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(r)]() mutable { self->Write(std::move(r)); });
    };
    try {
      hub_.routes().Handle(head_, std::move(parser_->get().body()), cancelled_, std::move(charge_),
                           respond);
    } catch (const std::exception& e) {
      Log().error("HTTP request: {}", e.what());
      respond(ErrorResponse(500, "internal error"));
    }
    in_handler_ = false;
    if (answer_) {
      HttpResponse r = std::move(*answer_);
      answer_.reset();
      return Write(std::move(r));
    }
    if (buffer_.size() == 0) ReadSome();  // watch the socket while the model runs
  }

  // Answers a request refused before its body was read, then closes.
  void Refuse(HttpResponse r) {
    keep_alive_ = false;
    linger_ = parser_ && !parser_->is_done();  // its body may still be on its way
    Write(std::move(r));
  }

  // A close with the client's bytes still coming would reset the connection and could lose the
  // answer on the client's side: stop sending, read and drop what comes for a second, then close.
  void Linger() {
    if constexpr (kTls) {
      Shutdown();
    } else {
      boost::system::error_code ignored;
      Socket().shutdown(tcp::socket::shutdown_send, ignored);
      Arm(1000);
      Drop();
    }
  }
  void Drop() {
    Socket().async_read_some(asio::buffer(scratch_),
                             [self = Self()](boost::system::error_code ec, size_t) {
                               if (ec) return self->Shutdown();
                               self->Drop();
                             });
  }

  void Write(HttpResponse r) {
    try {
      EncodeDeferred(r);
    } catch (const std::exception& e) {
      Log().error("HTTP answer: {}", e.what());
      r = ErrorResponse(500, "internal error");
    }
    state_ = State::kWriting;
    close_after_ =
        !keep_alive_ || closing_ || limited || peer_closed_ || hub_.routes().plane().draining();
    try {
      response_.emplace(static_cast<http::status>(r.status), 11);
      if (r.status == 499) response_->reason("Client Closed Request");
      response_->set(http::field::server, "loom");
      if (r.status != 204) response_->set(http::field::content_type, r.content_type);
      if (r.header_length >= 0) {
        response_->set("Inference-Header-Content-Length", std::to_string(r.header_length));
      }
      for (const auto& [name, value] : r.headers) response_->set(name, value);
      hold_ = std::move(r.hold);
      response_->keep_alive(!close_after_);
      response_->body() = std::move(r.body);
      response_->prepare_payload();
      serializer_.emplace(*response_);
    } catch (const std::exception& e) {  // no answer can be made: the connection closes
      Log().error("HTTP answer: {}", e.what());
      return Shutdown();
    }
    Arm(hub_.limits().read_timeout_ms);  // a client that does not read its answer is cut off
    if constexpr (!kTls) {
      // Most answers fit the socket's buffer: written here, without waiting for the io_context.
      boost::system::error_code ec;
      while (!serializer_->is_done() && !ec) http::write_some(stream_, *serializer_, ec);
      if (serializer_->is_done() || (ec && ec != asio::error::would_block)) return OnWritten(ec);
    }
    http::async_write(stream_, *serializer_, [self = Self()](boost::system::error_code ec, size_t) {
      self->OnWritten(ec);
    });
  }

  void OnWritten(boost::system::error_code ec) {
    serializer_.reset();
    response_.reset();
    hold_.reset();
    if (!ec && linger_) return Linger();
    if (ec || close_after_ || closing_ || peer_closed_) return Shutdown();
    if (reading_) {  // the watch goes on as the wait for the next request
      state_ = State::kIdle;
      SetPhase(kIdle);
      Arm(hub_.limits().idle_timeout_ms);
      return;
    }
    WaitRequest(false);
  }

  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    SetPhase(kBusy);
    Disarm();
    boost::system::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
    hub_.Remove(*this);
  }

  Hub& hub_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> response_;
  std::optional<http::serializer<false, http::string_body>> serializer_;
  HttpRequestHead head_;
  InflightBudget::Charge charge_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::optional<HttpResponse> answer_;
  std::shared_ptr<void> hold_;  // the answer's charge, until it is written
  std::thread::id handler_thread_;
  std::atomic<bool> in_handler_{false};
  State state_ = State::kReading;
  bool keep_alive_ = true, close_after_ = false, closing_ = false, closed_ = false;
  bool reading_ = false, peer_closed_ = false, linger_ = false;
  std::array<char, 4096> scratch_;  // what a lingering close drops
};

}  // namespace

std::shared_ptr<Session> MakeSession(Hub& hub, tcp::socket socket, ssl::context* tls) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  socket.non_blocking(true, ignored);  // a write tried in place returns instead of blocking
  if (tls != nullptr) {
    return std::make_shared<Connection<ssl::stream<tcp::socket>>>(
        hub, ssl::stream<tcp::socket>(std::move(socket), *tls));
  }
  return std::make_shared<Connection<tcp::socket>>(hub, std::move(socket));
}

std::shared_ptr<Session> Hub::Victim(bool limited) {
  const int64_t now = Clock::now().time_since_epoch().count();
  // A body slower than the floor, past the grace: its bytes under the floor's share of its time.
  auto slow_body = [&](const Session& s, int64_t since) {
    const double seconds = std::chrono::duration<double>(Clock::duration(now - since)).count();
    return seconds * 1000 >= static_cast<double>(limits_.body_rate_grace_ms) &&
           static_cast<double>(s.body_bytes) <
               static_cast<double>(limits_.min_body_bytes_per_s) * seconds;
  };
  // Lower goes first: waiting, reading a header, sending a body too slowly.
  auto rank = [](int phase) {
    return phase == Session::kIdle ? 0 : phase == Session::kHeader ? 1 : 2;
  };
  std::shared_ptr<Session> best;
  int best_phase = Session::kBusy;
  int64_t best_since = 0;
  for (const auto& weak : sessions_) {
    std::shared_ptr<Session> s = weak.lock();
    if (!s || s->released_ || s->limited != limited) continue;
    const int phase = s->phase;
    const int64_t since = s->phase_since;
    if (phase == Session::kBusy || (phase == Session::kBody && !slow_body(*s, since))) continue;
    // The longest in its phase first.
    const bool better =
        !best || rank(phase) < rank(best_phase) || (phase == best_phase && since < best_since);
    if (better) {
      best = std::move(s);
      best_phase = phase;
      best_since = since;
    }
  }
  return best;
}

void Hub::Release(const std::shared_ptr<Session>& s) {
  s->released_ = true;
  --(s->limited ? limited_ : normal_);
  s->Evict();
}

bool Hub::EvictIdle() {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<Session> victim = Victim(false);
  if (!victim) victim = Victim(true);
  if (!victim) return false;
  Release(victim);
  return true;
}

void Hub::Accept(tcp::socket socket) {
  ++accepted_;
  std::shared_ptr<Session> session;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;  // the socket closes as it goes
    if (normal_ >= limits_.max_connections) {
      if (std::shared_ptr<Session> victim = Victim(false)) Release(victim);
    }
    bool limited = normal_ >= limits_.max_connections;
    if (limited && limited_ >= kMaxLimited) {
      std::shared_ptr<Session> victim = Victim(true);
      if (!victim) return;  // every connection has a request under way: this one closes
      Release(victim);
    }
    session = MakeSession(*this, std::move(socket), tls_);
    session->limited = limited;
    session->phase_since = Clock::now().time_since_epoch().count();
    sessions_.push_front(session);
    session->position_ = sessions_.begin();
    ++(limited ? limited_ : normal_);
  }
  session->Start();
}

void Hub::Remove(Session& s) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(s.position_);
  if (!s.released_) --(s.limited ? limited_ : normal_);
  if (sessions_.empty()) empty_cv_.notify_all();
}

void Hub::StopAll() {
  std::vector<std::shared_ptr<Session>> all;
  std::unique_lock<std::mutex> lock(mu_);
  stopping_ = true;
  for (const auto& weak : sessions_) {
    if (auto s = weak.lock()) all.push_back(std::move(s));
  }
  lock.unlock();
  for (auto& s : all) s->CloseAfterAnswer();
  all.clear();
  lock.lock();
  empty_cv_.wait(lock, [&] { return sessions_.empty(); });
}

void Hub::Sweep() {
  const int64_t now = Clock::now().time_since_epoch().count();
  std::vector<std::shared_ptr<Session>> expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& weak : sessions_) {
      std::shared_ptr<Session> s = weak.lock();
      const int64_t d = s ? s->deadline.load() : 0;
      if (d != 0 && d <= now) expired.push_back(std::move(s));
    }
  }
  for (auto& s : expired) s->CloseIfExpired();
}

int Hub::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return normal_ + limited_;
}

}  // namespace loom::serve::http_internal
