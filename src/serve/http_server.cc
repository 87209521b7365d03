#include "serve/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "serve/http_session.h"

namespace loom::serve {
namespace {

using namespace http_internal;  // NOLINT: this file is the server of those sessions

// An accept that fails for want of descriptors or memory: retried after this pause (not at
// once, which would spin while the condition lasts).
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
constexpr int kEvictOnBackoff = 16;  // idle connections closed at each pause

bool OutOfResources(const boost::system::error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory || ec.value() == ENFILE;
}

absl::StatusOr<std::unique_ptr<ssl::context>> MakeTlsContext(const TlsFiles& files) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use,
                   ec);
  if (!ec) ctx->use_certificate_chain_file(files.cert, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", files.cert, ": ", ec.message()));
  ctx->use_private_key_file(files.key, ssl::context::pem, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--tls-key ", files.key, ": ", ec.message()));
  if (!files.client_ca.empty()) {
    ctx->load_verify_file(files.client_ca, ec);
    if (!ec) ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca ", files.client_ca, ": ", ec.message()));
    }
  }
  return ctx;
}

}  // namespace

// The server: an acceptor and the connections on a fixed set of threads, each running an
// io_context of its own: a connection lives on one thread, so that its events are handled where
// the kernel reports them, with no hand-off (one io_context shared by several threads wakes
// another thread at every event). The acceptor, the sweep of deadlines and the accept back-off
// run on the first. Lifecycle: Start opens the listener and the threads; Stop closes the
// listener, closes the connections as they become idle, waits for them, then stops and joins
// the threads.
struct HttpServer::Impl {
  Impl(DataPlane& plane, const Access& access, Listener listener, int threads,
       std::unique_ptr<ssl::context> tls)
      : tls(std::move(tls)), hub(plane, access, listener, this->tls.get()) {
    for (int i = 0; i < threads; ++i) {
      contexts.push_back(std::make_unique<asio::io_context>(1));
      work.emplace_back(contexts.back()->get_executor());
      // Each context's reactor (an epoll and a timer descriptor) is made now, not at its first
      // connection, which could come when the process is out of descriptors.
      tcp::socket reactor_now(*contexts.back());
    }
    acceptor.emplace(*contexts[0]);
    backoff.emplace(*contexts[0]);
    sweep.emplace(*contexts[0]);
  }

  // The accept loop never ends before Stop: whatever fails (a connection, memory, descriptors)
  // is logged and the next accept is armed, after a pause when resources ran out.
  void Accept() {
    try {
      asio::io_context& next = *contexts[next_context++ % contexts.size()];
      acceptor->async_accept(next, [this](boost::system::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
        if (!ec) {
          try {
            hub.Accept(std::move(socket));
          } catch (const std::exception& e) {  // that connection is lost, not the listener
            Log().error("HTTP accept: {}", e.what());
            return BackOff(asio::error::no_memory);
          }
          return Accept();
        }
        if (!OutOfResources(ec)) return Accept();  // that one connection failed
        BackOff(ec);
      });
    } catch (const std::exception& e) {
      Log().error("HTTP accept: {}", e.what());
      BackOff(asio::error::no_memory);
    }
  }

  // Every Hub::kSweep: the connections past their deadlines are closed.
  void Sweep() {
    sweep->expires_after(Hub::kSweep);
    sweep->async_wait([this](boost::system::error_code ec) {
      if (ec || swept_last) return;
      try {
        hub.Sweep();
      } catch (const std::exception& e) {  // the next sweep tries again
        Log().error("HTTP sweep: {}", e.what());
      }
      Sweep();
    });
  }

  // Out of descriptors: idle connections are closed to make room, and accepting waits a while.
  void BackOff(const boost::system::error_code& ec) {
    hub.routes().plane().CountAcceptPause();
    try {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_warning > std::chrono::seconds(10)) {
        last_warning = now;
        Log().warn("HTTP accept: {}; closing idle connections and pausing accepts for {} ms",
                   ec.message(), kAcceptBackoff.count());
      }
      for (int i = 0; i < kEvictOnBackoff && hub.EvictIdle(); ++i) {
      }
      backoff->expires_after(kAcceptBackoff);
      backoff->async_wait([this](boost::system::error_code wait) {
        if (!wait && acceptor->is_open()) Accept();
      });
    } catch (const std::exception& e) {  // nothing is left to retry with: restart the process
      hub.routes().plane().MarkBroken(
          absl::StrCat("HTTP stopped accepting connections (", e.what(), ")"));
    }
  }

  std::unique_ptr<ssl::context> tls;
  Hub hub;
  std::vector<std::unique_ptr<asio::io_context>> contexts;  // one per thread
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
  size_t next_context = 0;                           // on contexts[0]'s thread
  std::optional<tcp::acceptor> acceptor;             // on contexts[0]
  std::optional<asio::steady_timer> backoff, sweep;  // on contexts[0]
  bool swept_last = false;  // on contexts[0]'s thread: Stop is done with the connections
  std::chrono::steady_clock::time_point last_warning{};
  std::vector<std::thread> threads;
  int port = 0;
  bool stopped = false;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::DefaultThreads() {
  const int cores = static_cast<int>(UsableCpus().size());  // taskset and cgroups honoured
  return std::min(std::max(cores, 1), 16) + 2;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(DataPlane& plane,
                                                              const Access& access,
                                                              const HttpServerOptions& options) {
  std::unique_ptr<ssl::context> tls;
  if (options.tls && access.tls().enabled()) {
    LOOM_ASSIGN_OR_RETURN(tls, MakeTlsContext(access.tls()));
  }
  const int threads = options.threads > 0 ? options.threads : DefaultThreads();
  auto impl = std::make_unique<Impl>(plane, access, options.listener, threads, std::move(tls));
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", options.host, "' is not an IP address to listen on"));
  }
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options.port));
  impl->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor->bind(endpoint, ec);
  if (!ec) impl->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port, ": ", ec.message()));
  }
  impl->port = impl->acceptor->local_endpoint().port();
  Impl* raw = impl.get();
  asio::post(*raw->contexts[0], [raw] {
    raw->Accept();
    raw->Sweep();
  });
  try {
    for (int i = 0; i < threads; ++i) {
      impl->threads.emplace_back([io = raw->contexts[static_cast<size_t>(i)].get()] {
        for (;;) {
          try {
            io->run();
            return;
          } catch (const std::exception& e) {  // nothing leaves a server thread
            Log().error("HTTP server thread: {}", e.what());
          }
        }
      });
    }
  } catch (const std::system_error& e) {
    auto server = std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
    server->Stop();
    return absl::UnavailableError(absl::StrCat("cannot start the HTTP threads: ", e.what()));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

int HttpServer::connections() const { return impl_->hub.count(); }

int64_t HttpServer::accepted() const { return impl_->hub.accepted(); }

void HttpServer::Stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  Impl* raw = impl_.get();
  const bool running = !raw->threads.empty();
  std::promise<void> closed;
  asio::post(*raw->contexts[0], [raw, &closed] {
    boost::system::error_code ignored;
    raw->acceptor->close(ignored);
    raw->backoff->cancel();
    closed.set_value();
  });
  if (running) closed.get_future().wait();
  // Idle connections close now; one being read or answered finishes first (its reads and writes
  // are bounded by the timeouts) and then closes.
  if (running) raw->hub.StopAll();
  asio::post(*raw->contexts[0], [raw] {
    raw->swept_last = true;
    raw->sweep->cancel();
  });
  raw->work.clear();
  for (auto& io : raw->contexts) io->stop();
  for (std::thread& t : raw->threads) t.join();
  raw->threads.clear();
}

}  // namespace loom::serve
