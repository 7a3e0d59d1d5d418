// Applying carrier to an interface (carrier.h). Plain ioctls: they touch one
// interface's flags and take microseconds, so the engine thread does them
// itself, right when it decides.
#include "carrier.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pw::engine {

namespace {
// SIOCSIFFLAGS on the interface by index, in the calling thread's namespace.
std::string SetUp(int ifindex, bool up) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr)
    return "interface " + std::to_string(ifindex) + ": " + strerror(errno);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return std::string("socket: ") + strerror(errno);
  ifreq ifr{};
  memcpy(ifr.ifr_name, name, IF_NAMESIZE);
  std::string err;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    err = std::string(name) + ": SIOCGIFFLAGS: " + strerror(errno);
  } else {
    short want = static_cast<short>(up ? (ifr.ifr_flags | IFF_UP) : (ifr.ifr_flags & ~IFF_UP));
    if (want != ifr.ifr_flags) {
      ifr.ifr_flags = want;
      if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) err = std::string(name) + ": set " + (up ? "up" : "down") + ": " + strerror(errno);
    }
  }
  close(s);
  return err;
}
}  // namespace

bool Carrier::ReadApplied() const {
  if (how != CarrierHow::kVethHost) return true;
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(static_cast<unsigned>(ifindex), name) == nullptr) return false;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  ifreq ifr{};
  memcpy(ifr.ifr_name, name, IF_NAMESIZE);
  bool up = ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP) != 0;
  close(s);
  return up;
}

void Carrier::Set(bool want, const std::string& why, uint64_t nowUs) {
  if (want == on) {
    reason = why;  // the same state for a newer reason: no change, no event
    return;
  }
  std::string err;
  if (how == CarrierHow::kVethHost) {
    err = SetUp(ifindex, want);
  } else if (how == CarrierHow::kTap) {
    int v = want ? 1 : 0;
    if (ioctl(fd, TUNSETCARRIER, &v) != 0) err = std::string("TUNSETCARRIER: ") + strerror(errno);
  }
  lastError = err;
  if (!err.empty()) {
    // Not applied: report the interface as it is; the next evaluation tries again.
    reason = why + " (carrier " + (want ? "on" : "off") + " not applied: " + err + ")";
    return;
  }
  on = want;
  reason = why;
  events.push_back({nowUs, want, why});
  eventsTotal++;
  while (events.size() > kCarrierEventsKept) events.pop_front();
}

}  // namespace pw::engine
