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
  // From any thread: close now if it waits for a request (eviction, Stop), or after the answer
  // being made (Stop).
  virtual void CloseIfIdle() = 0;
  virtual void CloseAfterAnswer() = 0;
  // From any thread: close now if the step under way is past its deadline.
  virtual void CloseIfExpired() = 0;

  // Waiting for a request with nothing of it read: may be closed to make room.
  std::atomic<bool> idle{false};
  std::atomic<int64_t> idle_since{0};  // steady_clock ticks
  std::atomic<int64_t> deadline{0};    // of the step under way, steady_clock ticks; 0: none
  bool limited = false;                // over the cap: health probes only, one request

 private:
  friend class Hub;
  std::list<std::weak_ptr<Session>>::iterator position_;
};

// Makes the session for an accepted socket: plain or TLS (`tls` set).
std::shared_ptr<Session> MakeSession(Hub& hub, tcp::socket socket, ssl::context* tls);

class Hub {
 public:
  Hub(DataPlane& plane, const Access& access, Listener listener, ssl::context* tls)
      : routes_(plane, access, listener), limits_(plane.limits()), tls_(tls) {}

  HttpRoutes& routes() { return routes_; }
  const ServeLimits& limits() const { return limits_; }

  // A session for an accepted socket, registered and started; or the socket is closed (over
  // the cap and the limited sessions' cap, or stopping). At the cap, the longest-idle session is
  // closed to make room; when none is idle, the new one is limited.
  void Accept(tcp::socket socket);
  // Closes the longest-idle session; false if none is idle.
  bool EvictIdle();
  // Closes the sessions past their step's deadline (called every kSweep by the server).
  void Sweep();
  static constexpr std::chrono::milliseconds kSweep{50};
  // Called once by each session as it closes.
  void Remove(Session& s);
  // No new sessions; idle ones close now, busy ones after their answer. Then waits for none.
  void StopAll();
  int count() const;

 private:
  std::shared_ptr<Session> LongestIdle();  // requires mu_

  HttpRoutes routes_;
  const ServeLimits& limits_;
  ssl::context* tls_;
  mutable std::mutex mu_;
  std::condition_variable empty_cv_;
  std::list<std::weak_ptr<Session>> sessions_;  // requires mu_
  int normal_ = 0, limited_ = 0;                // requires mu_
  bool stopping_ = false;                       // requires mu_
};

}  // namespace loom::serve::http_internal

#endif  // LOOM_SERVE_HTTP_SESSION_H_
