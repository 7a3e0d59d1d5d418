// Native frame I/O for patchwire: opening AF_PACKET sockets and taps inside
// network namespaces, and the batched Port.
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>  // before the linux/ headers, which then skip their copies
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <napi.h>
#include <string.h>
#include <dirent.h>
#include <malloc.h>
#include <v8.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "engine_binding.h"
#include "netlink.h"
#include "netns.h"
#include "port.h"
#include "x509.h"

namespace pw {
namespace {

std::string Errno(const std::string& what) { return what + ": " + strerror(errno); }

// The result of openPacket/openTap: {fd, ifindex, vnetHdr}, or a thrown
// error with the fd closed, so a failure leaves nothing open.
Napi::Value Opened(Napi::Env env, const std::string& err, int fd, int ifindex, bool vnet) {
  if (!err.empty()) {
    if (fd >= 0) close(fd);
    Napi::Error::New(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("ifindex", ifindex);
  out.Set("vnetHdr", vnet);
  return out;
}

// openPacket(ifname, netnsPath, {vnetHdr, bufBytes}) -> {fd, ifindex, vnetHdr}
Napi::Value OpenPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject()) {
    Napi::TypeError::New(env, "openPacket(ifname, netnsPath, options)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string ifname = info[0].As<Napi::String>();
  std::string ns = info[1].As<Napi::String>();
  auto opts = info[2].As<Napi::Object>();
  bool wantVnet = opts.Get("vnetHdr").ToBoolean();
  int bufBytes = opts.Has("bufBytes") ? opts.Get("bufBytes").ToNumber().Int32Value() : (4 << 20);
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    Napi::Error::New(env, "interface name '" + ifname + "' must be 1 to 15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  int fd = -1, ifindex = 0;
  bool vnet = false;
  std::string err = RunInNetns(ns, [&]() -> std::string {
    ifindex = if_nametoindex(ifname.c_str());
    if (ifindex == 0) return "interface " + ifname + " not found" + (ns.empty() ? "" : " in " + ns);
    // Protocol 0: nothing is queued until bind(), so no frame from another
    // interface slips in between socket() and bind().
    fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Errno("socket(AF_PACKET)");
    int one = 1;
    // The virtio-net header keeps GSO super-frames whole and partial
    // checksums valid; it must be set before anything else touches the socket.
    if (wantVnet && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) == 0) vnet = true;
    if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) != 0) return Errno("PACKET_AUXDATA");
    // Frames we inject must not be read back and sent home again.
    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufBytes, sizeof(bufBytes)) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufBytes, sizeof(bufBytes));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufBytes, sizeof(bufBytes)) != 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufBytes, sizeof(bufBytes));
    sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex;
    if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) return Errno("bind " + ifname);
    packet_mreq mr;
    memset(&mr, 0, sizeof(mr));
    mr.mr_ifindex = ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0) return Errno("promiscuous " + ifname);
    return "";
  });
  return Opened(env, err, fd, ifindex, vnet);
}

// openTap(name, netnsPath, {vnetHdr, persist}) -> {fd, ifindex, vnetHdr}
// Creates the tap, or attaches to a persistent one of that name.
Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject()) {
    Napi::TypeError::New(env, "openTap(name, netnsPath, options)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  std::string ns = info[1].As<Napi::String>();
  auto opts = info[2].As<Napi::Object>();
  bool wantVnet = opts.Get("vnetHdr").ToBoolean();
  bool persist = opts.Get("persist").ToBoolean();
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::Error::New(env, "interface name '" + name + "' must be 1 to 15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = -1, ifindex = 0;
  bool vnet = false;
  std::string err = RunInNetns(ns, [&]() -> std::string {
    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return Errno("open /dev/net/tun");
    ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    // Multi-queue, so that a lab's supervisor can hold a detached queue of
    // it (holdTap): the kernel takes a tap's carrier away when its last
    // queue closes, unless a detached one is still held, and a daemon killed
    // and restarted must not blink the pod's link.
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | (wantVnet ? IFF_VNET_HDR : 0);
    int r = ioctl(fd, TUNSETIFF, &ifr);
    if (r != 0 && errno == EINVAL) {
      // A single-queue tap made by an older daemon: attach to it as it is
      // (EINVAL again: not a tap at all).
      ifr.ifr_flags &= ~IFF_MULTI_QUEUE;
      r = ioctl(fd, TUNSETIFF, &ifr);
      if (r != 0 && errno == EINVAL) errno = EBUSY;
    }
    if (r != 0) {
      if (errno == EBUSY) return "interface " + name + " already exists and is not a free tap";
      return Errno("TUNSETIFF " + name);
    }
    vnet = wantVnet;
    if (vnet) {
      int sz = Port::kVnetHdrLen;
      ioctl(fd, TUNSETVNETHDRSZ, &sz);
      // Accept checksum-offloaded and TSO frames from the kernel; without
      // this the tap segments and checksums everything before we read it.
      unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      if (ioctl(fd, TUNSETOFFLOAD, off) != 0) ioctl(fd, TUNSETOFFLOAD, 0);
    }
    if (ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) != 0) return Errno("TUNSETPERSIST " + name);
    ifindex = if_nametoindex(name.c_str());
    return "";
  });
  return Opened(env, err, fd, ifindex, vnet);
}

#ifndef IFF_NO_CARRIER
#define IFF_NO_CARRIER 0x0040  // linux/if_tun.h since 6.0
#endif

// holdTap(name, netnsPath, knownIfindex) -> {fd, ifindex} | {ifindex, same: true} | null
// Opens a detached queue of a patchwire tap (multi-queue and persistent) and
// returns its fd: while it is held, the tap keeps its carrier as it is when
// the daemon's own queue closes (a daemon killed and restarted). It carries
// no frames (the kernel sends only to attached queues) and does not touch
// carrier (IFF_NO_CARRIER), flags or offloads. null: no such interface; {same}: it is still
// the interface of knownIfindex (nothing opened). Throws when the interface
// is not a tap that can be held (single-queue, or not persistent).
Napi::Value HoldTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "holdTap(name, netnsPath, knownIfindex)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  std::string ns = info[1].As<Napi::String>();
  int known = info[2].As<Napi::Number>().Int32Value();
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::Error::New(env, "interface name '" + name + "' must be 1 to 15 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = -1, ifindex = 0;
  std::string err = RunInNetns(ns, [&]() -> std::string {
    ifindex = if_nametoindex(name.c_str());
    if (ifindex == 0 || ifindex == known) return "";
    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return Errno("open /dev/net/tun");
    // The daemon's own flags (src/endpoint/tap.ts opens every tap with the
    // virtio-net header): a queue attached with other feature flags to a tap
    // that has none attached would change the device's.
    ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    // IFF_NO_CARRIER: when no other queue is attached (the daemon is down),
    // attaching would otherwise turn the tap's carrier on, pulled cable or not.
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR | IFF_NO_CARRIER;
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) return Errno("attaching a queue to " + name + " (a single-queue tap, or not a tap)");
    memset(&ifr, 0, sizeof(ifr));
    if (ioctl(fd, TUNGETIFF, &ifr) != 0) return Errno("TUNGETIFF " + name);
    // A tap that is not persistent was not made by a daemon (or was made by
    // this very call, between its removal and our open): leave it alone.
    if (!(ifr.ifr_flags & IFF_PERSIST)) return "interface " + name + " is not a persistent tap";
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_DETACH_QUEUE;
    if (ioctl(fd, TUNSETQUEUE, &ifr) != 0) return Errno("detaching the held queue of " + name);
    return "";
  });
  if (!err.empty()) {
    if (fd >= 0) close(fd);
    Napi::Error::New(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (ifindex == 0) return env.Null();
  auto r = Napi::Object::New(env);
  r.Set("ifindex", ifindex);
  if (fd < 0) r.Set("same", true);
  else r.Set("fd", fd);
  return r;
}

// unpersistTap(fd): the tap disappears when this fd closes.
Napi::Value UnpersistTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].ToNumber().Int32Value();
  if (ioctl(fd, TUNSETPERSIST, 0) != 0) {
    Napi::Error::New(env, Errno("TUNSETPERSIST 0")).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

// setScheduling(rrPriority) -> number of threads changed
// Puts every thread of this process under SCHED_RR at rrPriority (1-99), or
// back under SCHED_OTHER with 0. A wire daemon is the cable: when pods keep
// both cores busy, a daemon at normal priority waits its turn for
// milliseconds per frame. Threads created later inherit the policy.
Napi::Value SetScheduling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "setScheduling(priority)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int prio = info[0].ToNumber().Int32Value();
  if (prio < 0 || prio > 99) {
    Napi::RangeError::New(env, "real-time priority must be 0 to 99").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  sched_param sp;
  memset(&sp, 0, sizeof(sp));
  sp.sched_priority = prio;
  int policy = prio == 0 ? SCHED_OTHER : SCHED_RR;
  DIR* d = opendir("/proc/self/task");
  if (!d) {
    Napi::Error::New(env, Errno("/proc/self/task")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int changed = 0;
  std::string err;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    pid_t tid = atoi(e->d_name);
    if (sched_setscheduler(tid, policy, &sp) == 0) changed++;
    else if (err.empty()) err = Errno("sched_setscheduler");
  }
  closedir(d);
  if (changed == 0 && !err.empty()) {
    Napi::Error::New(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, changed);
}

// keepFreedMemory(bytes) -> whether the allocator took it
// Sets glibc's trim threshold: free memory at the top of the heap is kept up
// to `bytes` instead of being handed back to the kernel. node:http2 makes a
// 64 KiB buffer per socket read and frees it soon after; with glibc's default
// the heap top was trimmed and faulted in again all the time (page faults and
// page clearing were a quarter of the receiving daemon's CPU under iperf3).
Napi::Value KeepFreedMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "keepFreedMemory(bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t bytes = info[0].As<Napi::Number>().Int64Value();
  if (bytes < 0 || bytes > (1LL << 30)) {
    Napi::RangeError::New(env, "keepFreedMemory: bytes must be 0 to 1 GiB").ThrowAsJavaScriptException();
    return env.Undefined();
  }
#ifdef __GLIBC__
  return Napi::Boolean::New(env, mallopt(M_TRIM_THRESHOLD, static_cast<int>(bytes)) == 1);
#else
  return Napi::Boolean::New(env, false);  // another libc: its own policy stands
#endif
}

// returnFreedMemory() -> whether glibc handed any memory back
// Once a burst of wire changes has settled: V8's low-memory collection (all
// available garbage, and the young generation shrunk: after a thousand wires
// it had grown to 35 MB of committed, mostly empty pages that an ordinary
// collection keeps), then glibc's malloc_trim over every arena (whatever
// keepFreedMemory kept). Tens of milliseconds on the event loop, once; the
// trim holds each arena's lock while it works, so the engine thread may wait
// as long for a malloc (impaired frames are copied into malloc'd buffers).
Napi::Value ReturnFreedMemory(const Napi::CallbackInfo& info) {
  if (v8::Isolate* isolate = v8::Isolate::GetCurrent()) isolate->LowMemoryNotification();
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("keepFreedMemory", Napi::Function::New(env, KeepFreedMemory));
  exports.Set("returnFreedMemory", Napi::Function::New(env, ReturnFreedMemory));
  exports.Set("setScheduling", Napi::Function::New(env, SetScheduling));
  exports.Set("openPacket", Napi::Function::New(env, OpenPacket));
  exports.Set("openTap", Napi::Function::New(env, OpenTap));
  exports.Set("unpersistTap", Napi::Function::New(env, UnpersistTap));
  exports.Set("holdTap", Napi::Function::New(env, HoldTap));
  exports.Set("netlink", nl::Init(env));
  exports.Set("Port", Port::Init(env));
  exports.Set("Engine", InitEngine(env));
  InitX509(env, exports);
  exports.Set("HEADROOM", Port::kHeadroom);
  exports.Set("VNET_HDR_LEN", Port::kVnetHdrLen);
  return exports;
}

}  // namespace pw

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return pw::Init(env, exports); }
NODE_API_MODULE(patchwire_wire, InitModule)
