#include "netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>  // before the linux/ headers, which then skip their copies
#include <linux/bpf.h>
#include <linux/if_addr.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace pw::nl {
namespace {

constexpr const char* kNetnsDir = "/var/run/netns";
// Largest answer we take: a link's attributes without stats are 1-2 KiB.
constexpr size_t kRecvBytes = 32 << 10;

std::string ErrnoText(int e) {
  char b[128];
  // GNU strerror_r: thread-safe, returns the text (maybe not in b).
  return strerror_r(e, b, sizeof(b));
}

// Names of netns paths for messages: "pw-lab-pod" for /var/run/netns/pw-lab-pod.
std::string NsLabel(const std::string& nsPath) {
  if (nsPath.empty()) return "(daemon)";
  std::string dir = std::string(kNetnsDir) + "/";
  if (nsPath.compare(0, dir.size(), dir) == 0) return nsPath.substr(dir.size());
  return nsPath;
}

std::string IfnameProblem(const std::string& name) {
  if (name.empty()) return "interface name is empty";
  if (name.size() >= IFNAMSIZ) {
    return "interface name '" + name + "' is " + std::to_string(name.size()) + " bytes long; Linux allows at most " +
           std::to_string(IFNAMSIZ - 1);
  }
  if (name == "." || name == ".." || name.find_first_of("/: \t\n") != std::string::npos) {
    return "interface name '" + name + "' is not a valid Linux name";
  }
  return "";
}

// ---- building messages ---------------------------------------------------

class Msg {
 public:
  Msg(uint16_t type, uint16_t flags) {
    b_.resize(NLMSG_HDRLEN);
    auto* h = reinterpret_cast<nlmsghdr*>(b_.data());
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
  }
  template <class T>
  void Put(const T& v) {
    size_t at = b_.size();
    b_.resize(at + NLMSG_ALIGN(sizeof(T)));
    memcpy(b_.data() + at, &v, sizeof(T));
  }
  void Attr(uint16_t type, const void* data, size_t len) {
    size_t at = b_.size();
    b_.resize(at + NLA_ALIGN(NLA_HDRLEN + len));
    nlattr a{static_cast<uint16_t>(NLA_HDRLEN + len), type};
    memcpy(b_.data() + at, &a, sizeof(a));
    if (len) memcpy(b_.data() + at + NLA_HDRLEN, data, len);
  }
  void Str(uint16_t type, const std::string& s) { Attr(type, s.c_str(), s.size() + 1); }
  void U32(uint16_t type, uint32_t v) { Attr(type, &v, sizeof(v)); }
  void U8(uint16_t type, uint8_t v) { Attr(type, &v, sizeof(v)); }
  size_t Nest(uint16_t type) {
    size_t at = b_.size();
    Attr(type | NLA_F_NESTED, nullptr, 0);
    return at;
  }
  void End(size_t at) {
    uint16_t len = static_cast<uint16_t>(b_.size() - at);
    memcpy(b_.data() + at, &len, sizeof(len));
  }
  std::vector<uint8_t>& Done() {
    reinterpret_cast<nlmsghdr*>(b_.data())->nlmsg_len = static_cast<uint32_t>(b_.size());
    return b_;
  }

 private:
  std::vector<uint8_t> b_;
};

// Calls f(type, data, len) for each attribute in [p, p+len); stops at the
// first one whose length does not fit what is left.
template <class F>
void WalkAttrs(const uint8_t* p, size_t len, F f) {
  while (len >= NLA_HDRLEN) {
    nlattr a;
    memcpy(&a, p, sizeof(a));
    if (a.nla_len < NLA_HDRLEN || a.nla_len > len) return;
    f(a.nla_type & NLA_TYPE_MASK, p + NLA_HDRLEN, static_cast<size_t>(a.nla_len - NLA_HDRLEN));
    size_t step = NLA_ALIGN(a.nla_len);
    if (step >= len) return;
    p += step;
    len -= step;
  }
}

}  // namespace

// ---- the socket ----------------------------------------------------------

Socket::~Socket() {
  if (fd_ >= 0) close(fd_);
}

std::string Socket::Open(const std::string& nsPath, const std::string& nsName) {
  auto make = [this]() -> std::string {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return "netlink socket: " + ErrnoText(errno);
    int one = 1;
    // The kernel's own words for what it refused (extended ack), and no copy
    // of our request echoed back in errors.
    setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return "netlink bind: " + ErrnoText(errno);
    socklen_t sl = sizeof(sa);
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &sl) != 0) return "netlink getsockname: " + ErrnoText(errno);
    portId_ = sa.nl_pid;
    return "";
  };
  buf_.reset(new uint8_t[kRecvBytes]);  // not zeroed: only what the kernel writes is read
  if (nsPath.empty()) return make();
  int nsfd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0) {
    if (errno == ENOENT) return "network namespace '" + nsName + "' does not exist";
    return "network namespace '" + nsName + "': " + ErrnoText(errno);
  }
  // setns() changes only the calling thread: a throwaway thread makes the
  // socket there, and the socket stays in that namespace after it exits.
  std::string err;
  std::thread t([&]() {
    if (setns(nsfd, CLONE_NEWNET) != 0) {
      err = "network namespace '" + nsName + "': " + ErrnoText(errno);
      return;
    }
    err = make();
  });
  t.join();
  close(nsfd);
  return err;
}

std::string Socket::Request(std::vector<uint8_t>& msg, const std::string& what, std::vector<uint8_t>* reply, int* errOut) {
  if (errOut) *errOut = 0;
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_seq = ++seq_;
  h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  h->nlmsg_pid = 0;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t s;
  do {
    s = sendto(fd_, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  } while (s < 0 && errno == EINTR);
  if (s < 0) {
    if (errOut) *errOut = errno;
    return what + ": netlink send: " + ErrnoText(errno);
  }
  bool gotReply = false;
  for (;;) {
    sockaddr_nl from{};
    socklen_t fl = sizeof(from);
    ssize_t n;
    do {
      n = recvfrom(fd_, buf_.get(), kRecvBytes, MSG_TRUNC, reinterpret_cast<sockaddr*>(&from), &fl);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errOut) *errOut = errno;
      return what + ": netlink receive: " + ErrnoText(errno);
    }
    if (static_cast<size_t>(n) > kRecvBytes) return what + ": the kernel's answer of " + std::to_string(n) + " bytes did not fit";
    if (from.nl_pid != 0) continue;  // not from the kernel
    size_t off = 0, len = static_cast<size_t>(n);
    while (len - off >= NLMSG_HDRLEN) {
      nlmsghdr m;
      memcpy(&m, buf_.get() + off, sizeof(m));
      if (m.nlmsg_len < NLMSG_HDRLEN || m.nlmsg_len > len - off) return what + ": malformed netlink answer";
      const uint8_t* payload = buf_.get() + off + NLMSG_HDRLEN;
      size_t plen = m.nlmsg_len - NLMSG_HDRLEN;
      size_t step = NLMSG_ALIGN(m.nlmsg_len);
      off = step >= len - off ? len : off + step;
      if (m.nlmsg_seq != h->nlmsg_seq || m.nlmsg_pid != portId_) continue;  // an earlier request's
      if (m.nlmsg_type == NLMSG_ERROR) {
        if (plen < sizeof(nlmsgerr)) return what + ": malformed netlink error";
        nlmsgerr e;
        memcpy(&e, payload, sizeof(e));
        if (e.error == 0) return "";
        int code = -e.error;
        if (errOut) *errOut = code;
        std::string text = what + ": " + ErrnoText(code);
        if (m.nlmsg_flags & NLM_F_ACK_TLVS) {
          // The attributes follow our request, echoed whole unless capped.
          size_t skip = sizeof(nlmsgerr);
          if (!(m.nlmsg_flags & NLM_F_CAPPED)) {
            if (e.msg.nlmsg_len < NLMSG_HDRLEN) return text;
            skip += e.msg.nlmsg_len - NLMSG_HDRLEN;
          }
          skip = NLMSG_ALIGN(skip);
          if (skip < plen) {
            WalkAttrs(payload + skip, plen - skip, [&](uint16_t type, const uint8_t* d, size_t dl) {
              if (type != NLMSGERR_ATTR_MSG || dl == 0) return;
              size_t sl = strnlen(reinterpret_cast<const char*>(d), dl);
              if (sl > 0) text += " (" + std::string(reinterpret_cast<const char*>(d), sl) + ")";
            });
          }
        }
        return text;
      }
      if (m.nlmsg_type == NLMSG_DONE) return "";
      if (reply && !gotReply) {
        reply->assign(payload, payload + plen);
        gotReply = true;
      }
    }
  }
}

namespace {

// ---- rtnetlink operations ------------------------------------------------

struct LinkInfo {
  bool exists = false;
  int ifindex = 0;
  uint32_t mtu = 0;
  bool up = false;
};

std::string GetLink(Socket& s, const std::string& name, const std::string& nsName, LinkInfo* out) {
  Msg m(RTM_GETLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.Put(ifi);
  m.Str(IFLA_IFNAME, name);
  m.U32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  std::vector<uint8_t> reply;
  int err = 0;
  std::string e = s.Request(m.Done(), "look up interface '" + name + "' in network namespace '" + nsName + "'", &reply, &err);
  *out = LinkInfo{};
  if (err == ENODEV) return "";
  if (!e.empty()) return e;
  if (reply.size() < NLMSG_ALIGN(sizeof(ifinfomsg))) return "look up interface '" + name + "': short answer";
  ifinfomsg got;
  memcpy(&got, reply.data(), sizeof(got));
  out->exists = true;
  out->ifindex = got.ifi_index;
  out->up = (got.ifi_flags & IFF_UP) != 0;
  size_t at = NLMSG_ALIGN(sizeof(ifinfomsg));
  WalkAttrs(reply.data() + at, reply.size() - at, [&](uint16_t type, const uint8_t* d, size_t dl) {
    if (type == IFLA_MTU && dl >= 4) memcpy(&out->mtu, d, 4);
  });
  return "";
}

// Drop counters of interface `ifindex` (IFLA_STATS64).
struct LinkDrops {
  bool exists = false;
  uint64_t rxDropped = 0, txDropped = 0;
};

std::string GetLinkDrops(Socket& s, int ifindex, LinkDrops* out) {
  Msg m(RTM_GETLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  m.Put(ifi);
  std::vector<uint8_t> reply;
  int err = 0;
  std::string e = s.Request(m.Done(), "read the counters of interface " + std::to_string(ifindex), &reply, &err);
  *out = LinkDrops{};
  if (err == ENODEV) return "";
  if (!e.empty()) return e;
  if (reply.size() < NLMSG_ALIGN(sizeof(ifinfomsg))) return "read the counters of interface " + std::to_string(ifindex) + ": short answer";
  out->exists = true;
  size_t at = NLMSG_ALIGN(sizeof(ifinfomsg));
  WalkAttrs(reply.data() + at, reply.size() - at, [&](uint16_t type, const uint8_t* d, size_t dl) {
    if (type != IFLA_STATS64 || dl < sizeof(rtnl_link_stats64)) return;
    rtnl_link_stats64 st;
    memcpy(&st, d, sizeof(st));
    out->rxDropped = st.rx_dropped;
    out->txDropped = st.tx_dropped;
  });
  return "";
}

struct LinkSet {
  int ifindex = 0;
  std::string mac;  // "" keeps it
  uint32_t mtu = 0;  // 0 keeps it
  int up = -1;       // -1 keeps it
  int master = 0;    // ifindex of a bridge, 0 none
  bool noAddrGen = false;
};

std::string ParseMac(const std::string& mac, uint8_t out[6]) {
  unsigned v[6];
  char tail;
  if (sscanf(mac.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) {
    return "MAC address '" + mac + "' is not of the form 02:00:00:00:00:01";
  }
  for (int i = 0; i < 6; i++) out[i] = static_cast<uint8_t>(v[i]);
  return "";
}

std::string SetLink(Socket& s, const LinkSet& o, const std::string& what) {
  Msg m(RTM_NEWLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = o.ifindex;
  if (o.up >= 0) {
    ifi.ifi_change = IFF_UP;
    ifi.ifi_flags = o.up ? IFF_UP : 0;
  }
  m.Put(ifi);
  if (!o.mac.empty()) {
    uint8_t mac[6];
    std::string p = ParseMac(o.mac, mac);
    if (!p.empty()) return what + ": " + p;
    m.Attr(IFLA_ADDRESS, mac, 6);
  }
  if (o.mtu) m.U32(IFLA_MTU, o.mtu);
  if (o.master) m.U32(IFLA_MASTER, static_cast<uint32_t>(o.master));
  if (o.noAddrGen) {
    size_t spec = m.Nest(IFLA_AF_SPEC);
    size_t v6 = m.Nest(AF_INET6);
    m.U8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
    m.End(v6);
    m.End(spec);
  }
  return s.Request(m.Done(), what);
}

struct Cidr {
  int family = AF_INET;
  uint8_t bytes[16] = {0};
  int prefix = 0;
};

std::string ParseCidr(const std::string& cidr, Cidr* out) {
  size_t slash = cidr.find('/');
  std::string addr = cidr.substr(0, slash);
  out->family = addr.find(':') == std::string::npos ? AF_INET : AF_INET6;
  int maxLen = out->family == AF_INET ? 32 : 128;
  long prefix = maxLen;
  if (slash != std::string::npos) {
    char* end = nullptr;
    std::string p = cidr.substr(slash + 1);
    prefix = strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || prefix < 0 || prefix > maxLen) return "address '" + cidr + "' has a bad prefix length";
  }
  if (inet_pton(out->family, addr.c_str(), out->bytes) != 1) return "'" + cidr + "' is not an IPv4 or IPv6 address";
  out->prefix = static_cast<int>(prefix);
  return "";
}

std::string AddAddress(Socket& s, int ifindex, const std::string& cidr, const std::string& what) {
  Cidr c;
  std::string p = ParseCidr(cidr, &c);
  if (!p.empty()) return what + ": " + p;
  Msg m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
  ifaddrmsg ifa{};
  ifa.ifa_family = static_cast<uint8_t>(c.family);
  ifa.ifa_prefixlen = static_cast<uint8_t>(c.prefix);
  ifa.ifa_index = static_cast<uint32_t>(ifindex);
  m.Put(ifa);
  size_t alen = c.family == AF_INET ? 4 : 16;
  m.Attr(IFA_LOCAL, c.bytes, alen);
  m.Attr(IFA_ADDRESS, c.bytes, alen);
  return s.Request(m.Done(), what);
}

std::string DelLink(Socket& s, const std::string& name, const std::string& what, int* err) {
  Msg m(RTM_DELLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.Put(ifi);
  m.Str(IFLA_IFNAME, name);
  return s.Request(m.Done(), what, nullptr, err);
}

// The host end must stay silent: no IPv6 link-local address, no router
// solicitations or MLD reports leaking into the pod. The sysctl lives in the
// namespace of whoever opens the file: this thread's, the daemon's own.
void SilenceIpv6(const std::string& ifname) {
  std::string path = "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6";
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;  // IPv6 off in this kernel: nothing to silence
  if (write(fd, "1", 1) < 0) {
  }
  close(fd);
}

// ---- the ingress guard ------------------------------------------------------
// A host end is an interface in the node's own network stack: without a
// guard the node answers a pod's ARP and ICMP for its own addresses (any
// interface will do in Linux's weak host model), so a pod could reach the
// node. The guard is a tc filter at the host end's ingress (clsact) whose
// eBPF program drops every frame. AF_PACKET sockets (the engine's, tcpdump's)
// see a frame before tc ingress runs, so forwarding and capture are untouched
// while the IP stack never sees it. This kernel has no matchall or gact, but
// it has cls_bpf in direct-action mode.

// Loaded once per process and kept: one program serves every host end.
int GuardProgram(std::string* err) {
  static std::mutex mu;
  static int fd = -1;
  std::lock_guard<std::mutex> lock(mu);
  if (fd >= 0) return fd;
  // r0 = TC_ACT_SHOT; exit
  bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = TC_ACT_SHOT;
  insns[1].code = BPF_JMP | BPF_EXIT;
  static const char kLicense[] = "GPL";
  char log[512] = {0};
  bpf_attr a{};
  a.prog_type = BPF_PROG_TYPE_SCHED_CLS;
  a.insn_cnt = 2;
  a.insns = reinterpret_cast<uint64_t>(insns);
  a.license = reinterpret_cast<uint64_t>(kLicense);
  a.log_buf = reinterpret_cast<uint64_t>(log);
  a.log_size = sizeof(log);
  a.log_level = 1;
  memcpy(a.prog_name, "pw_ingress_drop", sizeof("pw_ingress_drop"));
  long r = syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof(a));
  if (r < 0) {
    *err = "load the ingress guard's eBPF program: " + ErrnoText(errno) + (log[0] ? std::string(" (") + log + ")" : "");
    return -1;
  }
  fd = static_cast<int>(r);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

// Adds the guard to interface `ifindex` if it is not there yet; *added says
// whether it was.
std::string GuardIngress(Socket& s, int ifindex, const std::string& what, bool* added) {
  std::string e;
  int prog = GuardProgram(&e);
  if (prog < 0) return what + ": " + e;
  {
    Msg m(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
    tcmsg t{};
    t.tcm_family = AF_UNSPEC;
    t.tcm_ifindex = ifindex;
    t.tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
    t.tcm_parent = TC_H_CLSACT;
    m.Put(t);
    m.Str(TCA_KIND, "clsact");
    int err = 0;
    e = s.Request(m.Done(), what + ": add qdisc clsact", nullptr, &err);
    if (!e.empty() && err != EEXIST) return e;
  }
  Msg m(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL);
  tcmsg t{};
  t.tcm_family = AF_UNSPEC;
  t.tcm_ifindex = ifindex;
  t.tcm_handle = 1;
  t.tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);
  t.tcm_info = TC_H_MAKE(1u << 16, htons(ETH_P_ALL));  // priority 1, every protocol
  m.Put(t);
  m.Str(TCA_KIND, "bpf");
  size_t opts = m.Nest(TCA_OPTIONS);
  m.U32(TCA_BPF_FD, static_cast<uint32_t>(prog));
  m.Str(TCA_BPF_NAME, "patchwire-ingress-guard");
  m.U32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT);
  m.End(opts);
  int err = 0;
  e = s.Request(m.Done(), what + ": add the ingress filter", nullptr, &err);
  if (e.empty()) {
    *added = true;
    return "";
  }
  *added = false;
  return err == EEXIST ? "" : e;
}

// ---- composite operations (each one runs on a worker thread) ---------------

struct VethSpec {
  std::string host, hostNs;  // hostNs: path, "" for the caller's own namespace
  std::string peer, peerNs;  // peerNs: path
  uint32_t mtu = 0;
  std::string peerMac;
  std::vector<std::string> peerAddrs;
  bool replaceStaleHost = false;
  bool peerUp = true;
  bool guardHost = false;  // the host end gets the ingress guard before it goes up
  bool hostUp = true;  // false: the host end stays down (no carrier in the pod until the engine says)
  int hostIndex = 0, peerIndex = 0;  // out
};

std::string CreateVeth(VethSpec& v) {
  for (const std::string* n : {&v.host, &v.peer}) {
    std::string p = IfnameProblem(*n);
    if (!p.empty()) return p;
  }
  const std::string hostLabel = NsLabel(v.hostNs), peerLabel = NsLabel(v.peerNs);
  // Everything that can be checked is checked before anything is created.
  for (const std::string& a : v.peerAddrs) {
    Cidr c;
    std::string p = ParseCidr(a, &c);
    if (!p.empty()) return p;
  }
  uint8_t mac[6];
  if (!v.peerMac.empty()) {
    std::string p = ParseMac(v.peerMac, mac);
    if (!p.empty()) return p;
  }
  Socket hs, ps;
  std::string e = hs.Open(v.hostNs, hostLabel);
  if (e.empty()) e = ps.Open(v.peerNs, peerLabel);
  if (!e.empty()) return e;
  int peerNsFd = open(v.peerNs.c_str(), O_RDONLY | O_CLOEXEC);
  if (peerNsFd < 0) return "network namespace '" + peerLabel + "': " + ErrnoText(errno);
  std::unique_ptr<int, void (*)(int*)> closeNs(&peerNsFd, [](int* fd) { close(*fd); });
  LinkInfo li;
  if (!(e = GetLink(ps, v.peer, peerLabel, &li)).empty()) return e;
  if (li.exists) return "interface '" + v.peer + "' already exists in network namespace '" + peerLabel + "'";
  if (!(e = GetLink(hs, v.host, hostLabel, &li)).empty()) return e;
  if (li.exists) {
    if (!v.replaceStaleHost) return "interface '" + v.host + "' already exists in network namespace '" + hostLabel + "'";
    // A stale host end from a crash would block the name; it carries nothing.
    int err = 0;
    e = DelLink(hs, v.host, "delete stale interface '" + v.host + "'", &err);
    if (!e.empty() && err != ENODEV) return e;
  }
  const std::string what = "create veth '" + v.host + "' with peer '" + v.peer + "' in network namespace '" + peerLabel + "'";
  {
    Msg m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    m.Put(ifi);
    m.Str(IFLA_IFNAME, v.host);
    if (v.mtu) m.U32(IFLA_MTU, v.mtu);
    size_t info = m.Nest(IFLA_LINKINFO);
    m.Str(IFLA_INFO_KIND, "veth");
    size_t data = m.Nest(IFLA_INFO_DATA);
    size_t peer = m.Nest(VETH_INFO_PEER);
    ifinfomsg pifi{};
    pifi.ifi_family = AF_UNSPEC;
    m.Put(pifi);
    m.Str(IFLA_IFNAME, v.peer);
    m.U32(IFLA_NET_NS_FD, static_cast<uint32_t>(peerNsFd));
    if (v.mtu) m.U32(IFLA_MTU, v.mtu);
    if (!v.peerMac.empty()) m.Attr(IFLA_ADDRESS, mac, 6);
    m.End(peer);
    m.End(data);
    m.End(info);
    if (!(e = hs.Request(m.Done(), what)).empty()) return e;
  }
  // From here a failure deletes the pair again (deleting one end deletes both).
  auto undo = [&](const std::string& err) {
    int ignored = 0;
    DelLink(hs, v.host, "", &ignored);
    return err;
  };
  if (v.hostNs.empty()) SilenceIpv6(v.host);
  LinkInfo hli, pli;
  if (!(e = GetLink(hs, v.host, hostLabel, &hli)).empty()) return undo(e);
  if (!(e = GetLink(ps, v.peer, peerLabel, &pli)).empty()) return undo(e);
  if (!hli.exists || !pli.exists) return undo(what + ": the pair vanished right after it was made");
  v.hostIndex = hli.ifindex;
  v.peerIndex = pli.ifindex;
  if (v.guardHost) {
    bool added = false;
    e = GuardIngress(hs, hli.ifindex, "guard '" + v.host + "' in network namespace '" + hostLabel + "'", &added);
    if (!e.empty()) return undo(e);
  }
  if (v.hostNs.empty()) {
    LinkSet quiet;
    quiet.ifindex = hli.ifindex;
    quiet.noAddrGen = true;
    SetLink(hs, quiet, "");  // best effort, as disable_ipv6 already keeps it quiet
  }
  for (const std::string& a : v.peerAddrs) {
    e = AddAddress(ps, pli.ifindex, a, "add address " + a + " to '" + v.peer + "' in network namespace '" + peerLabel + "'");
    if (!e.empty()) return undo(e);
  }
  if (v.peerUp) {
    LinkSet up;
    up.ifindex = pli.ifindex;
    up.up = 1;
    if (!(e = SetLink(ps, up, "set '" + v.peer + "' up in network namespace '" + peerLabel + "'")).empty()) return undo(e);
  }
  if (!v.hostUp) return "";
  LinkSet up;
  up.ifindex = hli.ifindex;
  up.up = 1;
  if (!(e = SetLink(hs, up, "set '" + v.host + "' up in network namespace '" + hostLabel + "'")).empty()) return undo(e);
  return "";
}

struct ConfigSpec {
  std::string ns, name;
  std::string mac;
  uint32_t mtu = 0;
  std::vector<std::string> addrs;
  int up = -1;
  std::string master;  // a bridge in the same namespace
  int ifindex = 0;     // out
};

std::string Configure(ConfigSpec& c) {
  const std::string label = NsLabel(c.ns);
  Socket s;
  std::string e = s.Open(c.ns, label);
  if (!e.empty()) return e;
  LinkInfo li;
  if (!(e = GetLink(s, c.name, label, &li)).empty()) return e;
  if (!li.exists) return "interface '" + c.name + "' does not exist in network namespace '" + label + "'";
  c.ifindex = li.ifindex;
  LinkSet o;
  o.ifindex = li.ifindex;
  o.mac = c.mac;
  o.mtu = c.mtu;
  if (!c.master.empty()) {
    LinkInfo bi;
    if (!(e = GetLink(s, c.master, label, &bi)).empty()) return e;
    if (!bi.exists) return "bridge '" + c.master + "' does not exist in network namespace '" + label + "'";
    o.master = bi.ifindex;
  }
  const std::string what = "configure '" + c.name + "' in network namespace '" + label + "'";
  if (!o.mac.empty() || o.mtu || o.master) {
    if (!(e = SetLink(s, o, what)).empty()) return e;
  }
  for (const std::string& a : c.addrs) {
    e = AddAddress(s, li.ifindex, a, "add address " + a + " to '" + c.name + "' in network namespace '" + label + "'");
    if (!e.empty()) return e;
  }
  if (c.up >= 0) {
    LinkSet up;
    up.ifindex = li.ifindex;
    up.up = c.up;
    if (!(e = SetLink(s, up, "set '" + c.name + "' " + (c.up ? "up" : "down") + " in network namespace '" + label + "'")).empty()) return e;
  }
  return "";
}

std::string AddBridge(const std::string& ns, const std::string& name) {
  std::string p = IfnameProblem(name);
  if (!p.empty()) return p;
  const std::string label = NsLabel(ns);
  Socket s;
  std::string e = s.Open(ns, label);
  if (!e.empty()) return e;
  Msg m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.Put(ifi);
  m.Str(IFLA_IFNAME, name);
  size_t info = m.Nest(IFLA_LINKINFO);
  m.Str(IFLA_INFO_KIND, "bridge");
  m.End(info);
  return s.Request(m.Done(), "create bridge '" + name + "' in network namespace '" + label + "'");
}

// ---- named network namespaces, as `ip netns add/del` makes them -----------

std::string NetnsNameProblem(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.size() > 200) {
    return "network namespace name '" + name + "' is not a valid file name";
  }
  return "";
}

// /var/run/netns is a shared mount of its own, so a namespace mounted there
// shows in every mount namespace that sees the directory.
std::string PrepareNetnsDir() {
  mkdir(kNetnsDir, 0755);  // EEXIST is fine
  bool bound = false;
  while (mount("", kNetnsDir, "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL || bound) return std::string("make ") + kNetnsDir + " a shared mount: " + ErrnoText(errno);
    if (mount(kNetnsDir, kNetnsDir, "none", MS_BIND | MS_REC, nullptr) != 0) {
      return std::string("bind-mount ") + kNetnsDir + ": " + ErrnoText(errno);
    }
    bound = true;
  }
  return "";
}

// Runs on a thread of its own: each unshare() moves this thread (only) into
// a fresh namespace, which the bind mount then keeps alive after the thread
// has moved on or ended.
void AddNamespaces(const std::vector<std::string>& names, bool loUp, std::vector<std::string>* errs) {
  errs->assign(names.size(), "");
  std::string prep = PrepareNetnsDir();
  std::thread t([&]() {
    for (size_t i = 0; i < names.size(); i++) {
      const std::string& n = names[i];
      std::string& err = (*errs)[i];
      if (!prep.empty()) {
        err = "network namespace '" + n + "': " + prep;
        continue;
      }
      if (!(err = NetnsNameProblem(n)).empty()) continue;
      std::string path = std::string(kNetnsDir) + "/" + n;
      int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
      if (fd < 0) {
        err = errno == EEXIST ? "network namespace '" + n + "' already exists" : "create " + path + ": " + ErrnoText(errno);
        continue;
      }
      close(fd);
      if (unshare(CLONE_NEWNET) != 0) {
        err = "network namespace '" + n + "': unshare: " + ErrnoText(errno);
        unlink(path.c_str());
        continue;
      }
      if (mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
        err = "network namespace '" + n + "': bind-mount: " + ErrnoText(errno);
        unlink(path.c_str());
        continue;
      }
      if (loUp) {
        Socket s;
        std::string e = s.Open("", n);
        LinkSet up;
        up.ifindex = 1;  // lo is always 1 in a new namespace
        up.up = 1;
        if (e.empty()) e = SetLink(s, up, "set lo up in network namespace '" + n + "'");
        if (!e.empty()) {
          umount2(path.c_str(), MNT_DETACH);
          unlink(path.c_str());
          err = e;
        }
      }
    }
  });
  t.join();
}

// Unmounting drops the namespace's last reference (unless processes still
// live in it); the kernel then tears its interfaces down in batches.
void DelNamespaces(const std::vector<std::string>& names, std::vector<std::string>* errs) {
  errs->assign(names.size(), "");
  for (size_t i = 0; i < names.size(); i++) {
    const std::string& n = names[i];
    if (!((*errs)[i] = NetnsNameProblem(n)).empty()) continue;
    std::string path = std::string(kNetnsDir) + "/" + n;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      (*errs)[i] = errno == ENOENT ? "network namespace '" + n + "' does not exist" : path + ": " + ErrnoText(errno);
      continue;
    }
    if (umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
      (*errs)[i] = "network namespace '" + n + "': unmount: " + ErrnoText(errno);
      continue;
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) (*errs)[i] = "network namespace '" + n + "': " + ErrnoText(errno);
  }
}

// ---- N-API ----------------------------------------------------------------

// One piece of plumbing on libuv's pool: run() there, then the promise is
// rejected with its error or resolved with done()'s value.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, std::function<std::string()> run, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), run_(std::move(run)), done_(std::move(done)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { err_ = run_(); }
  void OnOK() override {
    if (!err_.empty()) deferred_.Reject(Napi::Error::New(Env(), err_).Value());
    else deferred_.Resolve(done_(Env()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<std::string()> run_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string err_;
};

Napi::Value Start(Napi::Env env, std::function<std::string()> run, std::function<Napi::Value(Napi::Env)> done) {
  auto* job = new Job(env, std::move(run), std::move(done));  // deletes itself when done
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

Napi::Value Reject(Napi::Env env, const std::string& msg) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(Napi::TypeError::New(env, msg).Value());
  return d.Promise();
}

std::string GetStr(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
}
uint32_t GetU32(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) return 0;
  double d = v.As<Napi::Number>().DoubleValue();
  return d > 0 && d < 4294967296.0 ? static_cast<uint32_t>(d) : 0;
}
std::vector<std::string> GetStrs(const Napi::Value& v) {
  std::vector<std::string> out;
  if (!v.IsArray()) return out;
  auto a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value x = a.Get(i);
    if (x.IsString()) out.push_back(x.As<Napi::String>().Utf8Value());
  }
  return out;
}

// vethCreate({host, hostNetns, peer, peerNetns, mtu, peerMac, peerAddrs, replaceStaleHost, peerUp, guardHost})
//   -> Promise<{hostIndex, peerIndex}>
Napi::Value VethCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return Reject(env, "vethCreate(spec)");
  auto o = info[0].As<Napi::Object>();
  auto v = std::make_shared<VethSpec>();
  v->host = GetStr(o, "host");
  v->hostNs = GetStr(o, "hostNetns");
  v->peer = GetStr(o, "peer");
  v->peerNs = GetStr(o, "peerNetns");
  v->mtu = GetU32(o, "mtu");
  v->peerMac = GetStr(o, "peerMac");
  v->peerAddrs = GetStrs(o.Get("peerAddrs"));
  v->replaceStaleHost = o.Get("replaceStaleHost").ToBoolean();
  v->peerUp = !o.Has("peerUp") || o.Get("peerUp").ToBoolean();
  v->guardHost = o.Get("guardHost").ToBoolean();
  v->hostUp = !o.Has("hostUp") || o.Get("hostUp").ToBoolean();
  if (v->peerNs.empty()) return Reject(env, "vethCreate: peerNetns is required");
  return Start(
      env, [v]() { return CreateVeth(*v); },
      [v](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("hostIndex", v->hostIndex);
        r.Set("peerIndex", v->peerIndex);
        return r;
      });
}

// ingressGuard(netns, name) -> Promise<{added}>: the ingress guard on an
// existing interface (a host end made by an older daemon), if it lacks it.
Napi::Value IngressGuard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) return Reject(env, "ingressGuard(netns, name)");
  std::string ns = info[0].As<Napi::String>(), name = info[1].As<Napi::String>();
  auto added = std::make_shared<bool>(false);
  return Start(
      env,
      [ns, name, added]() -> std::string {
        const std::string label = NsLabel(ns);
        Socket s;
        std::string e = s.Open(ns, label);
        if (!e.empty()) return e;
        LinkInfo li;
        if (!(e = GetLink(s, name, label, &li)).empty()) return e;
        if (!li.exists) return "interface '" + name + "' does not exist in network namespace '" + label + "'";
        return GuardIngress(s, li.ifindex, "guard '" + name + "' in network namespace '" + label + "'", added.get());
      },
      [added](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("added", *added);
        return r;
      });
}

// ---- counter sockets ----------------------------------------------------------
// Sockets kept open, each in one namespace, for reading interface counters
// from the event loop: the kernel answers a GETLINK at once (no I/O, a few
// microseconds), so a status call reads every end's without a worker thread.
std::mutex g_statsMu;
std::map<int, std::unique_ptr<Socket>> g_stats;
int g_nextStats = 1;

// countersOpen(netnsPath) -> id ('' : the daemon's own namespace)
Napi::Value CountersOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "countersOpen(netnsPath)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string ns = info[0].As<Napi::String>();
  auto sock = std::make_unique<Socket>();
  std::string e = sock->Open(ns, NsLabel(ns));
  if (!e.empty()) {
    Napi::Error::New(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::lock_guard<std::mutex> lock(g_statsMu);
  int id = g_nextStats++;
  g_stats[id] = std::move(sock);
  return Napi::Number::New(env, id);
}

// countersDrops(id, ifindex) -> {rxDropped, txDropped} | null (no such interface)
Napi::Value CountersDrops(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "countersDrops(id, ifindex)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int id = info[0].As<Napi::Number>().Int32Value(), ifindex = info[1].As<Napi::Number>().Int32Value();
  std::lock_guard<std::mutex> lock(g_statsMu);
  auto it = g_stats.find(id);
  if (it == g_stats.end()) {
    Napi::Error::New(env, "countersDrops: no counter socket " + std::to_string(id)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  LinkDrops d;
  std::string e = GetLinkDrops(*it->second, ifindex, &d);
  if (!e.empty()) {
    Napi::Error::New(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!d.exists) return env.Null();
  auto r = Napi::Object::New(env);
  r.Set("rxDropped", static_cast<double>(d.rxDropped));
  r.Set("txDropped", static_cast<double>(d.txDropped));
  return r;
}

// countersClose(id)
Napi::Value CountersClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsNumber()) {
    std::lock_guard<std::mutex> lock(g_statsMu);
    g_stats.erase(info[0].As<Napi::Number>().Int32Value());
  }
  return env.Undefined();
}

// linkConfigure({netns, name, mac, mtu, addrs, up, master}) -> Promise<{ifindex}>
Napi::Value LinkConfigure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return Reject(env, "linkConfigure(spec)");
  auto o = info[0].As<Napi::Object>();
  auto c = std::make_shared<ConfigSpec>();
  c->ns = GetStr(o, "netns");
  c->name = GetStr(o, "name");
  c->mac = GetStr(o, "mac");
  c->mtu = GetU32(o, "mtu");
  c->addrs = GetStrs(o.Get("addrs"));
  c->master = GetStr(o, "master");
  if (o.Has("up") && o.Get("up").IsBoolean()) c->up = o.Get("up").ToBoolean() ? 1 : 0;
  return Start(
      env, [c]() { return Configure(*c); },
      [c](Napi::Env e) {
        auto r = Napi::Object::New(e);
        r.Set("ifindex", c->ifindex);
        return r;
      });
}

// linkGet(netns, name) -> Promise<{ifindex, mtu, up} | null>
Napi::Value LinkGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) return Reject(env, "linkGet(netns, name)");
  std::string ns = info[0].As<Napi::String>(), name = info[1].As<Napi::String>();
  auto li = std::make_shared<LinkInfo>();
  return Start(
      env,
      [ns, name, li]() {
        std::string p = IfnameProblem(name);
        if (!p.empty()) return p;
        Socket s;
        std::string e = s.Open(ns, NsLabel(ns));
        return e.empty() ? GetLink(s, name, NsLabel(ns), li.get()) : e;
      },
      [li](Napi::Env e) -> Napi::Value {
        if (!li->exists) return e.Null();
        auto r = Napi::Object::New(e);
        r.Set("ifindex", li->ifindex);
        r.Set("mtu", li->mtu);
        r.Set("up", li->up);
        return r;
      });
}

// linkDel(netns, name) -> Promise<boolean>: false when there was no such interface.
Napi::Value LinkDel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) return Reject(env, "linkDel(netns, name)");
  std::string ns = info[0].As<Napi::String>(), name = info[1].As<Napi::String>();
  auto existed = std::make_shared<bool>(false);
  return Start(
      env,
      [ns, name, existed]() -> std::string {
        std::string p = IfnameProblem(name);
        if (!p.empty()) return p;
        Socket s;
        std::string e = s.Open(ns, NsLabel(ns));
        if (!e.empty()) return e;
        int err = 0;
        e = DelLink(s, name, "delete interface '" + name + "' in network namespace '" + NsLabel(ns) + "'", &err);
        if (err == ENODEV) return "";
        *existed = e.empty();
        return e;
      },
      [existed](Napi::Env e) { return Napi::Boolean::New(e, *existed); });
}

// bridgeAdd(netns, name) -> Promise<void>
Napi::Value BridgeAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) return Reject(env, "bridgeAdd(netns, name)");
  std::string ns = info[0].As<Napi::String>(), name = info[1].As<Napi::String>();
  return Start(
      env, [ns, name]() { return AddBridge(ns, name); }, [](Napi::Env e) { return e.Undefined(); });
}

Napi::Value Errors(Napi::Env env, const std::vector<std::string>& errs) {
  auto a = Napi::Array::New(env, errs.size());
  for (uint32_t i = 0; i < errs.size(); i++) a.Set(i, errs[i]);
  return a;
}

// netnsAdd(names, {loUp}) -> Promise<string[]>: per name "" or why it failed.
Napi::Value NetnsAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return Reject(env, "netnsAdd(names, options)");
  auto names = GetStrs(info[0]);
  bool loUp = info.Length() > 1 && info[1].IsObject() && info[1].As<Napi::Object>().Get("loUp").ToBoolean();
  auto errs = std::make_shared<std::vector<std::string>>();
  return Start(
      env,
      [names, loUp, errs]() {
        AddNamespaces(names, loUp, errs.get());
        return std::string();
      },
      [errs](Napi::Env e) { return Errors(e, *errs); });
}

// netnsDel(names) -> Promise<string[]>: per name "" or why it failed.
Napi::Value NetnsDel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return Reject(env, "netnsDel(names)");
  auto names = GetStrs(info[0]);
  auto errs = std::make_shared<std::vector<std::string>>();
  return Start(
      env,
      [names, errs]() {
        DelNamespaces(names, errs.get());
        return std::string();
      },
      [errs](Napi::Env e) { return Errors(e, *errs); });
}

}  // namespace

Napi::Object Init(Napi::Env env) {
  auto o = Napi::Object::New(env);
  o.Set("vethCreate", Napi::Function::New(env, VethCreate));
  o.Set("ingressGuard", Napi::Function::New(env, IngressGuard));
  o.Set("countersOpen", Napi::Function::New(env, CountersOpen));
  o.Set("countersDrops", Napi::Function::New(env, CountersDrops));
  o.Set("countersClose", Napi::Function::New(env, CountersClose));
  o.Set("linkConfigure", Napi::Function::New(env, LinkConfigure));
  o.Set("linkGet", Napi::Function::New(env, LinkGet));
  o.Set("linkDel", Napi::Function::New(env, LinkDel));
  o.Set("bridgeAdd", Napi::Function::New(env, BridgeAdd));
  o.Set("netnsAdd", Napi::Function::New(env, NetnsAdd));
  o.Set("netnsDel", Napi::Function::New(env, NetnsDel));
  return o;
}

}  // namespace pw::nl
