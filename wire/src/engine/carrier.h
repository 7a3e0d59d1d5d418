// Carrier that follows the wire: a pod's interface has carrier only while its
// wire is whole (both ends present, the cable plugged at both, the path to
// the far daemon up or down for less than the hold time). This is one end's
// carrier state, the mechanism that shows it to the pod (the veth's host end
// down/up, TUNSETCARRIER on a tap) and the bounded list of its changes. The
// decisions are the engine's (engine.cc, EvalCarrier); this file applies them.
#pragma once
#include <cstdint>
#include <deque>
#include <string>

namespace pw::engine {

enum class CarrierHow : int {
  kNone = 0,      // an interface patchwire does not own (host kind): tracked and reported, not touched
  kVethHost = 1,  // set the veth's host end (in the engine's namespace) down/up: the pod end then
                  // shows NO-CARRIER / LOWER_UP
  kTap = 2,       // TUNSETCARRIER on the tap's fd
};

struct CarrierEvent {
  uint64_t tsUs;  // unix microseconds
  bool on;
  std::string reason;
};

constexpr size_t kCarrierEventsKept = 64;  // per end; older ones are dropped (eventsTotal counts all)
constexpr uint32_t kDefaultHoldMs = 3000;

struct Carrier {
  CarrierHow how = CarrierHow::kNone;
  int ifindex = 0;  // kVethHost: the host end
  int fd = -1;      // kTap: the tap fd (owned by the port)
  uint32_t holdMs = kDefaultHoldMs;
  bool plugged = true;  // this end's cable
  // What the far daemon last said of its end; farKnown is cleared when the
  // stream that says it ends (the state may have changed meanwhile).
  bool farKnown = false, farPresent = false, farPlugged = false;
  bool on = false;  // what was last applied
  std::string reason;
  // Since when the far end's state is not known (0: it is); carrier that is
  // on stays on for holdMs of that, so a daemon restart flaps nothing.
  uint64_t uncertainSinceMs = 0;
  std::deque<CarrierEvent> events;
  uint64_t eventsTotal = 0;
  std::string lastError;  // the last failure to apply ("" if none)

  // Applies `on` to the interface and records the change with its reason.
  // When it is already so, only the reason is updated (no event).
  void Set(bool on, const std::string& why, uint64_t nowUs);
  // The interface's state as it is now (a restarted daemon keeps it): veth
  // host end up, tap and unowned interfaces: true.
  bool ReadApplied() const;
};

}  // namespace pw::engine
