#include "port.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

namespace pw {

namespace {
constexpr int kMaxRoundsPerWake = 8;  // bound the time one port holds the loop
const uint8_t kZeroVnetHdr[Port::kVnetHdrLen] = {0};

uint16_t ReadLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void WriteLe16(uint8_t* p, uint16_t v) {
  p[0] = v & 0xff;
  p[1] = v >> 8;
}
}  // namespace

Napi::Function Port::Init(Napi::Env env) {
  return DefineClass(env, "Port",
                     {
                         InstanceMethod("start", &Port::Start),
                         InstanceMethod("pause", &Port::Pause),
                         InstanceMethod("send", &Port::Send),
                         InstanceMethod("stats", &Port::Stats),
                         InstanceMethod("close", &Port::Close),
                     });
}

// new Port(fd, kind, vnetHdr, slotSize, slots)
Port::Port(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Port>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsBoolean() ||
      !info[3].IsNumber() || !info[4].IsNumber()) {
    Napi::TypeError::New(env, "Port(fd, kind, vnetHdr, slotSize, slots)").ThrowAsJavaScriptException();
    return;
  }
  fd_ = info[0].As<Napi::Number>().Int32Value();
  std::string kind = info[1].As<Napi::String>().Utf8Value();
  if (kind == "packet") {
    kind_ = PortKind::kPacket;
  } else if (kind == "tap") {
    kind_ = PortKind::kTap;
  } else {
    Napi::TypeError::New(env, "Port kind must be 'packet' or 'tap'").ThrowAsJavaScriptException();
    return;
  }
  vnet_ = info[2].As<Napi::Boolean>().Value();
  slotSize_ = info[3].As<Napi::Number>().Int32Value();
  slots_ = info[4].As<Napi::Number>().Int32Value();
  if (slotSize_ < 256 || slots_ < 1 || slots_ > 1024) {
    Napi::RangeError::New(env, "Port slotSize must be >= 256 and slots 1..1024").ThrowAsJavaScriptException();
    return;
  }

  auto rx = Napi::ArrayBuffer::New(env, static_cast<size_t>(slotSize_) * slots_);
  auto meta = Napi::Int32Array::New(env, static_cast<size_t>(slots_) * 2);
  rx_ = static_cast<uint8_t*>(rx.Data());
  meta_ = meta.Data();
  rxRef_ = Napi::Persistent(rx);
  metaRef_ = Napi::Persistent(meta);
  info.This().As<Napi::Object>().Set("rx", rx);
  info.This().As<Napi::Object>().Set("meta", meta);

  rxMsgs_.resize(slots_);
  rxIov_.resize(slots_);
  rxCtl_.resize(static_cast<size_t>(slots_) * CMSG_SPACE(sizeof(tpacket_auxdata)));
  rxAddr_.resize(static_cast<size_t>(slots_) * sizeof(sockaddr_ll));
}

Port::~Port() {
  if (!closed_ && fd_ >= 0) close(fd_);
}

void Port::OnPoll(uv_poll_t* handle, int status, int events) {
  Port* self = static_cast<Port*>(handle->data);
  if (self == nullptr || self->closed_) return;
  self->Drain();
}

void Port::Drain() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  for (int round = 0; round < kMaxRoundsPerWake && polling_; round++) {
    int n = ReceiveBatch();
    if (n <= 0) break;
    // MakeCallback runs microtasks and reports exceptions like any other
    // libuv-driven callback would.
    onFrames_.MakeCallback(Value(), {Napi::Number::New(env, n)});
    if (n < slots_) break;  // the socket is empty; no need to ask again
  }
}

int Port::ReceiveBatch() {
  if (kind_ == PortKind::kTap) return ReceiveTap();
  return ReceivePacket();
}

// Puts an 802.1Q/802.1ad tag that rx-vlan offload moved into skb metadata
// back where it was on the wire, using the slot's headroom.
void Port::RestoreVlan(uint8_t* slot, uint32_t& len, uint16_t tpid, uint16_t tci) {
  int hdr = vnet_ ? kVnetHdrLen : 0;
  uint8_t* frame = slot + kHeadroom;
  memmove(slot, frame, hdr + 12);
  uint8_t* tag = slot + hdr + 12;
  tag[0] = tpid >> 8;
  tag[1] = tpid & 0xff;
  tag[2] = tci >> 8;
  tag[3] = tci & 0xff;
  len += 4;
  if (vnet_) {
    // Offsets in the virtio-net header count from the MAC header, which just
    // grew by four bytes.
    uint8_t* vh = slot;
    if (vh[0] & 1 /* VIRTIO_NET_HDR_F_NEEDS_CSUM */) WriteLe16(vh + 6, ReadLe16(vh + 6) + 4);
    uint16_t hdrLen = ReadLe16(vh + 2);
    if (hdrLen != 0) WriteLe16(vh + 2, hdrLen + 4);
  }
  vlanRestored_++;
}

int Port::ReceivePacket() {
  const size_t ctlSpace = CMSG_SPACE(sizeof(tpacket_auxdata));
  for (int i = 0; i < slots_; i++) {
    uint8_t* slot = rx_ + static_cast<size_t>(i) * slotSize_;
    rxIov_[i].iov_base = slot + kHeadroom;
    rxIov_[i].iov_len = slotSize_ - kHeadroom;
    msghdr& h = rxMsgs_[i].msg_hdr;
    h.msg_name = rxAddr_.data() + i * sizeof(sockaddr_ll);
    h.msg_namelen = sizeof(sockaddr_ll);
    h.msg_iov = &rxIov_[i];
    h.msg_iovlen = 1;
    h.msg_control = rxCtl_.data() + i * ctlSpace;
    h.msg_controllen = ctlSpace;
    h.msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(fd_, rxMsgs_.data(), slots_, MSG_DONTWAIT | MSG_TRUNC, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;

  int out = 0;
  for (int i = 0; i < n; i++) {
    msghdr& h = rxMsgs_[i].msg_hdr;
    uint32_t len = rxMsgs_[i].msg_len;
    auto* sll = static_cast<sockaddr_ll*>(h.msg_name);
    if (sll->sll_pkttype == PACKET_OUTGOING) continue;  // our own sends, if the kernel lacks IGNORE_OUTGOING
    if (h.msg_flags & MSG_TRUNC) {
      truncated_++;
      continue;
    }
    // Slots are compacted so JS sees frames 0..out-1; only the meta moves,
    // frames stay where the kernel wrote them.
    uint8_t* slot = rx_ + static_cast<size_t>(i) * slotSize_;
    int32_t offset = static_cast<int32_t>(i) * slotSize_ + kHeadroom;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      tpacket_auxdata aux;
      memcpy(&aux, CMSG_DATA(c), sizeof(aux));
      if ((aux.tp_status & TP_STATUS_VLAN_VALID) || aux.tp_vlan_tci != 0) {
        uint16_t tpid = (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid : 0x8100;
        RestoreVlan(slot, len, tpid, aux.tp_vlan_tci);
        offset -= kHeadroom;
      }
    }
    meta_[out * 2] = offset;
    meta_[out * 2 + 1] = static_cast<int32_t>(len);
    rxFrames_++;
    rxBytes_ += len - (vnet_ ? kVnetHdrLen : 0);
    out++;
  }
  // A full batch of skipped frames (truncated ones) says nothing about what
  // is still queued: read on rather than tell JS "nothing".
  if (out == 0 && n == slots_) return ReceivePacket();
  return out;
}

int Port::ReceiveTap() {
  int out = 0;
  for (int i = 0; i < slots_; i++) {
    uint8_t* dst = rx_ + static_cast<size_t>(out) * slotSize_ + kHeadroom;
    ssize_t r = read(fd_, dst, slotSize_ - kHeadroom);
    if (r < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      break;  // EAGAIN: empty
    }
    if (r == 0) break;
    if (r >= slotSize_ - kHeadroom) {  // tun cut it to fit the buffer
      truncated_++;
      continue;
    }
    meta_[out * 2] = static_cast<int32_t>(out) * slotSize_ + kHeadroom;
    meta_[out * 2 + 1] = static_cast<int32_t>(r);
    rxFrames_++;
    rxBytes_ += r - (vnet_ ? kVnetHdrLen : 0);
    out++;
  }
  return out;
}

// start(onFrames(count)): begin delivering batches.
Napi::Value Port::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    Napi::Error::New(env, "port is closed").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (info.Length() >= 1 && info[0].IsFunction()) onFrames_ = Napi::Persistent(info[0].As<Napi::Function>());
  if (onFrames_.IsEmpty()) {
    Napi::TypeError::New(env, "start(onFrames) needs a callback").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (polling_) return env.Undefined();
  if (poll_ == nullptr) {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    if (uv_poll_init(loop, poll_, fd_) != 0) {
      delete poll_;
      poll_ = nullptr;
      Napi::Error::New(env, "uv_poll_init failed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    poll_->data = this;
    Ref();  // the poll handle keeps the port alive until close()
  }
  uv_poll_start(poll_, UV_READABLE, &Port::OnPoll);
  polling_ = true;
  return env.Undefined();
}

// pause(): stop reading (the kernel queues or counts drops meanwhile).
Napi::Value Port::Pause(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr && polling_) uv_poll_stop(poll_);
  polling_ = false;
  return info.Env().Undefined();
}

// send(buf, hdrOff, dataOff, dataLen, count) -> frames sent.
// hdrOff[i] < 0 means "no virtio-net header came with this frame"; a zero
// header is sent in its place on ports that expect one.
Napi::Value Port::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return Napi::Number::New(env, 0);
  if (info.Length() < 5 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
      !info[3].IsTypedArray() || !info[4].IsNumber()) {
    Napi::TypeError::New(env, "send(buf, hdrOff, dataOff, dataLen, count)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto buf = info[0].As<Napi::Uint8Array>();
  auto hdrOff = info[1].As<Napi::Int32Array>();
  auto dataOff = info[2].As<Napi::Int32Array>();
  auto dataLen = info[3].As<Napi::Int32Array>();
  size_t count = info[4].As<Napi::Number>().Uint32Value();
  if (count > hdrOff.ElementLength() || count > dataOff.ElementLength() || count > dataLen.ElementLength()) {
    Napi::RangeError::New(env, "send: count exceeds the offset arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint8_t* base = buf.Data();
  size_t size = buf.ByteLength();
  if (txMsgs_.size() < count) {
    txMsgs_.resize(count);
    txIov_.resize(count * 2);
  }
  size_t valid = 0;
  for (size_t i = 0; i < count; i++) {
    int32_t d = dataOff[i], l = dataLen[i], h = hdrOff[i];
    if (d < 0 || l <= 0 || static_cast<size_t>(d) + l > size ||
        (h >= 0 && static_cast<size_t>(h) + kVnetHdrLen > size)) {
      txError_++;
      continue;
    }
    iovec* iov = &txIov_[valid * 2];
    int n = 0;
    if (vnet_) {
      iov[n].iov_base = const_cast<uint8_t*>(h >= 0 ? base + h : kZeroVnetHdr);
      iov[n].iov_len = kVnetHdrLen;
      n++;
    }
    iov[n].iov_base = base + d;
    iov[n].iov_len = l;
    n++;
    msghdr& m = txMsgs_[valid].msg_hdr;
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = n;
    valid++;
  }

  size_t sent = 0;
  auto account = [&](size_t i, int err) {
    if (err == 0) {
      sent++;
      txFrames_++;
      txBytes_ += txMsgs_[i].msg_hdr.msg_iov[vnet_ ? 1 : 0].iov_len;
    } else if (err == EAGAIN || err == ENOBUFS) {
      txBusy_++;
    } else if (err == EMSGSIZE) {
      txTooBig_++;
    } else {
      txError_++;
      lastTxErrno_ = err;
    }
  };
  if (kind_ == PortKind::kPacket) {
    size_t i = 0;
    while (i < valid) {
      int r = sendmmsg(fd_, &txMsgs_[i], valid - i, MSG_DONTWAIT);
      if (r > 0) {
        for (int k = 0; k < r; k++) account(i + k, 0);
        i += r;
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else {
        account(i, r < 0 ? errno : EIO);  // sendmmsg stops at the failing frame; skip it
        i++;
      }
    }
  } else {
    for (size_t i = 0; i < valid; i++) {
      ssize_t r;
      do {
        r = writev(fd_, txMsgs_[i].msg_hdr.msg_iov, txMsgs_[i].msg_hdr.msg_iovlen);
      } while (r < 0 && errno == EINTR);
      account(i, r < 0 ? errno : 0);
    }
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

void Port::ReadKernelStats() {
  if (kind_ != PortKind::kPacket || closed_) return;
  tpacket_stats st;
  socklen_t len = sizeof(st);
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) kernelDrops_ += st.tp_drops;
}

Napi::Value Port::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ReadKernelStats();
  auto o = Napi::Object::New(env);
  o.Set("rxFrames", Napi::Number::New(env, static_cast<double>(rxFrames_)));
  o.Set("rxBytes", Napi::Number::New(env, static_cast<double>(rxBytes_)));
  o.Set("txFrames", Napi::Number::New(env, static_cast<double>(txFrames_)));
  o.Set("txBytes", Napi::Number::New(env, static_cast<double>(txBytes_)));
  o.Set("kernelDrops", Napi::Number::New(env, static_cast<double>(kernelDrops_)));
  o.Set("truncated", Napi::Number::New(env, static_cast<double>(truncated_)));
  o.Set("vlanRestored", Napi::Number::New(env, static_cast<double>(vlanRestored_)));
  o.Set("txBusy", Napi::Number::New(env, static_cast<double>(txBusy_)));
  o.Set("txTooBig", Napi::Number::New(env, static_cast<double>(txTooBig_)));
  o.Set("txError", Napi::Number::New(env, static_cast<double>(txError_)));
  o.Set("lastTxError", Napi::String::New(env, lastTxErrno_ ? strerror(lastTxErrno_) : ""));
  return o;
}

void Port::StopPolling() {
  if (poll_ == nullptr) return;
  uv_poll_stop(poll_);
  polling_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  poll_ = nullptr;
  Unref();
}

Napi::Value Port::Close(const Napi::CallbackInfo& info) {
  if (closed_) return info.Env().Undefined();
  ReadKernelStats();
  StopPolling();
  closed_ = true;
  close(fd_);
  fd_ = -1;
  onFrames_.Reset();
  return info.Env().Undefined();
}

}  // namespace pw
