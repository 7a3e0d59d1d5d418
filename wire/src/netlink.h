// Plumbing through rtnetlink (raw NETLINK_ROUTE sockets) and named network
// namespaces, without spawning `ip`: veth pairs with one end created straight
// in a pod's namespace, links configured (name, MAC, MTU, addresses, state)
// and deleted, namespaces created and removed in batches. Every call runs off
// the event loop (an AsyncWorker on libuv's pool) and its errors name the
// object and carry the kernel's errno text and extended-ack message.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pw::nl {

// A NETLINK_ROUTE socket bound to one network namespace (it keeps that
// namespace for its life, whichever thread uses it).
class Socket {
 public:
  Socket() = default;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // nsPath "" means the caller's own namespace; nsName names it in errors.
  std::string Open(const std::string& nsPath, const std::string& nsName);
  // Sends one request with NLM_F_ACK and waits for the kernel's answer.
  // reply, when given, gets the payload of the first non-error answer
  // (a GET's object). Returns "" or "<what>: <errno text>[ (<kernel's message>)]";
  // *err gets the errno (0 on success).
  std::string Request(std::vector<uint8_t>& msg, const std::string& what, std::vector<uint8_t>* reply = nullptr,
                      int* err = nullptr);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  uint32_t seq_ = 0;
  uint32_t portId_ = 0;
  std::unique_ptr<uint8_t[]> buf_;
};

// Exported to JavaScript as wire.netlink.
Napi::Object Init(Napi::Env env);

}  // namespace pw::nl
