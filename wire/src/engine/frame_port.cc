#include "frame_port.h"

#include <errno.h>
#include <linux/if_packet.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

namespace pw::engine {

namespace {
const uint8_t kZeroVnetHdr[FramePort::kVnetHdrLen] = {0};
uint16_t ReadLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void WriteLe16(uint8_t* p, uint16_t v) {
  p[0] = v & 0xff;
  p[1] = v >> 8;
}

// Scratch of the thread that reads and sends (the engine's): receive slots
// and their message headers, and the send headers. Grown to the largest port
// it served, never zeroed (pages are touched only by frames).
struct ThreadArea {
  std::unique_ptr<uint8_t[]> rx;
  size_t rxBytes = 0;
  std::vector<int32_t> meta;
  std::vector<mmsghdr> rxMsgs;
  std::vector<iovec> rxIov;
  std::vector<uint8_t> rxCtl, rxAddr;
  std::vector<mmsghdr> txMsgs;
  std::vector<iovec> txIov;
};
thread_local ThreadArea tArea;

}  // namespace

FramePort::FramePort(int fd, bool tap, bool vnet, int slotSize, int slots, EndCounters* counters)
    : fd_(fd), tap_(tap), vnet_(vnet), slotSize_(slotSize), slots_(slots), c_(counters) {}

FramePort::~FramePort() {
  ReadKernelStats();
  if (fd_ < 0) return;
  // A tap goes away only when its fd closes: closed now, so that the same
  // tap can be opened again at once (a wire removed and added again).
  if (tap_) close(fd_);
  else CloseSoon(fd_);
}

int FramePort::ReleaseFd() {
  ReadKernelStats();
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void CloseConcurrently(const std::vector<int>& fds) {
  constexpr size_t kPerThread = 8, kMaxThreads = 64;
  size_t threads = std::min(kMaxThreads, (fds.size() + kPerThread - 1) / kPerThread);
  if (threads <= 1) {
    for (int fd : fds) close(fd);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (size_t t = 0; t < threads; t++) {
    try {
      pool.emplace_back([&fds, t, threads] {
        for (size_t i = t; i < fds.size(); i += threads) close(fds[i]);
      });
    } catch (const std::system_error&) {
      // No thread to be had: this one closes the share it would have had.
      for (size_t i = t; i < fds.size(); i += threads) close(fds[i]);
    }
  }
  for (std::thread& th : pool) th.join();
}

namespace {

// Never destroyed: its thread outlives static destruction at exit.
struct Closer {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> queue;
  bool started = false;

  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [this] { return !queue.empty(); });
      std::vector<int> batch;
      batch.swap(queue);
      lock.unlock();
      CloseConcurrently(batch);
      lock.lock();
    }
  }
};

Closer* TheCloser() {
  static Closer* c = new Closer();
  return c;
}

}  // namespace

void CloseSoon(int fd) {
  Closer* c = TheCloser();
  std::lock_guard<std::mutex> lock(c->mu);
  if (!c->started) {
    try {
      std::thread([c] { c->Run(); }).detach();
      c->started = true;
    } catch (const std::system_error&) {
      close(fd);  // no thread to be had: the caller waits, as before
      return;
    }
  }
  c->queue.push_back(fd);
  c->cv.notify_one();
}

int FramePort::Receive() {
  ThreadArea& a = tArea;
  const size_t need = static_cast<size_t>(slotSize_) * slots_;
  if (a.rxBytes < need) {
    a.rx.reset(new uint8_t[need]);  // default-initialized: not touched
    a.rxBytes = need;
  }
  if (a.meta.size() < static_cast<size_t>(slots_) * 2) {
    a.meta.resize(static_cast<size_t>(slots_) * 2);
    a.rxMsgs.resize(slots_);
    a.rxIov.resize(slots_);
    a.rxCtl.resize(static_cast<size_t>(slots_) * CMSG_SPACE(sizeof(tpacket_auxdata)));
    a.rxAddr.resize(static_cast<size_t>(slots_) * sizeof(sockaddr_ll));
  }
  rx_ = a.rx.get();
  meta_ = a.meta.data();
  return tap_ ? ReceiveTap() : ReceivePacket();
}

// Puts an 802.1Q/802.1ad tag that rx-vlan offload moved into skb metadata
// back where it was on the wire, using the slot's headroom.
void FramePort::RestoreVlan(uint8_t* slot, uint32_t& len, uint16_t tpid, uint16_t tci) {
  int hdr = vnet_ ? kVnetHdrLen : 0;
  memmove(slot, slot + kHeadroom, hdr + 12);
  uint8_t* tag = slot + hdr + 12;
  tag[0] = tpid >> 8;
  tag[1] = tpid & 0xff;
  tag[2] = tci >> 8;
  tag[3] = tci & 0xff;
  len += 4;
  if (vnet_) {
    // Offsets in the virtio-net header count from the MAC header, which grew by four bytes.
    if (slot[0] & 1 /* VIRTIO_NET_HDR_F_NEEDS_CSUM */) WriteLe16(slot + 6, ReadLe16(slot + 6) + 4);
    uint16_t hdrLen = ReadLe16(slot + 2);
    if (hdrLen != 0) WriteLe16(slot + 2, hdrLen + 4);
  }
  c_->Add(c_->vlanRestored, 1);
}

int FramePort::ReceivePacket() {
  const size_t ctlSpace = CMSG_SPACE(sizeof(tpacket_auxdata));
  for (;;) {
    for (int i = 0; i < slots_; i++) {
      uint8_t* slot = rx_ + static_cast<size_t>(i) * slotSize_;
      tArea.rxIov[i].iov_base = slot + kHeadroom;
      tArea.rxIov[i].iov_len = slotSize_ - kHeadroom;
      msghdr& h = tArea.rxMsgs[i].msg_hdr;
      h.msg_name = tArea.rxAddr.data() + i * sizeof(sockaddr_ll);
      h.msg_namelen = sizeof(sockaddr_ll);
      h.msg_iov = &tArea.rxIov[i];
      h.msg_iovlen = 1;
      h.msg_control = tArea.rxCtl.data() + i * ctlSpace;
      h.msg_controllen = ctlSpace;
      h.msg_flags = 0;
    }
    int n;
    do {
      n = recvmmsg(fd_, tArea.rxMsgs.data(), slots_, MSG_DONTWAIT | MSG_TRUNC, nullptr);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return 0;
    int out = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) {
      msghdr& h = tArea.rxMsgs[i].msg_hdr;
      uint32_t len = tArea.rxMsgs[i].msg_len;
      auto* sll = static_cast<sockaddr_ll*>(h.msg_name);
      if (sll->sll_pkttype == PACKET_OUTGOING) continue;  // our own sends, where IGNORE_OUTGOING is missing
      if ((h.msg_flags & MSG_TRUNC) || len + kHeadroom > static_cast<uint32_t>(slotSize_)) {
        c_->Add(c_->truncated, 1);
        continue;
      }
      uint8_t* slot = rx_ + static_cast<size_t>(i) * slotSize_;
      int32_t offset = i * slotSize_ + kHeadroom;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&h); cm != nullptr; cm = CMSG_NXTHDR(&h, cm)) {
        if (cm->cmsg_level != SOL_PACKET || cm->cmsg_type != PACKET_AUXDATA) continue;
        tpacket_auxdata aux;
        memcpy(&aux, CMSG_DATA(cm), sizeof(aux));
        if ((aux.tp_status & TP_STATUS_VLAN_VALID) || aux.tp_vlan_tci != 0) {
          uint16_t tpid = (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid : 0x8100;
          RestoreVlan(slot, len, tpid, aux.tp_vlan_tci);
          offset -= kHeadroom;
        }
      }
      meta_[out * 2] = offset;
      meta_[out * 2 + 1] = static_cast<int32_t>(len);
      bytes += len - (vnet_ ? kVnetHdrLen : 0);
      out++;
    }
    c_->Add(c_->rxFrames, out);
    c_->Add(c_->rxBytes, bytes);
    // A full batch of skipped frames says nothing about what is still queued.
    if (out == 0 && n == slots_) continue;
    return out;
  }
}

int FramePort::ReceiveTap() {
  int out = 0;
  uint64_t bytes = 0;
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
      c_->Add(c_->truncated, 1);
      continue;
    }
    meta_[out * 2] = out * slotSize_ + kHeadroom;
    meta_[out * 2 + 1] = static_cast<int32_t>(r);
    bytes += r - (vnet_ ? kVnetHdrLen : 0);
    out++;
  }
  c_->Add(c_->rxFrames, out);
  c_->Add(c_->rxBytes, bytes);
  return out;
}

void FramePort::Send(const OutFrame* frames, int n) {
  if (n <= 0) return;
  std::vector<mmsghdr>& msgs = tArea.txMsgs;
  std::vector<iovec>& iovs = tArea.txIov;
  if (msgs.size() < static_cast<size_t>(n)) {
    msgs.resize(n);
    iovs.resize(static_cast<size_t>(n) * 2);
  }
  for (int i = 0; i < n; i++) {
    iovec* iov = &iovs[i * 2];
    int k = 0;
    if (vnet_) {
      iov[k].iov_base = const_cast<uint8_t*>(frames[i].vnetHdr ? frames[i].vnetHdr : kZeroVnetHdr);
      iov[k].iov_len = kVnetHdrLen;
      k++;
    }
    iov[k].iov_base = const_cast<uint8_t*>(frames[i].data);
    iov[k].iov_len = frames[i].len;
    k++;
    msghdr& m = msgs[i].msg_hdr;
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = k;
  }
  uint64_t sent = 0, bytes = 0;
  auto fail = [&](int err) {
    if (err == EAGAIN || err == ENOBUFS) c_->Add(c_->sendBusy, 1);
    else if (err == EMSGSIZE) c_->Add(c_->tooBig, 1);
    else c_->Add(c_->sendError, 1);
  };
  if (!tap_) {
    int i = 0;
    while (i < n) {
      int r = sendmmsg(fd_, &msgs[i], n - i, MSG_DONTWAIT);
      if (r > 0) {
        for (int k = 0; k < r; k++) bytes += frames[i + k].len;
        sent += r;
        i += r;
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else {
        fail(r < 0 ? errno : EIO);  // sendmmsg stops at the failing frame: skip it
        i++;
      }
    }
  } else {
    for (int i = 0; i < n; i++) {
      ssize_t r;
      do {
        r = writev(fd_, msgs[i].msg_hdr.msg_iov, msgs[i].msg_hdr.msg_iovlen);
      } while (r < 0 && errno == EINTR);
      if (r < 0) {
        fail(errno);
      } else {
        sent++;
        bytes += frames[i].len;
      }
    }
  }
  c_->Add(c_->txFrames, sent);
  c_->Add(c_->txBytes, bytes);
}

void FramePort::ReadKernelStats() {
  if (tap_ || fd_ < 0) return;
  tpacket_stats st;
  socklen_t len = sizeof(st);
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) c_->Add(c_->kernelRing, st.tp_drops);
}

}  // namespace pw::engine
