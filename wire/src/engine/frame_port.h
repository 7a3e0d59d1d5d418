// Batched frame I/O on one endpoint for the engine thread: an AF_PACKET
// socket bound to an interface, or a tap fd. No N-API here: the engine owns
// the port and is the only thread that reads or sends on it; counters are
// atomics so the event loop can read them at any time.
#pragma once
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pw::engine {

// Counters of one wire end. rx: from the endpoint into the wire; tx: from
// the wire out of the endpoint. Written by the engine thread only.
struct EndCounters {
  std::atomic<uint64_t> rxFrames{0}, rxBytes{0}, txFrames{0}, txBytes{0};
  std::atomic<uint64_t> queueFull{0}, peerDown{0}, tooBig{0}, kernelRing{0}, truncated{0};
  std::atomic<uint64_t> sendBusy{0}, sendError{0}, vlanRestored{0}, pauses{0};
  // Impairments (impair.h): drops by cause, and what they did to the frames they kept.
  std::atomic<uint64_t> impairedLoss{0}, rateLimited{0}, impairOverflow{0};
  std::atomic<uint64_t> impairDuplicated{0}, impairCorrupted{0}, impairReordered{0};
  std::atomic<uint64_t> cablePulled{0};  // frames that met a pulled cable (this end's or the far end's)
  std::atomic<uint64_t> noCarrier{0};    // frames for an end without carrier, its cable plugged
  void Add(std::atomic<uint64_t>& c, uint64_t n) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
};

// A frame to send: an optional virtio-net header and the frame itself.
struct OutFrame {
  const uint8_t* vnetHdr;  // nullptr: none came with it (a zero header is sent where one is expected)
  const uint8_t* data;
  uint32_t len;
};

// Closes fds from several threads at once. Each close of a packet socket
// waits for an RCU grace period (packet_release -> synchronize_net), 24 ms on
// this kernel: one by one, a daemon with 1000 ends took 24 s to exit;
// concurrent closes share grace periods.
void CloseConcurrently(const std::vector<int>& fds);
// Closes fd on a closer thread, soon: closing a packet socket waits for an
// RCU grace period (24 ms on this kernel), which a wire's removal must not
// make the event loop wait (1000 ends removed one by one: 24 s).
void CloseSoon(int fd);

class FramePort {
 public:
  static constexpr int kHeadroom = 4;  // room to put back a VLAN tag the kernel stripped
  static constexpr int kVnetHdrLen = 10;

  // Takes ownership of fd. slotSize bounds the largest frame (with header).
  FramePort(int fd, bool tap, bool vnet, int slotSize, int slots, EndCounters* counters);
  ~FramePort();
  FramePort(const FramePort&) = delete;
  FramePort& operator=(const FramePort&) = delete;

  int fd() const { return fd_; }
  bool vnet() const { return vnet_; }
  bool tap() const { return tap_; }
  int slots() const { return slots_; }

  // Reads up to slots() frames; frame i is at frame(i), length len(i),
  // starting with its virtio-net header when vnet(). The frames live in a
  // receive area shared by every port the calling thread reads: they are
  // valid until the next Receive() on any port of this thread.
  int Receive();
  uint8_t* frame(int i) { return rx_ + meta_[2 * i]; }
  uint32_t len(int i) const { return static_cast<uint32_t>(meta_[2 * i + 1]); }

  // Sends frames; every frame is counted as sent or dropped by cause.
  void Send(const OutFrame* frames, int n);
  // Folds the kernel's drop counter (PACKET_STATISTICS, reset on read) in.
  void ReadKernelStats();
  // Gives the fd to the caller (kernel counters folded in first); the port
  // then closes nothing. For closing many ports at once (CloseConcurrently).
  int ReleaseFd();

 private:
  int ReceivePacket();
  int ReceiveTap();
  void RestoreVlan(uint8_t* slot, uint32_t& len, uint16_t tpid, uint16_t tci);

  int fd_;
  bool tap_, vnet_;
  int slotSize_, slots_;
  EndCounters* c_;
  // The calling thread's receive area, set by Receive(). The engine reads
  // one port at a time and is done with a batch (sent, queued or recorded)
  // before it reads the next, so one area per thread serves every port:
  // per-port slots (64 x 64 KiB each, zeroed) were 4.2 MB of RSS per idle
  // wire end, and a port that once took a burst of GSO super-frames kept it.
  uint8_t* rx_ = nullptr;
  int32_t* meta_ = nullptr;
};

}  // namespace pw::engine
