// A port driven from JavaScript: batched frame I/O on one endpoint (an
// AF_PACKET socket bound to an interface, or a tap fd). Daemons use the frame
// engine (engine/); this stays for bench/floor's Node.js relay, which
// measures what moving frames through an event loop costs.
#pragma once
#include <napi.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uv.h>

#include <cstdint>
#include <vector>

namespace pw {

enum class PortKind { kPacket, kTap };

class Port : public Napi::ObjectWrap<Port> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Port(const Napi::CallbackInfo& info);
  ~Port() override;

  // Headroom before each slot so a VLAN tag the kernel stripped can be put
  // back in front of the payload without copying the payload.
  static constexpr int kHeadroom = 4;
  static constexpr int kVnetHdrLen = 10;  // struct virtio_net_hdr

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* handle, int status, int events);
  void Drain();
  int ReceiveBatch();
  int ReceivePacket();
  int ReceiveTap();
  void RestoreVlan(uint8_t* slot, uint32_t& len, uint16_t tpid, uint16_t tci);
  void ReadKernelStats();
  void StopPolling();

  int fd_ = -1;
  PortKind kind_ = PortKind::kPacket;
  bool vnet_ = false;
  int slotSize_ = 0;
  int slots_ = 0;
  uint8_t* rx_ = nullptr;    // slots_ * slotSize_ bytes, owned by rxRef_
  int32_t* meta_ = nullptr;  // per slot: offset of frame in rx_, length
  Napi::Reference<Napi::ArrayBuffer> rxRef_;
  Napi::Reference<Napi::Int32Array> metaRef_;
  Napi::FunctionReference onFrames_;
  uv_poll_t* poll_ = nullptr;
  bool polling_ = false;
  bool closed_ = false;

  std::vector<mmsghdr> rxMsgs_;
  std::vector<iovec> rxIov_;
  std::vector<uint8_t> rxCtl_;
  std::vector<uint8_t> rxAddr_;
  std::vector<mmsghdr> txMsgs_;
  std::vector<iovec> txIov_;

  // Cumulative counters; the kernel's PACKET_STATISTICS reset on read, so
  // they are folded in here.
  uint64_t rxFrames_ = 0, rxBytes_ = 0, txFrames_ = 0, txBytes_ = 0;
  uint64_t kernelDrops_ = 0, truncated_ = 0, vlanRestored_ = 0;
  uint64_t txBusy_ = 0, txTooBig_ = 0, txError_ = 0;
  int lastTxErrno_ = 0;
};

}  // namespace pw
