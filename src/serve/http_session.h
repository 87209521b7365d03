// The connections of the HTTP server (internal to http_server.cc and http_session.cc): one
// Session per accepted socket, and the Hub they share — the routes, the limits and the registry
// of open connections that the connection cap, eviction of idle connections and Stop use.
#ifndef LOOM_SERVE_HTTP_SESSION_H_
#define LOOM_SERVE_HTTP_SESSION_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <utility>

// clang-format off: Boost.Asio's awaitable.hpp (C++20) uses std::exchange from <utility> above.
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
// clang-format on

#include "serve/routes.h"

namespace loom::serve::http_internal {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

class Hub;

// One connection. Owned by the shared_ptrs of its pending operations (and, while it lives, found
// through the Hub's weak_ptr); every step runs on its strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  virtual void Start() = 0;
  // From any thread, to make room: close now if no request is under way (waiting for one, or
  // still reading its header); otherwise close once the request under way is answered.
  virtual void Evict() = 0;
  // From any thread (Stop): close now if waiting for a request, else after the answer.
  virtual void CloseAfterAnswer() = 0;
  // From any thread: close now if the step under way is past its deadline.
  virtual void CloseIfExpired() = 0;

  // What the connection does now, for the choice of one to close at the cap: a connection that
  // waits for a request (a new one, or kept alive) goes first, then one still reading a header
  // (a slow sender), each the longest in that phase first, then one whose body comes slower than
  // ServeLimits::min_body_bytes_per_s; one with a request being answered never.
  enum Phase : int { kBusy, kIdle, kHeader, kBody };
  std::atomic<int> phase{kIdle};
  std::atomic<int64_t> phase_since{0};  // steady_clock ticks
  std::atomic<int64_t> body_bytes{0};   // of the body being read
  std::atomic<int64_t> deadline{0};     // of the step under way, steady_clock ticks; 0: none
  bool limited = false;                 // over the cap: health probes only, one request

 private:
  friend class Hub;
  std::list<std::weak_ptr<Session>>::iterator position_;  // requires Hub::mu_
  bool released_ = false;  // requires Hub::mu_: chosen to make room, no longer counted
};

// Makes the session for an accepted socket: plain or TLS (`tls` set).
std::shared_ptr<Session> MakeSession(Hub& hub, tcp::socket socket, ssl::context* tls);

class Hub {
 public:
  Hub(DataPlane& plane, const Access& access, Listener listener, ssl::context* tls)
      : routes_(plane, access, listener), limits_(plane.limits()), tls_(tls) {}

  HttpRoutes& routes() { return routes_; }
  const ServeLimits& limits() const { return limits_; }

  // A session for an accepted socket, registered and started; or the socket is closed (stopping,
  // or at both caps with nothing to evict). At max_connections, a session without a request
  // under way is closed to make room (Session::Phase says which); when every one has a request
  // under way, the new one is limited (health probes only), up to kMaxLimited of them.
  void Accept(tcp::socket socket);
  // Closes a session without a request under way; false if there is none.
  bool EvictIdle();
  static constexpr int kMaxLimited = 64;  // limited sessions at once
  // Closes the sessions past their step's deadline (called every kSweep by the server).
  void Sweep();
  static constexpr std::chrono::milliseconds kSweep{50};
  // Called once by each session as it closes.
  void Remove(Session& s);
  // No new sessions; idle ones close now, busy ones after their answer. Then waits for none.
  void StopAll();
  int count() const;
  int64_t accepted() const { return accepted_; }  // sockets handed to Accept since the start

 private:
  // The session to close to make room (of the limited ones or the others), or null; requires mu_.
  std::shared_ptr<Session> Victim(bool limited);
  // Closes `s`, its place free at once; requires mu_.
  void Release(const std::shared_ptr<Session>& s);

  HttpRoutes routes_;
  const ServeLimits& limits_;
  ssl::context* tls_;
  mutable std::mutex mu_;
  std::condition_variable empty_cv_;
  std::list<std::weak_ptr<Session>> sessions_;  // requires mu_
  int normal_ = 0, limited_ = 0;                // requires mu_
  bool stopping_ = false;                       // requires mu_
  std::atomic<int64_t> accepted_{0};
};

}  // namespace loom::serve::http_internal

#endif  // LOOM_SERVE_HTTP_SESSION_H_
