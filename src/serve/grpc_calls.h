// The calls of the gRPC server (internal to grpc_server.cc): gRPC's async API on the raw form of
// every method (each request's bytes are checked before they are parsed here, each response
// serialized here), one Call object per call from the moment its method is asked for on a
// completion queue until it is answered and done.
#ifndef LOOM_SERVE_GRPC_CALLS_H_
#define LOOM_SERVE_GRPC_CALLS_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "grpc_service.grpc.pb.h"
#include "serve/data_plane.h"
#include "serve/types.h"

namespace loom::serve::grpc_internal {

namespace pb = ::inference;
using G = pb::GRPCInferenceService;
// Every method raw: the server sees each request's bytes before protobuf does.
using RawService =
    G::WithRawMethod_ServerLive<G::WithRawMethod_ServerReady<G::WithRawMethod_ModelReady<
        G::WithRawMethod_ServerMetadata<G::WithRawMethod_ModelMetadata<G::WithRawMethod_ModelInfer<
            G::WithRawMethod_RepositoryIndex<G::WithRawMethod_RepositoryModelLoad<
                G::WithRawMethod_RepositoryModelUnload<G::Service>>>>>>>>>;

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(GrpcCode(s)), std::string(s.message()));
}

// How many Call objects live. The server's shutdown returns once the connections are gone, not
// once every call is answered: a call the client cancelled may still wait for the engine. The
// queues are shut down only when no call is left to start an operation on them.
class CallCount {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++live_;
  }
  void Remove() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--live_ == 0) cv_.notify_all();
  }
  void WaitForNone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return live_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t live_ = 0;  // requires mu_
};

// What the calls of one completion queue share: the service, the queue, whether new calls may
// still be asked for (not once the server stops), the count of live calls, and the data plane
// (which counts abandoned calls).
struct Queue {
  RawService* service = nullptr;
  grpc::ServerCompletionQueue* cq = nullptr;
  std::shared_mutex* accepting_mu = nullptr;
  const bool* accepting = nullptr;  // requires accepting_mu
  CallCount* calls = nullptr;
  DataPlane* plane = nullptr;
};

// One call. Its events come back from the queue as tags (Tag*): arrived (the call came, or not:
// the server stops), answered (Finish went out) and done (the call ended, or the client
// cancelled it). It is deleted when both of the last two have come, whichever thread delivers
// the last one.
class Call {
 public:
  enum class Event { kArrived, kAnswered, kDone };
  struct Tag {
    Call* call;
    Event event;
  };

  virtual ~Call() { queue_.calls->Remove(); }

  // On the queue's thread.
  void Handle(Event event, bool ok) {
    switch (event) {
      case Event::kArrived:
        if (!ok) {  // the server stops: this call never came, and no other tag of it will
          delete this;
          return;
        }
        pending_.store(2);  // answered and done
        // The next call of the method is asked for once this one is handled: while this thread
        // runs a model inline, gRPC gives new calls to the queues that asked.
        Arrived();
        AskForNext();
        return;
      case Event::kDone:
        if (context_.IsCancelled()) {  // the engine drops it if queued
          cancelled_->store(true);
          // By its client (or its deadline): not cut off by this server's own shutdown.
          std::shared_lock<std::shared_mutex> lock(*queue_.accepting_mu);
          if (*queue_.accepting) queue_.plane->CountAbandoned(/*grpc=*/true);
        }
        return Release();
      case Event::kAnswered:
        return Release();
    }
  }

  // The call's `authorization` metadata, or "".
  std::string_view Authorization() const {
    const auto& md = context_.client_metadata();
    auto it = md.find("authorization");
    return it == md.end() ? std::string_view()
                          : std::string_view(it->second.data(), it->second.size());
  }

 protected:
  explicit Call(const Queue& queue) : queue_(queue) {
    queue_.calls->Add();
    context_.AsyncNotifyWhenDone(&done_);
  }
  virtual void AskForNext() = 0;
  virtual void Arrived() = 0;

  // Whether new calls may be asked for; `ask` runs under the lock, so that the queue is not shut
  // down between the check and the request.
  template <typename F>
  void IfAccepting(F ask) {
    std::shared_lock<std::shared_mutex> lock(*queue_.accepting_mu);
    if (*queue_.accepting) ask();
  }

  Queue queue_;
  grpc::ServerContext context_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  Tag arrived_{this, Event::kArrived}, answered_{this, Event::kAnswered}, done_{this, Event::kDone};

 private:
  void Release() {
    if (pending_.fetch_sub(1) == 1) delete this;
  }
  std::atomic<int> pending_{0};
};

// A unary call of one method: its request (parsed here, after its size is checked, unless the
// method reads the raw bytes itself), its response and the handler that answers it.
template <typename Request, typename Response>
class Unary final : public Call {
 public:
  using Ask = void (RawService::*)(grpc::ServerContext*, grpc::ByteBuffer*,
                                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>*,
                                   grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // Fills `call.response` and calls `call.Answer` exactly once, at once or later from any thread.
  using Handler = std::function<void(Unary& call)>;
  struct Method {
    Ask ask;
    Handler handler;
    int64_t max_bytes;  // of the request message
    bool parse;         // false: the handler reads `raw` itself
  };

  // Asks for the first call of the method on `queue`; each call that comes asks for the next.
  static void Start(const Queue& queue, const Method* method) {
    (new Unary(queue, method))->AskNow();
  }

  // The first answer goes out; a later one (from a handler that failed after answering) is
  // dropped. An OK answer sends `response`.
  void Answer(const absl::Status& status) { AnswerGrpc(ToGrpc(status)); }
  void AnswerGrpc(const grpc::Status& status) {
    if (answered_once_.exchange(true)) return;
    if (!status.ok()) return writer_.FinishWithError(status, &answered_);
    grpc::ByteBuffer out;
    bool own = false;
    const grpc::Status s =
        grpc::GenericSerialize<grpc::ProtoBufferWriter, Response>(response, &out, &own);
    if (!s.ok()) return writer_.FinishWithError(s, &answered_);
    writer_.Finish(out, grpc::Status::OK, &answered_);
  }
  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }

  grpc::ByteBuffer raw;  // the request as it came (cleared once parsed)
  Request request;
  Response response;
  std::shared_ptr<void> hold;  // kept (charged to the in-flight budget) until the call is deleted

 private:
  Unary(const Queue& queue, const Method* method) : Call(queue), method_(method) {}
  void AskNow() {
    std::invoke(method_->ask, *queue_.service, &context_, &raw, &writer_, queue_.cq, queue_.cq,
                &arrived_);
  }
  void AskForNext() override {
    IfAccepting([&] { (new Unary(queue_, method_))->AskNow(); });
  }
  void Arrived() override {
    try {
      if (method_->parse) {
        if (static_cast<int64_t>(raw.Length()) > method_->max_bytes) {
          return AnswerGrpc(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                         absl::StrCat("the message is over the limit of ",
                                                      method_->max_bytes, " bytes for this call")));
        }
        if (!grpc::GenericDeserialize<grpc::ProtoBufferReader, Request>(&raw, &request).ok()) {
          return AnswerGrpc(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                         "the message is not this call's request"));
        }
      }
      method_->handler(*this);
    } catch (const std::exception& e) {  // a handler answers before it could throw, or not at all
      Log().error("gRPC call: {}", e.what());
      Answer(absl::InternalError("the call failed"));
    } catch (...) {
      Answer(absl::InternalError("the call failed"));
    }
  }

  const Method* method_;
  std::atomic<bool> answered_once_{false};
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> writer_{&context_};
};

}  // namespace loom::serve::grpc_internal

#endif  // LOOM_SERVE_GRPC_CALLS_H_
