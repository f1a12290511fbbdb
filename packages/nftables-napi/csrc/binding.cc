// N-API glue: argument checks on the main thread, libnftables on a worker thread, a Promise back.
#include <napi.h>

#include <cstdlib>
#include <cstring>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <string>

#include "nl_exchange.h"
#include "nft_runner.h"

namespace {

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, nft_runner* runner, std::string cmd)
      : Napi::AsyncWorker(env), runner_(runner), cmd_(std::move(cmd)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    char* out = nullptr;
    char* err = nullptr;
    rc_ = nft_runner_run(runner_, cmd_.c_str(), &out, &err);
    out_ = out ? out : "";
    err_ = err ? err : "";
    std::free(out);
    std::free(err);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (rc_ == 0) {
      deferred_.Resolve(Napi::String::New(env, out_));
      return;
    }
    std::string message = err_.empty() ? "libnftables failed with code " + std::to_string(rc_) : err_;
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
    Napi::Error error = Napi::Error::New(env, message);
    error.Set("code", Napi::String::New(env, "NFT_COMMAND_FAILED"));
    error.Set("nftCode", Napi::Number::New(env, rc_));
    deferred_.Reject(error.Value());
  }

 private:
  nft_runner* runner_;
  std::string cmd_;
  Napi::Promise::Deferred deferred_;
  int rc_ = 0;
  std::string out_;
  std::string err_;
};

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Context", {InstanceMethod("run", &Context::Run), InstanceMethod("netlink", &Context::Netlink),
                                        InstanceMethod("close", &Context::Close)});
  }

  explicit Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    runner_ = nft_runner_new();
    if (!runner_) Napi::Error::New(info.Env(), "libnftables: cannot create a context").ThrowAsJavaScriptException();
  }

  ~Context() override {
    nft_runner_free(runner_);
    nl_exchange_close(nl_fd_);
    std::free(replies_);
  }

 private:
  // run(json: string): Promise<string>. The JS loader keeps one call in flight per context.
  Napi::Value Run(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsString()) {
      Napi::TypeError::New(env, "run(commands) expects one string of libnftables JSON").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!runner_) {
      Napi::Error::New(env, "libnftables context is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* worker = new RunWorker(env, runner_, info[0].As<Napi::String>().Utf8Value());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // netlink(request: Buffer): Buffer of the replies, on the calling thread (a request for a few
  // set elements takes microseconds: less than a hop to a worker thread and back).
  Napi::Value Netlink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsBuffer()) {
      Napi::TypeError::New(env, "netlink(request) expects one Buffer").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!runner_) {
      Napi::Error::New(env, "libnftables context is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (nl_fd_ < 0) {
      nl_fd_ = nl_exchange_open();
      if (nl_fd_ < 0) return ThrowErrno(env, -nl_fd_, "netlink socket");
    }
    Napi::Buffer<char> request = info[0].As<Napi::Buffer<char>>();
    size_t out_len = 0;
    int rc = nl_exchange(nl_fd_, request.Data(), request.Length(), &replies_, &replies_cap_, &out_len);
    if (rc < 0) return ThrowErrno(env, -rc, "netlink exchange");
    return Napi::Buffer<char>::Copy(env, replies_, out_len);
  }

  static Napi::Value ThrowErrno(Napi::Env env, int err, const char* what) {
    Napi::Error error = Napi::Error::New(env, std::string(what) + ": " + std::strerror(err));
    error.Set("errno", Napi::Number::New(env, err));
    error.ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    nft_runner_free(runner_);
    runner_ = nullptr;
    nl_exchange_close(nl_fd_);
    nl_fd_ = -1;
    return info.Env().Undefined();
  }

  nft_runner* runner_ = nullptr;
  int nl_fd_ = -1;
  // The replies' buffer, kept from one exchange to the next.
  char* replies_ = nullptr;
  size_t replies_cap_ = 0;
};

// quickAck(fd): TCP_QUICKACK on a connected TCP socket, once (the kernel goes back to delayed
// acknowledgements by itself, so it is set again after each read). false when it cannot be set.
Napi::Value QuickAck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "quickAck(fd) expects a file descriptor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int one = 1;
  int fd = info[0].As<Napi::Number>().Int32Value();
  return Napi::Boolean::New(env, fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one)) == 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Context", Context::Init(env));
  exports.Set("quickAck", Napi::Function::New(env, QuickAck));
  return exports;
}

}  // namespace

NODE_API_MODULE(nftables_napi, Init)
