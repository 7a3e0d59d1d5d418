// The frame engine: one thread of its own that owns every port, every
// connection to a peer daemon (HTTP/2 through nghttp2, TLS through OpenSSL),
// gRPC framing, batching, backpressure, per-wire counters and capture-ring
// writes. The event loop configures it and reads it through the methods
// below, which take the engine's lock for a bounded moment (the engine holds
// it for one pass over ready events), never once per frame.
#pragma once
#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "capture_ring.h"
#include "carrier.h"
#include "codec.h"
#include "frame_port.h"
#include "impair.h"

namespace pw::engine {

struct EngineOptions {
  std::string node;
  std::string lab;
  std::string listenHost;  // "" or an address
  int listenPort = 0;
  bool tls = false;
  std::string tlsCert, tlsKey, tlsCa;  // PEM; the certificate must name `node`
  // Connections that have not proved which node they are (TLS: still in the
  // handshake; plain text: no hello yet), per remote address, and
  // connections in all: past these, new ones are closed at accept.
  int maxPendingPerHost = 32;
  int maxConns = 1024;
  size_t maxQueueBytes = 8 << 20;   // per peer, before frames count as queue_full
  size_t highWaterBytes = 2 << 20;  // past this, senders pause reading their ports
  // Receive buffer of each AF_PACKET port: what the kernel holds for the
  // engine before it drops (kernel_ring). Deeper means more standing delay
  // under load, not more throughput. 0 leaves the socket as opened.
  int portRcvBufBytes = 0;
  uint32_t keepaliveMs = 5000;
  uint32_t connectTimeoutMs = 5000;
  // How long carrier stays on while the far daemon cannot be reached (or has
  // not said how its end is), for wires that do not set their own.
  uint32_t carrierHoldMs = kDefaultHoldMs;
};

struct EndConfig {
  std::string name;  // "pod/ifname"
  int fd;
  bool tap;
  bool vnet;
  int slotSize;
  int slots;
  uint32_t maxFrame;  // largest frame (no virtio-net header) the endpoint can send
  CarrierHow carrier = CarrierHow::kNone;
  int carrierIfindex = 0;  // kVethHost: the host end's index in the engine's namespace
  bool plugged = true;     // the cable at this end
  // Re-attached by a restarted daemon: carrier stays as the interface has it
  // (for the hold time, until the far end says how it is). A new end starts
  // without carrier, which comes on when the far end is ready.
  bool restored = false;
};

// A shared segment (a link with more than two members): every frame one
// member sends goes to every other member, here and on the peers below.
// Bounded: a frame fans out to at most kMaxSegmentEnds local members and
// kMaxSegmentPeers peer daemons (membership is set by our own event loop,
// never learned from peers).
constexpr size_t kMaxSegmentEnds = 64;
constexpr size_t kMaxSegmentPeers = 64;

struct SegmentPeerConfig {
  std::string node, address;
};

struct WireConfig {
  uint64_t uid;
  std::vector<EndConfig> ends;  // wire: 1 (far end on a peer) or 2 (both here); segment: 1..kMaxSegmentEnds
  size_t ringBytes;
  std::string peerNode, peerAddress;
  uint32_t carrierHoldMs = 0;  // 0: the engine's default
  bool segment = false;
  std::vector<SegmentPeerConfig> segmentPeers;  // segment: the daemons holding its other members
};

// One wire end's carrier as status and the control API show it.
struct CarrierInfo {
  bool on, plugged, farKnown, farPresent, farPlugged;
  uint32_t holdMs;
  std::string reason, lastError;
  uint64_t eventsTotal;
  std::vector<CarrierEvent> events;  // oldest first, at most kCarrierEventsKept
};

struct PeerInfo {
  std::string node, address;
  bool inbound, outbound;
  uint64_t reconnects, framesIn, framesOut, batchesIn, batchesOut, queuedBytes;
  double rttMs;
  std::string lastError;
};

struct CertInfo {
  std::vector<std::string> names;  // DNS subjectAltNames
  int64_t notAfter = 0;            // unix seconds
  std::string serial;              // hex
};

struct EngineHealth {
  uint64_t unknownWire, malformed, malformedFrames, refusedStreams, acceptedConns, tlsRefused, identityRefused,
      refusedConns, tlsRotations;
  std::string lastTlsRefusal;  // address and reason of the last TLS refusal
  std::string lastConnRefusal;
  CertInfo cert;               // what this daemon presents (empty names: plain text)
};

struct Peer;
struct Conn;
struct Chunk;
struct End;
struct Wire;

class Engine {
 public:
  // notify: called on the engine thread when a live capture reader has data.
  Engine(const EngineOptions& opts, std::function<void(int reader)> notify);
  ~Engine();
  // Binds, listens and starts the thread; "" or why not.
  std::string Start(int* boundPort);
  void Stop();

  // Takes the fds of cfg.ends on success; on failure they stay the caller's.
  std::string AddWire(const WireConfig& cfg);
  bool RemoveWire(uint64_t uid);
  // Per end of the wire, in order: false when the wire does not exist.
  bool Counters(uint64_t uid, std::vector<std::map<std::string, uint64_t>>* out);
  bool PeerUp(const std::string& node);
  // Grows whenever any end's carrier, its reason or what is known of a far
  // end changes: the control plane re-reads carrier only when it moved.
  uint64_t CarrierRevision() const { return carrierRevision_.load(std::memory_order_relaxed); }
  // Impairments of one end (0 or 1, as added) in one direction (kImpairIn:
  // frames delivered to the pod; kImpairOut: frames the pod sends). cfg
  // nullptr (or one that does nothing) clears them; frames already waiting
  // then leave at once. "" or why not.
  static constexpr int kImpairIn = 0, kImpairOut = 1;
  std::string SetImpair(uint64_t uid, int end, int dir, const ImpairConfig* cfg);
  // Plugs or pulls the cable at one end of a wire (end: index as in
  // Counters). "" or why not.
  std::string SetCable(uint64_t uid, int end, bool plugged);
  // Per end of the wire, in order: false when the wire does not exist.
  bool CarrierOf(uint64_t uid, std::vector<CarrierInfo>* out);
  // Swaps the TLS identity for new connections (certificate rotation); live
  // connections keep theirs. "" or why not (the old identity stays).
  std::string SetTls(const std::string& certPem, const std::string& keyPem, const std::string& caPem);
  std::vector<PeerInfo> Peers();
  EngineHealth Health();

  bool RingSnapshot(uint64_t uid, int end, std::vector<uint8_t>* out);
  int RingReaderAdd(uint64_t uid, int end, size_t maxBytes);  // 0: no such end
  bool RingReaderDrain(int reader, std::vector<uint8_t>* out, uint64_t* dropped);
  void RingReaderRemove(int reader);

 private:
  void Run();
  void HandleEvent(uint64_t key, uint32_t events);
  void OnPortReadable(End* e);
  void ForwardToPeer(End* e, int n);
  void ForwardLocal(End* from, End* to, int n);
  void SendToPeer(End* e, Peer* p, const OutFrame* frames, int n);
  void SegmentOut(End* from, const OutFrame* frames, int n);
  void SendSegmentCarrier(Wire* w, bool present);
  void ToEnd(End* to, const OutFrame* frames, int n);
  void ToPod(End* e, const OutFrame* frames, int n);
  void RunImpairments();
  void Accept();
  void OnConnEvent(Conn* c, uint32_t events);
  void StartH2(Conn* c);
  void Flush(Conn* c);
  void FailConn(Conn* c, const std::string& why);
  void Reap();
  void Unsubscribed(Peer* p);
  void ResumePaused(Peer* p);
  Chunk TakeChunk(size_t len);
  void GiveChunk(Chunk c);
  // Runs what is due; returns ms until the next timer is.
  uint64_t Tick(uint64_t nowMs);
  void Connect(Peer* p, uint64_t nowMs);
  void OnMessage(Conn* c, const uint8_t* msg, size_t len);
  void Deliver(Peer* p, const uint8_t* msg, size_t len);
  void ServerHeadersDone(Conn* c);
  void QueueMessage(Conn* c, const uint8_t* msg, size_t len, bool prefixed);
  void Drained(Conn* c);
  void Pause(End* e, Peer* p);
  void UpdateEpoll(Conn* c);
  Peer* PeerFor(const std::string& node);
  // Carrier (engine.cc): decide each end's carrier from what is known and
  // apply it; tell peers how our ends are.
  void EvalCarrier(End* e, uint64_t nowMs);  // EvalCarrierOf, counted in carrierRevision_
  void EvalCarrierOf(End* e, uint64_t nowMs);
  uint64_t EvalAllCarrier(uint64_t nowMs);  // returns when a hold time next runs out (0: none)
  void SendCarrier(Peer* p, const std::vector<CarrierStateRef>& states);
  void SendAllCarrier(Peer* p);
  void FarStates(Peer* p);
  void FarUnknown(Peer* p);
  bool CablePulled(const End* e) const;
  void RetainPeers();
  std::string SetupTls();
  std::string BuildTls(const std::string& certPem, const std::string& keyPem, const std::string& caPem,
                       SSL_CTX** server, SSL_CTX** client, CertInfo* info);

  friend struct H2;  // the nghttp2 callbacks (engine.cc)

  EngineOptions opts_;
  std::function<void(int)> notify_;
  int epfd_ = -1, listenFd_ = -1, wakeFd_ = -1, timerFd_ = -1;
  bool timerArmed_ = false;
  // The impairment timer's adaptive lead (as KVM's lapic_timer_advance_ns):
  // the timer is armed this much before the next frame is due, and frames
  // due within it leave, so a frame leaves on average when due although a
  // wake from idle comes tens of microseconds late on a virtual machine.
  // timerArmedAtNs_ is what the timer was last armed for; each firing feeds
  // its lateness into the average.
  uint64_t timerArmedAtNs_ = 0, timerLeadNs_ = 0;
  uint64_t wokeNs_ = 0;  // when epoll_wait last returned
  static constexpr uint64_t kMaxTimerLeadNs = 200'000;
  std::vector<End*> impaired_;  // ends with impairments (an empty list costs the pass nothing)
  uint64_t impairSeed_ = 0;
  SSL_CTX* sslServer_ = nullptr;
  SSL_CTX* sslClient_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // held by the engine for each pass, by callers for each call
  // Callers waiting for mu_: the engine steps aside after its pass until they
  // had it (a busy engine would otherwise take the lock straight back, and
  // the event loop would starve under load).
  std::atomic<int> waiters_{0};
  struct ApiLock {
    explicit ApiLock(Engine* e) : e_(e) {
      e_->waiters_.fetch_add(1);
      e_->mu_.lock();
      e_->waiters_.fetch_sub(1);
    }
    ~ApiLock() { e_->mu_.unlock(); }
    Engine* e_;
  };

  uint64_t nextId_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Wire>> wires_;
  std::unordered_map<uint64_t, End*> endsById_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::map<std::string, std::unique_ptr<Peer>> peers_;
  std::vector<Conn*> dirty_;
  std::vector<uint64_t> closed_;
  std::map<int, std::pair<CaptureRing*, int>> readers_;  // global reader id -> (ring, ring's reader id)
  int nextReader_ = 1;

  // scratch for one delivery
  std::vector<FrameRef> decoded_;
  std::vector<CarrierStateRef> states_;
  bool carrierDirty_ = false;   // something carrier depends on changed: evaluate at the end of the pass
  std::atomic<uint64_t> carrierRevision_{0};
  uint64_t carrierDueMs_ = 0;   // a hold time runs out then (0: none)
  std::vector<End*> touched_;
  std::vector<uint8_t> readBuf_;
  std::vector<OutFrame> outScratch_;
  std::vector<CaptureFrame> capScratch_;
  std::vector<Chunk> freeChunks_;
  size_t freeBytes_ = 0;

  std::atomic<uint64_t> unknownWire_{0}, malformed_{0}, malformedFrames_{0}, refusedStreams_{0}, accepted_{0}, tlsRefused_{0};
  std::atomic<uint64_t> identityRefused_{0}, refusedConns_{0}, tlsRotations_{0};
  std::string lastTlsRefusal_;   // under mu_
  std::string lastConnRefusal_;  // under mu_
  CertInfo cert_;                // under mu_
};

}  // namespace pw::engine
