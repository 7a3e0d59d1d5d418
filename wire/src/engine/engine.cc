#include "engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

namespace pw::engine {

namespace {
constexpr uint64_t kTypePort = 1ULL << 56, kTypeConn = 2ULL << 56, kTypeListen = 3ULL << 56, kTypeWake = 4ULL << 56,
                   kTypeTimer = 5ULL << 56;
constexpr uint64_t kIdMask = (1ULL << 56) - 1;
constexpr int kMaxRoundsPerWake = 8;       // bound the time one port holds the engine
constexpr uint32_t kWindow = 16 << 20;      // HTTP/2 stream and connection windows
constexpr uint32_t kMaxFrame = 1 << 20;     // largest DATA frame we accept
// Largest DATA frame we send: about what the socket takes at once under
// TCP_NOTSENT_LOWAT, so a frame rarely has to be copied aside half-written.
constexpr uint32_t kSendFrame = 128 << 10;
constexpr size_t kMaxMessage = 8 << 20;     // largest gRPC message (a batch) we accept
constexpr size_t kKeepAssemblyBytes = 1 << 20;  // a quiet stream's message buffer keeps this much
constexpr uint64_t kAssemblyQuietMs = 1000;     // ... after this long without DATA
constexpr size_t kMaxHello = 4096;          // a SubscribeRequest is a node and a lab name
constexpr size_t kMaxFramesPerBatch = 4096;
constexpr uint32_t kMaxFrameLen = 512 << 10;  // veth allows GSO super-frames up to 512 KiB
constexpr int kNotSentLowat = 128 << 10;    // unsent bytes in the socket before it stops taking more
constexpr size_t kWriteChunk = 256 << 10;
constexpr size_t kFreeChunkBytes = 16 << 20;  // queue memory kept for reuse
const char kSubscribePath[] = "/patchwire.v1.DataplaneService/Subscribe";

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}
uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}
uint64_t NowUsReal() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}
std::string Errno(const std::string& what) { return what + ": " + strerror(errno); }
std::string SslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256];
  if (e == 0) return what;
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return what + ": " + buf;
}
bool Prefix(const std::string& s, const char* p) { return s.compare(0, strlen(p), p) == 0; }
}  // namespace

// A queued gRPC message: raw memory, never zeroed (a 4 MB batch of GSO
// frames used to cost a memset and an mmap/munmap per batch), recycled
// through the engine's free list.
struct Chunk {
  uint8_t* p = nullptr;
  size_t cap = 0;
  size_t len = 0;
  // A batch of frames: whose, and how many. If the stream dies before the
  // batch is wholly written, they are counted as that end's peer_down.
  uint64_t endId = 0;
  uint32_t frames = 0;
};

struct End {
  uint64_t id = 0;
  uint64_t uid = 0;
  int index = 0;
  std::string name;
  EndCounters c;
  std::unique_ptr<FramePort> port;
  std::unique_ptr<CaptureRing> ring;
  uint32_t maxFrame = 0;
  End* pair = nullptr;
  Peer* peer = nullptr;
  Wire* seg = nullptr;  // a segment member: its segment
  bool paused = false;
  std::vector<OutFrame> txq;
  std::vector<CaptureFrame> capq;
  // Impairments by direction (Engine::kImpairIn / kImpairOut); null: none.
  // clearing: reset, and the frames still waiting leave at once.
  std::unique_ptr<Impairer> imp[2];
  bool impClearing[2] = {false, false};
  Carrier car;
};

struct Wire {
  uint64_t uid;
  std::vector<std::unique_ptr<End>> ends;
  std::string peerNode;
  // A segment: ends are its local members; segPeers the daemons holding the
  // others, with what each last said of its members (present: it holds
  // some; plugged: at least one of them has its cable plugged).
  bool segment = false;
  struct SegPeer {
    Peer* p;
    bool farKnown = false, farPresent = false, farPlugged = false;
  };
  std::vector<SegPeer> segPeers;
  bool AnyPlugged() const {
    for (auto& e : ends)
      if (e->car.plugged) return true;
    return false;
  }
};

struct Peer {
  std::string node, address;
  int wires = 0;            // wires that need our subscription to this peer
  Conn* sub = nullptr;      // our subscription (we are the client)
  bool subscribed = false;  // the peer answered our hello
  Conn* out = nullptr;      // the peer's subscription to us (we send on it)
  uint64_t reconnects = 0, framesIn = 0, framesOut = 0, batchesIn = 0, batchesOut = 0;
  double rttMs = 0;
  std::string lastError;
  uint32_t backoffMs = 100;
  uint64_t nextAttemptMs = 0;
  std::vector<End*> paused;
  int holding = 0;  // ends whose carrier is held on while this peer is out of reach
  // Carrier states not sent because the queue to the peer was full (a peer
  // that does not read could otherwise grow it without bound): all are sent
  // again once it drains.
  bool carrierResend = false;
};

struct Conn {
  enum State { kConnecting, kHandshaking, kOpen, kClosed };
  uint64_t id = 0;
  int fd = -1;
  bool client = false;
  State state = kConnecting;
  SSL* ssl = nullptr;
  nghttp2_session* h2 = nullptr;
  Engine* engine = nullptr;
  Peer* peer = nullptr;  // client: whom we subscribe to; server: the subscriber, once its hello came
  std::string remote;      // server: the address and port the connection came from
  std::string remoteHost;  // server: its address alone
  int32_t sid = -1;
  MessageReader reader{kMaxMessage};
  // When DATA last came: the assembly buffer is kept while it flows (freed
  // and grown per message, its fresh pages' faults were 8% of a loaded
  // engine's time) and given back in Tick once the stream has been quiet.
  uint64_t lastDataMs = 0;
  bool gotFirst = false;
  // bytes nghttp2 produced that the socket has not taken yet
  std::vector<uint8_t> wbuf;
  size_t woff = 0;
  bool wantOut = false;
  uint32_t epollEvents = 0;
  // messages for our side of the Subscribe stream
  std::deque<Chunk> q;
  size_t qoff = 0, qbytes = 0;
  bool deferred = false, endStream = false;
  int grpcStatus = 0;
  std::string grpcMessage;
  // headers seen
  std::string method, path, ctype, encoding, httpStatus, rGrpcStatus, rGrpcMessage;
  uint64_t deadlineMs = 0;
  uint64_t pingSentMs = 0;
  bool pingOutstanding = false;
  uint64_t lastPingMs = 0;
};

struct H2 {
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t, const uint8_t*, size_t, uint8_t,
                      void*);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame*, void*);
  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t, void*);
  static int OnStreamClose(nghttp2_session*, int32_t, uint32_t, void*);
  static ssize_t ReadSource(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*, nghttp2_data_source*, void*);
  static int SendData(nghttp2_session*, nghttp2_frame*, const uint8_t*, size_t, nghttp2_data_source*, void*);
  static ssize_t ReadLength(nghttp2_session*, uint8_t, int32_t, int32_t, int32_t, uint32_t, void*);
};

Engine::Engine(const EngineOptions& opts, std::function<void(int)> notify) : opts_(opts), notify_(std::move(notify)) {
  readBuf_.resize(256 << 10);
}

Engine::~Engine() { Stop(); }

namespace {
// The DNS names of a certificate's subjectAltName, for messages and health.
std::vector<std::string> CertNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.size() < 16; i++) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type != GEN_DNS) continue;
    const unsigned char* d = ASN1_STRING_get0_data(g->d.dNSName);
    int l = ASN1_STRING_length(g->d.dNSName);
    if (l > 0 && l <= 253) out.emplace_back(reinterpret_cast<const char*>(d), static_cast<size_t>(l));
  }
  GENERAL_NAMES_free(names);
  return out;
}

std::string JoinNames(const std::vector<std::string>& names) {
  if (names.empty()) return "no DNS name";
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "'" : ", '") + n + "'";
  return s;
}

// Does the certificate name this node, exactly (no wildcards: one
// certificate, one node)?
bool NamesNode(X509* cert, const std::string& node) {
  return X509_check_host(cert, node.data(), node.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1;
}
}  // namespace

// Builds a server and a client context from PEM material. Separate from the
// engine's live contexts so a rotation that fails leaves them as they were.
std::string Engine::BuildTls(const std::string& certPem, const std::string& keyPem, const std::string& caPem,
                             SSL_CTX** server, SSL_CTX** client, CertInfo* info) {
  *server = *client = nullptr;
  BIO* b = BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size()));
  X509* cert = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  if (cert == nullptr) return SslError("TLS certificate");
  info->names = CertNames(cert);
  // Each daemon holds its own identity: a certificate that does not name
  // this node would be refused by every peer, so it is refused here first.
  if (!NamesNode(cert, opts_.node)) {
    X509_free(cert);
    return "TLS certificate names " + JoinNames(info->names) + ", not this node '" + opts_.node +
           "' (each daemon needs a certificate with its node name as a DNS subjectAltName)";
  }
  {
    const ASN1_TIME* na = X509_get0_notAfter(cert);
    struct tm tmv {};
    info->notAfter = ASN1_TIME_to_tm(na, &tmv) == 1 ? static_cast<int64_t>(timegm(&tmv)) : 0;
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
    char* hex = bn ? BN_bn2hex(bn) : nullptr;
    info->serial = hex ? hex : "";
    OPENSSL_free(hex);
    BN_free(bn);
  }
  b = BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  if (key == nullptr) {
    X509_free(cert);
    return SslError("TLS key");
  }
  std::vector<X509*> cas;
  b = BIO_new_mem_buf(caPem.data(), static_cast<int>(caPem.size()));
  while (cas.size() < 64) {
    X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    if (ca == nullptr) break;
    cas.push_back(ca);
  }
  BIO_free(b);
  ERR_clear_error();
  auto cleanup = [&] {
    X509_free(cert);
    EVP_PKEY_free(key);
    for (X509* ca : cas) X509_free(ca);
  };
  if (cas.empty()) {
    cleanup();
    return "TLS CA: no certificate in it";
  }
  std::string err;
  auto load = [&](SSL_CTX* ctx) -> bool {
    if (SSL_CTX_use_certificate(ctx, cert) != 1) {
      err = SslError("TLS certificate");
      return false;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      err = SslError("TLS key does not match the certificate");
      return false;
    }
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    for (X509* ca : cas) X509_STORE_add_cert(store, ca);
    ERR_clear_error();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // Every frame is encrypted once and decrypted once: AES-128-GCM first
    // (OpenSSL's default order puts AES-256 first, 10 rounds against 14);
    // the others stay for a peer that insists.
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    return true;
  };
  SSL_CTX* s = SSL_CTX_new(TLS_server_method());
  SSL_CTX* c = SSL_CTX_new(TLS_client_method());
  bool ok = s && c && load(s) && load(c);
  cleanup();
  if (!ok) {
    if (err.empty()) err = SslError("SSL_CTX_new");
    if (s) SSL_CTX_free(s);
    if (c) SSL_CTX_free(c);
    return err;
  }
  // Mutual TLS: a subscriber without a certificate from our CA is refused.
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_alpn_select_cb(
      s,
      [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
         void*) -> int {
        for (unsigned i = 0; i + 1 <= inlen;) {
          unsigned l = in[i];
          if (i + 1 + l > inlen) break;
          if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
          }
          i += 1 + l;
        }
        return SSL_TLSEXT_ERR_ALERT_FATAL;
      },
      nullptr);
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(c, alpn, sizeof(alpn));
  *server = s;
  *client = c;
  return "";
}

std::string Engine::SetupTls() {
  return BuildTls(opts_.tlsCert, opts_.tlsKey, opts_.tlsCa, &sslServer_, &sslClient_, &cert_);
}

std::string Engine::SetTls(const std::string& certPem, const std::string& keyPem, const std::string& caPem) {
  if (!opts_.tls) return "this daemon runs a plain-text data plane; TLS material cannot be swapped in";
  SSL_CTX *s = nullptr, *c = nullptr;
  CertInfo info;
  std::string err = BuildTls(certPem, keyPem, caPem, &s, &c, &info);
  if (!err.empty()) return err;
  ApiLock lock(this);
  // Live connections keep the context they were made with (each SSL holds a
  // reference): rotation changes only what new connections present and trust.
  SSL_CTX_free(sslServer_);
  SSL_CTX_free(sslClient_);
  sslServer_ = s;
  sslClient_ = c;
  cert_ = info;
  tlsRotations_++;
  return "";
}

std::string Engine::Start(int* boundPort) {
  if (opts_.tls) {
    std::string err = SetupTls();
    if (!err.empty()) return err;
  }
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  wakeFd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd_ < 0 || wakeFd_ < 0) return Errno("epoll/eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTypeWake;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, wakeFd_, &ev);
  // Impaired frames are due at times finer than epoll's milliseconds.
  timerFd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timerFd_ < 0) return Errno("timerfd");
  ev.events = EPOLLIN;
  ev.data.u64 = kTypeTimer;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, timerFd_, &ev);
  impairSeed_ = NowNs();

  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string port = std::to_string(opts_.listenPort);
  int rc = getaddrinfo(opts_.listenHost.empty() ? nullptr : opts_.listenHost.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return "cannot listen on " + opts_.listenHost + ":" + port + ": " + gai_strerror(rc);
  std::string err;
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) {
      listenFd_ = fd;
      break;
    }
    err = Errno("cannot listen on " + opts_.listenHost + ":" + port);
    close(fd);
  }
  freeaddrinfo(res);
  if (listenFd_ < 0) return err.empty() ? "cannot listen on " + opts_.listenHost + ":" + port : err;
  sockaddr_storage ss{};
  socklen_t sl = sizeof(ss);
  getsockname(listenFd_, reinterpret_cast<sockaddr*>(&ss), &sl);
  *boundPort = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  ev.events = EPOLLIN;
  ev.data.u64 = kTypeListen;
  epoll_ctl(epfd_, EPOLL_CTL_ADD, listenFd_, &ev);
  thread_ = std::thread([this] { Run(); });
  return "";
}

void Engine::Stop() {
  if (thread_.joinable()) {
    stop_ = true;
    uint64_t one = 1;
    if (write(wakeFd_, &one, 8) < 0) {
    }
    thread_.join();
  }
  ApiLock lock(this);
  for (auto& [id, c] : conns_) {
    for (Chunk& q : c->q) free(q.p);
    if (c->h2) nghttp2_session_del(c->h2);
    if (c->ssl) SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd);
  }
  conns_.clear();
  for (Chunk& q : freeChunks_) free(q.p);
  freeChunks_.clear();
  freeBytes_ = 0;
  impaired_.clear();
  {
    // The ports' fds, closed all at once (CloseConcurrently says why).
    std::vector<int> fds;
    for (auto& [uid, w] : wires_)
      for (auto& e : w->ends)
        if (e->port) {
          int fd = e->port->ReleaseFd();
          if (fd >= 0) fds.push_back(fd);
        }
    CloseConcurrently(fds);
  }
  wires_.clear();
  endsById_.clear();
  peers_.clear();
  readers_.clear();
  for (int* fd : {&listenFd_, &epfd_, &wakeFd_, &timerFd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (sslServer_) SSL_CTX_free(sslServer_);
  if (sslClient_) SSL_CTX_free(sslClient_);
  sslServer_ = sslClient_ = nullptr;
}

void Engine::Run() {
  // Impairment timers are armed to the nanosecond; the default 50 us of timer
  // slack would add up to that to every delayed frame.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  epoll_event events[64];
  int timeoutMs = 100;
  while (!stop_) {
    int n = epoll_wait(epfd_, events, 64, timeoutMs);
    if (n < 0 && errno != EINTR) break;
    wokeNs_ = NowNs();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int i = 0; i < n; i++) HandleEvent(events[i].data.u64, events[i].events);
      if (!impaired_.empty()) RunImpairments();
      for (Conn* c : dirty_)
        if (c->state != Conn::kClosed) Flush(c);
      dirty_.clear();
      // Sleep until the next timer is due (a reconnect, a deadline, a
      // keepalive): an idle engine wakes a few times a second at most, not
      // every 100 ms whatever the number of wires.
      timeoutMs = static_cast<int>(Tick(NowMs()));
      Reap();
    }
    while (waiters_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
  }
}

void Engine::HandleEvent(uint64_t key, uint32_t events) {
  uint64_t type = key & ~kIdMask, id = key & kIdMask;
  if (type == kTypeWake || type == kTypeTimer) {
    uint64_t v;
    if (read(type == kTypeWake ? wakeFd_ : timerFd_, &v, 8) < 0) {
    }
    if (type == kTypeTimer && timerArmedAtNs_ != 0) {
      // A late wake moves the lead up by an eighth of the lateness; one far
      // off (a stall of the machine) is clamped, so it cannot pull frames forward much.
      uint64_t late = wokeNs_ > timerArmedAtNs_ ? std::min(wokeNs_ - timerArmedAtNs_, kMaxTimerLeadNs) : 0;
      timerLeadNs_ = (timerLeadNs_ * 7 + late) / 8;
      timerArmedAtNs_ = 0;
    }
  } else if (type == kTypeListen) {
    Accept();
  } else if (type == kTypePort) {
    auto it = endsById_.find(id);
    if (it != endsById_.end()) OnPortReadable(it->second);
  } else if (type == kTypeConn) {
    auto it = conns_.find(id);
    if (it != conns_.end() && it->second->state != Conn::kClosed) OnConnEvent(it->second.get(), events);
  }
}

// ---- ports -------------------------------------------------------------

void Engine::OnPortReadable(End* e) {
  for (int round = 0; round < kMaxRoundsPerWake && !e->paused; round++) {
    int n = e->port->Receive();
    if (n <= 0) break;
    const int hdr = e->port->vnet() ? FramePort::kVnetHdrLen : 0;
    capScratch_.resize(n);
    for (int i = 0; i < n; i++) capScratch_[i] = {e->port->frame(i) + hdr, e->port->len(i) - hdr};
    e->ring->Record(capScratch_.data(), n, true, NowUsReal());
    if (CablePulled(e)) {
      // Sent by the pod as the cable came out (or by a pod that sends without carrier).
      e->c.Add(e->c.cablePulled, n);
      continue;
    }
    if (e->imp[kImpairOut]) {
      outScratch_.clear();
      for (int i = 0; i < n; i++) {
        uint8_t* f = e->port->frame(i);
        outScratch_.push_back({hdr ? f : nullptr, f + hdr, e->port->len(i) - hdr});
      }
      e->imp[kImpairOut]->Admit(outScratch_.data(), n, NowNs());
    } else if (e->pair) ForwardLocal(e, e->pair, n);
    else if (e->seg) {
      outScratch_.clear();
      for (int i = 0; i < n; i++) {
        uint8_t* f = e->port->frame(i);
        outScratch_.push_back({hdr ? f : nullptr, f + hdr, e->port->len(i) - hdr});
      }
      SegmentOut(e, outScratch_.data(), n);
    } else ForwardToPeer(e, n);
    if (n < e->port->slots()) break;  // the socket is empty
  }
}

void Engine::ForwardLocal(End* from, End* to, int n) {
  const int hdr = from->port->vnet() ? FramePort::kVnetHdrLen : 0;
  to->txq.clear();
  to->capq.clear();
  for (int i = 0; i < n; i++) {
    uint8_t* f = from->port->frame(i);
    uint32_t len = from->port->len(i) - hdr;
    const uint8_t* vh = hdr ? f : nullptr;
    // Over the MTU and not a GSO super-frame: the far end could never send it.
    if (len > to->maxFrame && (vh == nullptr || vh[1] == 0)) {
      to->c.Add(to->c.tooBig, 1);
      continue;
    }
    to->txq.push_back({vh, f + hdr, len});
    to->capq.push_back({f + hdr, len});
  }
  if (to->imp[kImpairIn]) {
    to->imp[kImpairIn]->Admit(to->txq.data(), static_cast<int>(to->txq.size()), NowNs());
    return;
  }
  to->port->Send(to->txq.data(), static_cast<int>(to->txq.size()));
  to->ring->Record(to->capq.data(), static_cast<int>(to->capq.size()), false, NowUsReal());
}

void Engine::ForwardToPeer(End* e, int n) {
  const int hdr = e->port->vnet() ? FramePort::kVnetHdrLen : 0;
  outScratch_.clear();
  for (int i = 0; i < n; i++) {
    uint8_t* f = e->port->frame(i);
    outScratch_.push_back({hdr ? f : nullptr, f + hdr, e->port->len(i) - hdr});
  }
  SendToPeer(e, e->peer, outScratch_.data(), n);
}

// A segment member's frames: a copy to every other local member and one
// batch to each peer daemon holding members (it copies them to its own).
// No learning, no filtering: every member gets every frame. Each copy is
// counted where it goes, each loss at the end it was lost for (cable_pulled,
// too_big, send_*) or, toward a peer, at the sending end (peer_down,
// queue_full).
void Engine::SegmentOut(End* from, const OutFrame* frames, int n) {
  Wire* w = from->seg;
  for (auto& to : w->ends) {
    if (to.get() == from) continue;
    if (!to->car.plugged) {
      to->c.Add(to->c.cablePulled, n);
      continue;
    }
    ToEnd(to.get(), frames, n);
  }
  for (auto& sp : w->segPeers) SendToPeer(from, sp.p, frames, n);
}

// Frames of end e (read from its port, or released by its impairments) as
// one batch on the stream to peer p (a wire's far daemon, or one of a
// segment's).
void Engine::SendToPeer(End* e, Peer* p, const OutFrame* frames, int n) {
  Conn* c = p->out;
  if (c == nullptr || c->state != Conn::kOpen || !p->subscribed) {
    e->c.Add(e->c.peerDown, n);
    return;
  }
  size_t total = 0;
  for (int i = 0; i < n; i++)
    total += EncodedFrameSize(e->uid, frames[i].vnetHdr && VnetHdrMatters(frames[i].vnetHdr), frames[i].len);
  if (c->qbytes + total + kGrpcPrefix > opts_.maxQueueBytes) {
    e->c.Add(e->c.queueFull, n);
    Pause(e, p);
    return;
  }
  Chunk msg = TakeChunk(kGrpcPrefix + total);
  msg.endId = e->id;
  msg.frames = static_cast<uint32_t>(n);
  WriteGrpcPrefix(msg.p, static_cast<uint32_t>(total));
  uint8_t* pos = msg.p + kGrpcPrefix;
  for (int i = 0; i < n; i++) pos = EncodeFrame(pos, e->uid, frames[i].vnetHdr, frames[i].data, frames[i].len);
  c->qbytes += msg.len;
  c->q.push_back(msg);
  p->framesOut += n;
  p->batchesOut++;
  if (c->deferred) {
    c->deferred = false;
    nghttp2_session_resume_data(c->h2, c->sid);
  }
  dirty_.push_back(c);
  if (c->qbytes > opts_.highWaterBytes) Pause(e, p);
}

// ---- impairments ------------------------------------------------------
// Each daemon applies its own ends' impairments: an end's `out` to what its
// pod sends, before the frames go to the far end (a local pair's other end,
// or the peer's stream), and its `in` to what arrives for it, before the
// frames go into the pod. A frame between two ends so passes the sender's
// out and the receiver's in, each exactly once, on whichever node each is.

// Released frames of an out impairment for a local pair's far end (as ForwardLocal).
void Engine::ToEnd(End* to, const OutFrame* frames, int n) {
  to->txq.clear();
  for (int i = 0; i < n; i++) {
    const OutFrame& f = frames[i];
    if (f.len > to->maxFrame && (f.vnetHdr == nullptr || f.vnetHdr[1] == 0)) {
      to->c.Add(to->c.tooBig, 1);
      continue;
    }
    to->txq.push_back(f);
  }
  if (to->imp[kImpairIn]) to->imp[kImpairIn]->Admit(to->txq.data(), static_cast<int>(to->txq.size()), NowNs());
  else ToPod(to, to->txq.data(), static_cast<int>(to->txq.size()));
  to->txq.clear();
}

void Engine::ToPod(End* e, const OutFrame* frames, int n) {
  if (n <= 0) return;
  if (e->car.how == CarrierHow::kVethHost && !e->car.on) {
    // This end has no carrier, so its host end is down (carrier.cc) and the
    // kernel would refuse the frames (ENETDOWN): a cable out at either end,
    // or the moment between the far end getting carrier back and this one
    // (a plug), a far daemon out of reach. (A host end downed by someone
    // else, carrier on, still counts as send_error.)
    e->c.Add(CablePulled(e) ? e->c.cablePulled : e->c.noCarrier, static_cast<uint64_t>(n));
    return;
  }
  e->port->Send(frames, n);
  capScratch_.resize(n);
  for (int i = 0; i < n; i++) capScratch_[i] = {frames[i].data, frames[i].len};
  e->ring->Record(capScratch_.data(), n, false, NowUsReal());
}

// Sends what is due, then sets the timer for the next frame due.
void Engine::RunImpairments() {
  // Frames due within the timer's lead leave now (see timerLeadNs_).
  const uint64_t realNow = NowNs();
  const uint64_t now = realNow + timerLeadNs_;
  uint64_t next = UINT64_MAX;
  constexpr size_t kBatch = 256;
  constexpr int kRounds = 64;  // bound one pass: what is left goes on the next (the timer fires at once)
  for (End* e : impaired_) {
    for (int dir : {kImpairOut, kImpairIn}) {
      Impairer* im = e->imp[dir].get();
      if (im == nullptr) continue;
      for (int round = 0; round < kRounds; round++) {
        const std::vector<OutFrame>& fr = im->Release(now, kBatch, e->impClearing[dir]);
        if (fr.empty()) break;
        int n = static_cast<int>(fr.size());
        if (CablePulled(e)) {
          // Held by the impairment while the cable came out: they meet the pulled cable now.
          e->c.Add(e->c.cablePulled, n);
          if (fr.size() < kBatch) break;
          continue;
        }
        if (dir == kImpairIn) ToPod(e, fr.data(), n);
        else if (e->pair) ToEnd(e->pair, fr.data(), n);
        else if (e->seg) SegmentOut(e, fr.data(), n);
        else SendToPeer(e, e->peer, fr.data(), n);
        if (fr.size() < kBatch) break;
      }
      if (e->impClearing[dir] && im->idle()) {
        e->imp[dir].reset();
        e->impClearing[dir] = false;
        continue;
      }
      next = std::min(next, e->impClearing[dir] && !im->idle() ? now : im->NextDueNs(now));
    }
  }
  impaired_.erase(std::remove_if(impaired_.begin(), impaired_.end(),
                                 [](End* e) { return !e->imp[kImpairIn] && !e->imp[kImpairOut]; }),
                  impaired_.end());
  if (next != UINT64_MAX) {
    itimerspec its{};
    next = next > timerLeadNs_ + 1 ? next - timerLeadNs_ : 1;
    // Only a timer armed for the future measures a wake's lateness; one
    // already due (a pass cut short, a backlog) fires at once and says nothing.
    timerArmedAtNs_ = next > realNow ? next : 0;
    its.it_value.tv_sec = static_cast<time_t>(next / 1000000000ULL);
    its.it_value.tv_nsec = static_cast<long>(next % 1000000000ULL);
    timerfd_settime(timerFd_, TFD_TIMER_ABSTIME, &its, nullptr);
    timerArmed_ = true;
  } else if (timerArmed_) {
    itimerspec its{};
    timerfd_settime(timerFd_, 0, &its, nullptr);
    timerArmed_ = false;
    timerArmedAtNs_ = 0;
  }
}

std::string Engine::SetImpair(uint64_t uid, int end, int dir, const ImpairConfig* cfg) {
  if (dir != kImpairIn && dir != kImpairOut) return "direction must be in or out";
  if (cfg != nullptr) {
    std::string err = cfg->Check();
    if (!err.empty()) return err;
  }
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end()) return "wire " + std::to_string(uid) + " does not exist in the engine";
  if (end < 0 || static_cast<size_t>(end) >= it->second->ends.size())
    return "wire " + std::to_string(uid) + " has no end " + std::to_string(end) + " here";
  End* e = it->second->ends[static_cast<size_t>(end)].get();
  auto& slot = e->imp[dir];
  if (cfg == nullptr || cfg->Empty()) {
    if (!slot) return "";
    slot->Configure(ImpairConfig{});
    e->impClearing[dir] = true;
  } else if (slot) {
    slot->Configure(*cfg);
    e->impClearing[dir] = false;
  } else {
    slot = std::make_unique<Impairer>(*cfg, &e->c, impairSeed_ + (uid << 2) + static_cast<uint64_t>(end * 2 + dir));
    impairSeed_ += 0x9e3779b9;
  }
  if (std::find(impaired_.begin(), impaired_.end(), e) == impaired_.end()) impaired_.push_back(e);
  uint64_t one = 1;
  if (write(wakeFd_, &one, 8) < 0) {
  }  // the engine's next pass sets the timer for the new parameters
  return "";
}

// Backpressure: stop reading the port until the peer's queue drains; frames
// then wait (or drop, counted as kernel_ring) in the kernel before any work
// is spent on them.
void Engine::Pause(End* e, Peer* p) {
  if (e->paused) return;
  e->paused = true;
  e->c.Add(e->c.pauses, 1);
  epoll_event ev{};
  ev.events = 0;
  ev.data.u64 = kTypePort | e->id;
  epoll_ctl(epfd_, EPOLL_CTL_MOD, e->port->fd(), &ev);
  p->paused.push_back(e);
}

void Engine::Drained(Conn* c) {
  Peer* p = c->peer;
  if (p == nullptr || p->out != c || p->paused.empty() || c->qbytes > opts_.highWaterBytes / 2) return;
  ResumePaused(p);
}

// Reading resumes on the ports paused for p. Level-triggered epoll reports
// at its next wait what queued meanwhile (nothing is read here: this can run
// inside nghttp2's send).
void Engine::ResumePaused(Peer* p) {
  for (End* e : p->paused) {
    e->paused = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTypePort | e->id;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, e->port->fd(), &ev);
  }
  p->paused.clear();
}

// A batch from peer p: each frame out of its wire's endpoint, then into the ring.
void Engine::Deliver(Peer* p, const uint8_t* msg, size_t len) {
  std::string err;
  DecodeLimits limits{kMaxFramesPerBatch, kMaxFrameLen};
  if (!DecodeBatch(msg, len, limits, decoded_, nullptr, &err, &states_)) {
    malformed_++;
    malformedFrames_ += decoded_.size() + 1;
    return;
  }
  if (!states_.empty()) FarStates(p);
  p->batchesIn++;
  p->framesIn += decoded_.size();
  uint64_t lastUid = 0;
  // Where frames of the current uid go: a wire's one end here, or every
  // local member of a segment (at most kMaxSegmentEnds).
  Wire* seg = nullptr;
  End* end = nullptr;
  bool first = true;
  for (const FrameRef& f : decoded_) {
    if (first || f.wire != lastUid) {
      first = false;
      lastUid = f.wire;
      auto it = wires_.find(f.wire);
      end = nullptr;
      seg = nullptr;
      // Frames for a local pair, or a wire whose far end is another node, never come from this peer.
      if (it != wires_.end() && !it->second->segment && it->second->ends.size() == 1 && it->second->peerNode == p->node)
        end = it->second->ends[0].get();
      // A segment's frames only from the daemons we were told hold its members.
      if (it != wires_.end() && it->second->segment &&
          std::any_of(it->second->segPeers.begin(), it->second->segPeers.end(),
                      [p](const Wire::SegPeer& sp) { return sp.p == p; }))
        seg = it->second.get();
    }
    if (end == nullptr && seg == nullptr) {
      unknownWire_++;
      continue;
    }
    const size_t targets = seg ? seg->ends.size() : 1;
    for (size_t t = 0; t < targets; t++) {
      End* to = seg ? seg->ends[t].get() : end;
      if (f.len > to->maxFrame && (f.vnetHdr == nullptr || f.vnetHdr[1] == 0)) {
        to->c.Add(to->c.tooBig, 1);
        continue;
      }
      if (CablePulled(to)) {
        // In flight when the cable came out.
        to->c.Add(to->c.cablePulled, 1);
        continue;
      }
      if (to->txq.empty()) {
        touched_.push_back(to);
        to->capq.clear();
      }
      to->txq.push_back({f.vnetHdr, f.data, f.len});
      to->capq.push_back({f.data, f.len});
    }
  }
  uint64_t ts = NowUsReal();
  for (End* e : touched_) {
    if (e->imp[kImpairIn]) {
      e->imp[kImpairIn]->Admit(e->txq.data(), static_cast<int>(e->txq.size()), NowNs());
      e->txq.clear();
      e->capq.clear();
      continue;
    }
    // Into the pod first, into the ring after: the ring's copy is then not part of the frame's latency.
    e->port->Send(e->txq.data(), static_cast<int>(e->txq.size()));
    e->ring->Record(e->capq.data(), static_cast<int>(e->capq.size()), false, ts);
    e->txq.clear();
    e->capq.clear();
  }
  touched_.clear();
}

// ---- connections -------------------------------------------------------

void Engine::UpdateEpoll(Conn* c) {
  uint32_t want = EPOLLIN | (c->wantOut ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  if (want == c->epollEvents) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = kTypeConn | c->id;
  epoll_ctl(epfd_, c->epollEvents == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev);
  c->epollEvents = want;
}

static void TuneSocket(int fd) {
  int one = 1, lowat = kNotSentLowat;
  // A lone frame must not wait for the peer's delayed ACK, nor behind
  // megabytes of unsent bytes in the socket.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

void Engine::Accept() {
  for (;;) {
    sockaddr_storage from{};
    socklen_t fromLen = sizeof(from);
    int fd = accept4(listenFd_, reinterpret_cast<sockaddr*>(&from), &fromLen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    char host[INET6_ADDRSTRLEN] = "?";
    int fromPort = 0;
    if (from.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&from);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
      fromPort = ntohs(a->sin_port);
    } else if (from.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&from);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
      fromPort = ntohs(a->sin6_port);
    }
    // A peer proves which node it is only with its hello: until then a
    // connection is a stranger's, and strangers get few (the hello deadline
    // closes them; these bounds keep a flood of them from piling up).
    {
      // With TLS, a connection past the handshake holds a certificate of our
      // CA (a daemon's probe before a wire is added, say); only those still
      // handshaking are strangers. In plain text, all without a hello are.
      int pendingFromHost = 0;
      for (auto& [id, other] : conns_)
        if (!other->client && other->peer == nullptr && other->remoteHost == host &&
            (sslServer_ ? other->state == Conn::kHandshaking : other->state != Conn::kClosed))
          pendingFromHost++;
      std::string why;
      if (static_cast<int>(conns_.size()) >= opts_.maxConns)
        why = "already " + std::to_string(conns_.size()) + " connections (the bound)";
      else if (pendingFromHost >= opts_.maxPendingPerHost)
        why = std::to_string(pendingFromHost) + " connections from this address have not proved which node they are";
      if (!why.empty()) {
        refusedConns_++;
        lastConnRefusal_ = std::string(host) + ": " + why;
        close(fd);
        continue;
      }
    }
    accepted_++;
    TuneSocket(fd);
    auto c = std::make_unique<Conn>();
    c->id = nextId_++;
    c->fd = fd;
    c->client = false;
    c->engine = this;
    c->remote = std::string(host) + ":" + std::to_string(fromPort);
    c->remoteHost = host;
    // The hello must come within the connect bound, or the connection goes.
    c->deadlineMs = NowMs() + opts_.connectTimeoutMs;
    Conn* cp = c.get();
    conns_[c->id] = std::move(c);
    if (sslServer_) {
      cp->ssl = SSL_new(sslServer_);
      SSL_set_fd(cp->ssl, fd);
      SSL_set_accept_state(cp->ssl);
      cp->state = Conn::kHandshaking;
      UpdateEpoll(cp);
      OnConnEvent(cp, EPOLLIN);
    } else {
      UpdateEpoll(cp);
      StartH2(cp);
      Flush(cp);
    }
  }
}

void Engine::Connect(Peer* p, uint64_t nowMs) {
  p->nextAttemptMs = 0;
  std::string host = p->address, port;
  size_t colon = host.rfind(':');
  if (colon == std::string::npos) {
    p->lastError = "peer address '" + p->address + "' is not host:port";
    return;
  }
  port = host.substr(colon + 1);
  host = host.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  auto retry = [&](const std::string& why) {
    p->lastError = why;
    p->reconnects++;
    p->nextAttemptMs = nowMs + p->backoffMs;
    // While carrier is held for this peer, try often: a restarted daemon
    // must be found again within the hold time.
    p->backoffMs = std::min<uint32_t>(p->backoffMs * 2, p->holding ? 250 : 2000);
  };
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
    retry("peer address '" + p->address + "' is not a numeric host:port");
    return;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    retry(Errno("socket"));
    return;
  }
  TuneSocket(fd);
  int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    retry(Errno("connect " + p->address));
    close(fd);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->id = nextId_++;
  c->fd = fd;
  c->client = true;
  c->engine = this;
  c->peer = p;
  c->state = Conn::kConnecting;
  c->wantOut = true;
  c->deadlineMs = nowMs + opts_.connectTimeoutMs;
  p->sub = c.get();
  Conn* cp = c.get();
  conns_[c->id] = std::move(c);
  UpdateEpoll(cp);
}

void Engine::OnConnEvent(Conn* c, uint32_t events) {
  if (c->state == Conn::kConnecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t l = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err != 0) {
      FailConn(c, std::string("connect ") + c->peer->address + ": " + strerror(err));
      return;
    }
    if (sslClient_) {
      c->ssl = SSL_new(sslClient_);
      SSL_set_fd(c->ssl, c->fd);
      SSL_set_connect_state(c->ssl);
      // The daemon we reach must hold a certificate naming the node we meant.
      SSL_set_tlsext_host_name(c->ssl, c->peer->node.c_str());
      SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_WILDCARDS);
      SSL_set1_host(c->ssl, c->peer->node.c_str());
      c->state = Conn::kHandshaking;
    } else {
      c->wantOut = false;
      UpdateEpoll(c);
      StartH2(c);
      Flush(c);
      return;
    }
  }
  if (c->state == Conn::kHandshaking) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      const unsigned char* alpn = nullptr;
      unsigned alen = 0;
      SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
      if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
        FailConn(c, "TLS peer did not agree on h2");
        return;
      }
      c->wantOut = false;
      UpdateEpoll(c);
      StartH2(c);
      Flush(c);
      // TLS may already hold application data read with the handshake.
      if (SSL_pending(c->ssl) == 0) return;
      events = EPOLLIN;
    } else {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->wantOut = e == SSL_ERROR_WANT_WRITE;
        UpdateEpoll(c);
        return;
      }
      long vr = SSL_get_verify_result(c->ssl);
      unsigned long first = ERR_peek_error();
      std::string why = SslError("TLS handshake");
      if (ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING || (e == SSL_ERROR_SYSCALL && first == 0))
        why = "TLS handshake: socket hang up (the other side closed the connection before it finished: it may not "
              "trust our certificate)";
      if (vr != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(vr) + ")";
      if (c->client && vr == X509_V_ERR_HOSTNAME_MISMATCH)
        why = "TLS handshake: the daemon at " + c->peer->address + " does not hold a certificate for node '" +
              c->peer->node + "' (" + why + ")";
      if (!c->client) {
        // A refused client never gets a stream, so it would leave no trace in peers.
        tlsRefused_++;
        lastTlsRefusal_ = c->remoteHost + ": " + why;
      }
      FailConn(c, why);
      return;
    }
  }
  if (c->state != Conn::kOpen) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    for (int i = 0; i < 16 && c->state == Conn::kOpen; i++) {
      ssize_t n;
      if (c->ssl) {
        int r = SSL_read(c->ssl, readBuf_.data(), static_cast<int>(readBuf_.size()));
        if (r <= 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
          FailConn(c, e == SSL_ERROR_ZERO_RETURN ? "peer closed the connection" : SslError("TLS read"));
          return;
        }
        n = r;
      } else {
        n = read(c->fd, readBuf_.data(), readBuf_.size());
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          FailConn(c, Errno("read"));
          return;
        }
        if (n == 0) {
          FailConn(c, "peer closed the connection");
          return;
        }
      }
      ssize_t rv = nghttp2_session_mem_recv(c->h2, readBuf_.data(), n);
      if (rv < 0) {
        FailConn(c, std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
        return;
      }
      if (static_cast<size_t>(n) < readBuf_.size() && !(c->ssl && SSL_pending(c->ssl) > 0)) break;
    }
  }
  if (c->state == Conn::kOpen) Flush(c);
}

void Engine::StartH2(Conn* c) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &H2::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, &H2::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &H2::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &H2::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &H2::OnStreamClose);
  nghttp2_session_callbacks_set_send_data_callback(cb, &H2::SendData);
  nghttp2_session_callbacks_set_data_source_read_length_callback(cb, &H2::ReadLength);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  // At most one Subscribe stream per connection; headers bounded.
  nghttp2_option_set_max_send_header_block_length(opt, 16384);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  if (c->client) nghttp2_session_client_new2(&c->h2, cb, c, opt);
  else nghttp2_session_server_new2(&c->h2, cb, c, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindow},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, kMaxFrame},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->client ? 0u : 1u},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
  };
  nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
  nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, kWindow);
  c->state = Conn::kOpen;
  c->lastPingMs = NowMs();
  if (c->client) {
    const std::string scheme = c->ssl ? "https" : "http";
    auto nv = [](const char* n, const std::string& v) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n)),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), strlen(n), v.size(),
                        NGHTTP2_NV_FLAG_NONE};
    };
    std::string post = "POST", path = kSubscribePath, ct = "application/grpc", te = "trailers", ua = "patchwire";
    nghttp2_nv hdrs[] = {nv(":method", post), nv(":scheme", scheme), nv(":path", path), nv(":authority", c->peer->address),
                         nv("content-type", ct), nv("te", te), nv("user-agent", ua)};
    nghttp2_data_provider prd;
    prd.source.ptr = c;
    prd.read_callback = &H2::ReadSource;
    c->sid = nghttp2_submit_request(c->h2, nullptr, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &prd, c);
    std::vector<uint8_t> hello = EncodeSubscribeRequest({opts_.node, opts_.lab});
    QueueMessage(c, hello.data(), hello.size(), false);
  }
}

void Engine::QueueMessage(Conn* c, const uint8_t* msg, size_t len, bool prefixed) {
  Chunk m = TakeChunk(prefixed ? len : len + kGrpcPrefix);
  if (prefixed) {
    memcpy(m.p, msg, len);
  } else {
    WriteGrpcPrefix(m.p, static_cast<uint32_t>(len));
    if (len) memcpy(m.p + kGrpcPrefix, msg, len);
  }
  c->qbytes += m.len;
  c->q.push_back(m);
  if (c->deferred && c->sid > 0) {
    c->deferred = false;
    nghttp2_session_resume_data(c->h2, c->sid);
  }
  dirty_.push_back(c);
}

// How much of the queue may go in the next DATA frame. NO_COPY: the bytes
// are copied once, straight from the queue into the socket buffer, by
// SendData below (not into nghttp2's buffer and then ours).
ssize_t H2::ReadSource(nghttp2_session* s, int32_t sid, uint8_t*, size_t length, uint32_t* flags,
                        nghttp2_data_source* src, void*) {
  Conn* c = static_cast<Conn*>(src->ptr);
  // The socket has not taken what came before: make no new DATA frame now
  // (its payload would only be copied aside); Flush writes and comes back.
  if (c->woff < c->wbuf.size()) return NGHTTP2_ERR_PAUSE;
  if (c->qbytes > 0) {
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return static_cast<ssize_t>(std::min(length, c->qbytes));
  }
  if (c->endStream) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!c->client) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      std::string code = std::to_string(c->grpcStatus), msg = PercentEncode(c->grpcMessage);
      nghttp2_nv tr[] = {
          {(uint8_t*)"grpc-status", (uint8_t*)code.data(), 11, code.size(), NGHTTP2_NV_FLAG_NONE},
          {(uint8_t*)"grpc-message", (uint8_t*)msg.data(), 12, msg.size(), NGHTTP2_NV_FLAG_NONE},
      };
      nghttp2_submit_trailer(s, sid, tr, msg.empty() ? 1 : 2);
    }
    return 0;
  }
  c->deferred = true;
  return NGHTTP2_ERR_DEFERRED;
}

// Writes one DATA frame whose payload ReadSource left in the queue. In plain
// text the frame goes to the socket with one writev straight from the queue
// (after what was already waiting); only what the socket does not take is
// copied, into wbuf. With TLS the bytes are gathered in wbuf for SSL_write.
int H2::SendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd, size_t length,
                 nghttp2_data_source* src, void*) {
  Conn* c = static_cast<Conn*>(src->ptr);
  const size_t pad = frame->data.padlen;
  bool direct = c->ssl == nullptr && !c->wantOut && pad == 0;
  iovec iov[64];
  int n = 0;
  if (direct) {
    if (c->woff < c->wbuf.size()) iov[n++] = {c->wbuf.data() + c->woff, c->wbuf.size() - c->woff};
    iov[n++] = {const_cast<uint8_t*>(framehd), 9};
    size_t left = length, off = c->qoff;
    for (size_t qi = 0; left > 0 && qi < c->q.size() && n < 64; qi++) {
      Chunk& ch = c->q[qi];
      size_t take = std::min(left, ch.len - off);
      iov[n++] = {ch.p + off, take};
      left -= take;
      off = 0;
    }
    direct = left == 0;
  }
  if (direct) {
    ssize_t wrote;
    do {
      wrote = writev(c->fd, iov, n);
    } while (wrote < 0 && errno == EINTR);
    // EAGAIN, or an error the next write reports: keep it all.
    size_t skip = wrote > 0 ? static_cast<size_t>(wrote) : 0;
    std::vector<uint8_t> rest;
    for (int i = 0; i < n; i++) {
      const uint8_t* b = static_cast<const uint8_t*>(iov[i].iov_base);
      size_t l = iov[i].iov_len;
      if (skip >= l) {
        skip -= l;
        continue;
      }
      rest.insert(rest.end(), b + skip, b + l);
      skip = 0;
    }
    c->wbuf.swap(rest);
    c->woff = 0;
  } else {
    c->wbuf.insert(c->wbuf.end(), framehd, framehd + 9);
    if (pad > 0) c->wbuf.push_back(static_cast<uint8_t>(pad - 1));
  }
  // The payload leaves the queue (copied into wbuf on the gathering path).
  size_t consume = length;
  while (consume > 0 && !c->q.empty()) {
    Chunk& front = c->q.front();
    size_t take = std::min(consume, front.len - c->qoff);
    if (!direct) c->wbuf.insert(c->wbuf.end(), front.p + c->qoff, front.p + c->qoff + take);
    consume -= take;
    c->qoff += take;
    if (c->qoff == front.len) {
      c->engine->GiveChunk(front);
      c->q.pop_front();
      c->qoff = 0;
    }
  }
  if (!direct && pad > 1) c->wbuf.insert(c->wbuf.end(), pad - 1, 0);
  c->qbytes -= length;
  c->engine->Drained(c);
  return 0;
}

// DATA frames as large as the peer and the windows allow (nghttp2 stops at
// 16 KiB unless asked): fewer frame headers and fewer callbacks per byte.
ssize_t H2::ReadLength(nghttp2_session*, uint8_t, int32_t, int32_t sessionWindow, int32_t streamWindow,
                       uint32_t remoteMaxFrame, void*) {
  int64_t n = std::min<int64_t>({sessionWindow, streamWindow, remoteMaxFrame, kSendFrame});
  return static_cast<ssize_t>(std::max<int64_t>(n, 1));
}

void Engine::Flush(Conn* c) {
  for (;;) {
    // What the socket did not take last time goes first.
    while (c->woff < c->wbuf.size()) {
      ssize_t w;
      size_t left = c->wbuf.size() - c->woff;
      if (c->ssl) {
        int r = SSL_write(c->ssl, c->wbuf.data() + c->woff, static_cast<int>(left));
        if (r <= 0) {
          int e = SSL_get_error(c->ssl, r);
          if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->wantOut = true;
            UpdateEpoll(c);
            return;
          }
          FailConn(c, SslError("TLS write"));
          return;
        }
        w = r;
      } else {
        w = write(c->fd, c->wbuf.data() + c->woff, left);
        if (w < 0) {
          if (errno == EAGAIN || errno == EINTR) {
            c->wantOut = true;
            UpdateEpoll(c);
            return;
          }
          FailConn(c, Errno("write"));
          return;
        }
      }
      c->woff += w;
    }
    c->wbuf.clear();
    c->woff = 0;
    if (c->wantOut) {
      c->wantOut = false;
      UpdateEpoll(c);
    }
    // Gather what nghttp2 has into one write.
    while (c->wbuf.size() < kWriteChunk) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(c->h2, &data);
      if (n < 0) {
        FailConn(c, std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n)));
        return;
      }
      if (n == 0) break;
      c->wbuf.insert(c->wbuf.end(), data, data + n);
    }
    if (c->wbuf.empty()) break;
  }
  if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) FailConn(c, "session ended");
}

void Engine::FailConn(Conn* c, const std::string& why) {
  if (c->state == Conn::kClosed) return;
  c->state = Conn::kClosed;
  Peer* p = c->peer;
  if (p != nullptr) {
    if (c->client && p->sub == c) {
      p->sub = nullptr;
      p->subscribed = false;
      p->lastError = why;
      p->reconnects++;
      if (p->wires > 0) {
        p->nextAttemptMs = NowMs() + p->backoffMs;
        p->backoffMs = std::min<uint32_t>(p->backoffMs * 2, p->holding ? 250 : 2000);
      }
      FarUnknown(p);
    } else if (!c->client && p->out == c) {
      Unsubscribed(p);
    }
    carrierDirty_ = true;
  }
  closed_.push_back(c->id);
}

// The peer's subscription to us ended: paused senders resume and count peer_down.
void Engine::Unsubscribed(Peer* p) {
  p->out = nullptr;
  carrierDirty_ = true;
  ResumePaused(p);
}

void Engine::Reap() {
  for (uint64_t id : closed_) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn* c = it->second.get();
    for (Chunk& q : c->q) {
      // Batches the stream did not carry whole: lost with it, and counted.
      if (q.frames > 0) {
        auto e = endsById_.find(q.endId);
        if (e != endsById_.end()) e->second->c.Add(e->second->c.peerDown, q.frames);
      }
      GiveChunk(q);
    }
    c->q.clear();
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd, nullptr);
    if (c->h2) nghttp2_session_del(c->h2);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    conns_.erase(it);
  }
  closed_.clear();
}

uint64_t Engine::Tick(uint64_t now) {
  uint64_t next = now + 1000;  // at least once a second, whatever happens
  auto due = [&](uint64_t at) { next = std::min(next, std::max(at, now + 1)); };
  for (auto& [node, p] : peers_) {
    if (p->wires > 0 && p->sub == nullptr && now >= p->nextAttemptMs) Connect(p.get(), now);
    if (p->wires > 0 && p->sub == nullptr) due(p->nextAttemptMs);
  }
  for (auto& [id, cp] : conns_) {
    Conn* c = cp.get();
    if (c->state == Conn::kClosed) continue;
    bool ready = c->client ? (c->peer && c->peer->subscribed && c->peer->sub == c) : (c->peer != nullptr);
    if (!ready && c->deadlineMs && now > c->deadlineMs) {
      FailConn(c, c->client ? "no connection within " + std::to_string(opts_.connectTimeoutMs) + " ms"
                            : "no subscription within " + std::to_string(opts_.connectTimeoutMs) + " ms");
      continue;
    }
    if (!ready && c->deadlineMs) due(c->deadlineMs + 1);
    if (c->reader.bufferedCapacity() > kKeepAssemblyBytes) {
      if (now - c->lastDataMs >= kAssemblyQuietMs) c->reader.ShrinkIfIdle(kKeepAssemblyBytes);
      else due(c->lastDataMs + kAssemblyQuietMs);
    }
    if (c->state == Conn::kOpen) due(c->lastPingMs + opts_.keepaliveMs);
    if (c->state != Conn::kOpen || now - c->lastPingMs < opts_.keepaliveMs) continue;
    if (c->pingOutstanding) {
      FailConn(c, "peer did not answer a keepalive ping within " + std::to_string(opts_.keepaliveMs) + " ms");
      continue;
    }
    c->lastPingMs = now;
    c->pingSentMs = now;
    c->pingOutstanding = true;
    nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, nullptr);
    Flush(c);
    due(now + opts_.keepaliveMs);
  }
  // Carrier states held back while a queue was full go once it has drained
  // (here, not in Drained: that runs inside nghttp2's send).
  for (auto& [node, p] : peers_) {
    if (!p->carrierResend || p->out == nullptr || p->out->state != Conn::kOpen || p->out->qbytes > opts_.highWaterBytes / 2) continue;
    p->carrierResend = false;
    SendAllCarrier(p.get());
    Flush(p->out);
  }
  if (carrierDirty_ || (carrierDueMs_ != 0 && now >= carrierDueMs_)) {
    carrierDirty_ = false;
    carrierDueMs_ = EvalAllCarrier(now);
    for (Conn* c : dirty_)
      if (c->state != Conn::kClosed) Flush(c);
    dirty_.clear();
  }
  if (carrierDueMs_ != 0) due(carrierDueMs_);
  return next - now;
}

// ---- HTTP/2 callbacks ---------------------------------------------------

int H2::OnBeginHeaders(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  Conn* c = static_cast<Conn*>(user);
  if (c->client || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (c->sid > 0) {
    // One Subscribe per connection.
    c->engine->refusedStreams_++;
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  c->sid = f->hd.stream_id;
  return 0;
}

int H2::OnHeader(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t nlen, const uint8_t* value,
                     size_t vlen, uint8_t, void* user) {
  Conn* c = static_cast<Conn*>(user);
  if (f->hd.stream_id != c->sid) return 0;
  std::string n(reinterpret_cast<const char*>(name), nlen), v(reinterpret_cast<const char*>(value), vlen);
  if (c->client) {
    if (n == ":status") c->httpStatus = v;
    else if (n == "content-type") c->ctype = v;
    else if (n == "grpc-status") c->rGrpcStatus = v;
    else if (n == "grpc-message") c->rGrpcMessage = PercentDecode(v);
  } else {
    if (n == ":method") c->method = v;
    else if (n == ":path") c->path = v;
    else if (n == "content-type") c->ctype = v;
    else if (n == "grpc-encoding") c->encoding = v;
  }
  return 0;
}

void Engine::ServerHeadersDone(Conn* c) {
  auto refuse = [&](const std::string& status, int grpc, const std::string& msg) {
    std::string code = std::to_string(grpc), m = PercentEncode(msg), ct = "application/grpc";
    std::vector<nghttp2_nv> h = {{(uint8_t*)":status", (uint8_t*)status.data(), 7, status.size(), NGHTTP2_NV_FLAG_NONE}};
    if (grpc >= 0) {
      h.push_back({(uint8_t*)"content-type", (uint8_t*)ct.data(), 12, ct.size(), NGHTTP2_NV_FLAG_NONE});
      h.push_back({(uint8_t*)"grpc-status", (uint8_t*)code.data(), 11, code.size(), NGHTTP2_NV_FLAG_NONE});
      h.push_back({(uint8_t*)"grpc-message", (uint8_t*)m.data(), 12, m.size(), NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_submit_response(c->h2, c->sid, h.data(), h.size(), nullptr);
    refusedStreams_++;
    dirty_.push_back(c);
  };
  if (c->method != "POST") return refuse("405", -1, "");
  if (!Prefix(c->ctype, "application/grpc")) return refuse("415", -1, "");
  if (c->path != kSubscribePath) return refuse("200", kUnimplemented, "unknown method " + c->path);
  if (!c->encoding.empty() && c->encoding != "identity")
    return refuse("200", kUnimplemented, "grpc-encoding " + c->encoding + " is not supported");
  std::string st = "200", ct = "application/grpc", ae = "identity";
  nghttp2_nv h[] = {{(uint8_t*)":status", (uint8_t*)st.data(), 7, st.size(), NGHTTP2_NV_FLAG_NONE},
                    {(uint8_t*)"content-type", (uint8_t*)ct.data(), 12, ct.size(), NGHTTP2_NV_FLAG_NONE},
                    {(uint8_t*)"grpc-accept-encoding", (uint8_t*)ae.data(), 20, ae.size(), NGHTTP2_NV_FLAG_NONE}};
  nghttp2_data_provider prd;
  prd.source.ptr = c;
  prd.read_callback = &H2::ReadSource;
  nghttp2_submit_response(c->h2, c->sid, h, 3, &prd);
  dirty_.push_back(c);
}

int H2::OnFrameRecv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  Conn* c = static_cast<Conn*>(user);
  Engine* e = c->engine;
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
    c->pingOutstanding = false;
    if (c->peer && c->client) c->peer->rttMs = static_cast<double>(NowMs() - c->pingSentMs);
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != c->sid) return 0;
  if (!c->client) {
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST) e->ServerHeadersDone(c);
    return 0;
  }
  // Client: the response headers, a trailers-only answer, or the trailers.
  if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && c->httpStatus != "200") {
    e->FailConn(c, "peer answered HTTP " + c->httpStatus);
    return 0;
  }
  if (!c->rGrpcStatus.empty() && c->rGrpcStatus != "0") {
    e->FailConn(c, "peer refused the stream: " + c->rGrpcMessage + " (gRPC status " + c->rGrpcStatus + ")");
    return 0;
  }
  if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && !Prefix(c->ctype, "application/grpc")) {
    e->FailConn(c, "peer answered content-type " + c->ctype);
    return 0;
  }
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) e->FailConn(c, "peer ended the stream");
  return 0;
}

void Engine::OnMessage(Conn* c, const uint8_t* msg, size_t len) {
  if (c->client) {
    Peer* p = c->peer;
    if (!c->gotFirst) {
      // The server's first message is its hello: from here on it knows where to send our frames.
      c->gotFirst = true;
      p->subscribed = true;
      p->backoffMs = 100;
      p->lastError.clear();
      carrierDirty_ = true;
      return;
    }
    Deliver(p, msg, len);
    return;
  }
  if (c->gotFirst) return;  // later messages from a subscriber are keepalives
  c->gotFirst = true;
  SubscribeRequest req;
  std::string err;
  if (!DecodeSubscribeRequest(msg, len, kMaxHello, &req, &err)) {
    c->grpcStatus = kInvalidArgument;
    c->grpcMessage = "subscribe hello: " + err;
  } else if (req.lab != opts_.lab) {
    c->grpcStatus = kPermissionDenied;
    c->grpcMessage = "daemon " + opts_.node + " serves lab '" + opts_.lab + "', not '" + req.lab + "'";
  } else if (req.node.empty()) {
    c->grpcStatus = kInvalidArgument;
    c->grpcMessage = "subscribe hello without node name";
  } else if (c->ssl != nullptr) {
    // The hello says which node subscribes; its certificate must say the
    // same, or a holder of any node's identity could take another's stream.
    X509* cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == nullptr || !NamesNode(cert, req.node)) {
      c->grpcStatus = kPermissionDenied;
      c->grpcMessage = "the subscriber's certificate names " + (cert ? JoinNames(CertNames(cert)) : "nothing") +
                       ", not node '" + req.node + "'";
      tlsRefused_++;
      identityRefused_++;
      lastTlsRefusal_ = c->remoteHost + ": " + c->grpcMessage;
    }
  }
  if (c->grpcStatus != 0) {
    refusedStreams_++;
    c->endStream = true;
    if (c->deferred) {
      c->deferred = false;
      nghttp2_session_resume_data(c->h2, c->sid);
    }
    dirty_.push_back(c);
    return;
  }
  Peer* p = PeerFor(req.node);
  if (p->out != nullptr && p->out != c) {
    // A newer subscription replaces the old one (the peer restarted or reconnected).
    Conn* old = p->out;
    old->endStream = true;
    if (old->deferred) {
      old->deferred = false;
      nghttp2_session_resume_data(old->h2, old->sid);
    }
    dirty_.push_back(old);
    old->peer = nullptr;
  }
  p->out = c;
  c->peer = p;
  c->deadlineMs = 0;
  std::vector<uint8_t> hello = EncodeHelloResponse(opts_.node);
  QueueMessage(c, hello.data(), hello.size(), false);
  // Then how each of our ends of wires with this peer is: its ends follow them.
  SendAllCarrier(p);
  carrierDirty_ = true;
}

int H2::OnDataChunk(nghttp2_session*, uint8_t, int32_t sid, const uint8_t* data, size_t len, void* user) {
  Conn* c = static_cast<Conn*>(user);
  if (sid != c->sid || c->state == Conn::kClosed) return 0;
  bool ok = c->reader.Push(
      data, len,
      [](void* ctx, const uint8_t* m, size_t l) -> bool {
        Conn* cc = static_cast<Conn*>(ctx);
        cc->engine->OnMessage(cc, m, l);
        return cc->state != Conn::kClosed;
      },
      c);
  if (!ok && c->state != Conn::kClosed) {
    if (c->client) {
      c->engine->FailConn(c, "bad message from peer: " + c->reader.error());
    } else {
      c->grpcStatus = c->reader.status();
      c->grpcMessage = c->reader.error();
      c->endStream = true;
      if (c->deferred) {
        c->deferred = false;
        nghttp2_session_resume_data(c->h2, c->sid);
      }
      c->engine->dirty_.push_back(c);
    }
  }
  c->lastDataMs = c->engine->wokeNs_ / 1000000;
  return 0;
}

int H2::OnStreamClose(nghttp2_session*, int32_t sid, uint32_t code, void* user) {
  Conn* c = static_cast<Conn*>(user);
  if (sid != c->sid) return 0;
  if (c->client) {
    c->engine->FailConn(c, "stream closed (HTTP/2 error " + std::to_string(code) + ")");
    return 0;
  }
  // Server: the one stream of this connection is over. Stop sending on it and
  // end the session once what is queued (a refusal, trailers) has been written.
  Peer* p = c->peer;
  if (p != nullptr && p->out == c) c->engine->Unsubscribed(p);
  c->peer = nullptr;
  nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
  c->engine->dirty_.push_back(c);
  return 0;
}

// ---- queue memory -------------------------------------------------------

Chunk Engine::TakeChunk(size_t len) {
  // The smallest free chunk that fits, so small messages do not pin big ones.
  size_t best = freeChunks_.size();
  for (size_t i = 0; i < freeChunks_.size(); i++)
    if (freeChunks_[i].cap >= len && (best == freeChunks_.size() || freeChunks_[i].cap < freeChunks_[best].cap)) best = i;
  Chunk c;
  if (best < freeChunks_.size()) {
    c = freeChunks_[best];
    freeChunks_[best] = freeChunks_.back();
    freeChunks_.pop_back();
    freeBytes_ -= c.cap;
  } else {
    c.cap = std::max<size_t>(len, 4096);
    c.p = static_cast<uint8_t*>(malloc(c.cap));
    if (c.p == nullptr) throw std::bad_alloc();
  }
  c.len = len;
  c.endId = 0;
  c.frames = 0;
  return c;
}

void Engine::GiveChunk(Chunk c) {
  // Keep a bounded amount for reuse; a spike's memory goes back.
  if (freeBytes_ + c.cap > kFreeChunkBytes || freeChunks_.size() >= 64) {
    free(c.p);
    return;
  }
  freeBytes_ += c.cap;
  freeChunks_.push_back(c);
}

// ---- configuration from the event loop ----------------------------------

Peer* Engine::PeerFor(const std::string& node) {
  auto& p = peers_[node];
  if (!p) {
    p = std::make_unique<Peer>();
    p->node = node;
  }
  return p.get();
}

std::string Engine::AddWire(const WireConfig& cfg) {
  if (cfg.segment) {
    if (cfg.ends.empty() || cfg.ends.size() > kMaxSegmentEnds)
      return "a segment has 1 to " + std::to_string(kMaxSegmentEnds) + " members on one daemon";
    if (cfg.segmentPeers.size() > kMaxSegmentPeers)
      return "a segment spans at most " + std::to_string(kMaxSegmentPeers) + " other daemons";
    for (size_t i = 0; i < cfg.segmentPeers.size(); i++) {
      if (cfg.segmentPeers[i].node.empty()) return "a segment peer has no node name";
      if (cfg.segmentPeers[i].node == opts_.node) return "a segment peer is this daemon's own node";
      for (size_t j = 0; j < i; j++)
        if (cfg.segmentPeers[j].node == cfg.segmentPeers[i].node) return "segment peer " + cfg.segmentPeers[i].node + " is named twice";
    }
  } else {
    if (cfg.ends.empty() || cfg.ends.size() > 2) return "a wire has one or two local ends";
    if (cfg.ends.size() == 1 && cfg.peerNode.empty()) return "a wire with one local end needs a peer";
  }
  auto w = std::make_unique<Wire>();
  w->uid = cfg.uid;
  w->segment = cfg.segment;
  w->peerNode = !cfg.segment && cfg.ends.size() == 1 ? cfg.peerNode : "";
  try {
    for (size_t i = 0; i < cfg.ends.size(); i++) {
      const EndConfig& ec = cfg.ends[i];
      auto e = std::make_unique<End>();
      e->uid = cfg.uid;
      e->index = static_cast<int>(i);
      e->name = ec.name;
      e->maxFrame = ec.maxFrame;
      e->car.how = ec.carrier;
      e->car.ifindex = ec.carrierIfindex;
      e->car.plugged = ec.plugged;
      e->car.holdMs = cfg.carrierHoldMs ? cfg.carrierHoldMs : opts_.carrierHoldMs;
      e->ring = std::make_unique<CaptureRing>(cfg.ringBytes);
      w->ends.push_back(std::move(e));
    }
  } catch (const std::bad_alloc&) {
    return "capture ring of " + std::to_string(cfg.ringBytes) + " bytes per end: not enough memory";
  }
  ApiLock lock(this);
  if (wires_.count(cfg.uid)) return "wire " + std::to_string(cfg.uid) + " already exists in the engine";
  for (size_t i = 0; i < cfg.ends.size(); i++) {
    End* e = w->ends[i].get();
    const EndConfig& ec = cfg.ends[i];
    e->id = nextId_++;
    e->port = std::make_unique<FramePort>(ec.fd, ec.tap, ec.vnet, ec.slotSize, ec.slots, &e->c);
    if (!ec.tap && opts_.portRcvBufBytes > 0) {
      int b = opts_.portRcvBufBytes;
      if (setsockopt(ec.fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof(b)) != 0)
        setsockopt(ec.fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof(b));
    }
    e->ring->onReadableCtx = this;
    if (ec.tap) e->car.fd = ec.fd;
    e->car.on = e->car.ReadApplied();
  }
  if (w->segment) {
    for (auto& e : w->ends) e->seg = w.get();
    for (auto& sc : cfg.segmentPeers) {
      Peer* p = PeerFor(sc.node);
      p->address = sc.address;
      p->wires++;
      w->segPeers.push_back({p});
    }
  } else if (w->ends.size() == 2) {
    w->ends[0]->pair = w->ends[1].get();
    w->ends[1]->pair = w->ends[0].get();
  } else {
    Peer* p = PeerFor(cfg.peerNode);
    p->address = cfg.peerAddress;
    p->wires++;
    w->ends[0]->peer = p;
  }
  for (auto& e : w->ends) {
    endsById_[e->id] = e.get();
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTypePort | e->id;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, e->port->fd(), &ev);
  }
  Wire* wp = w.get();
  wires_[cfg.uid] = std::move(w);
  uint64_t nowMs = NowMs(), nowUs = NowUsReal();
  for (size_t i = 0; i < wp->ends.size(); i++) {
    End* e = wp->ends[i].get();
    if (e->peer && cfg.ends[i].restored) {
      // A restarted daemon: carrier stays as it is until the far end says
      // otherwise or the hold time runs out.
      e->car.uncertainSinceMs = nowMs;
    } else if (e->peer) {
      e->car.Set(false, "new wire: waiting for the far end", nowUs);
    }
  }
  if (wp->segment)
    for (auto& e : wp->ends)
      if (!cfg.ends[static_cast<size_t>(e->index)].restored) e->car.Set(false, "new segment member: waiting for the others", nowUs);
  for (auto& e : wp->ends) EvalCarrier(e.get(), nowMs);
  if (wp->segment) SendSegmentCarrier(wp, true);
  else if (wp->ends.size() == 1) SendCarrier(wp->ends[0]->peer, {{cfg.uid, true, wp->ends[0]->car.plugged}});
  carrierDirty_ = true;
  uint64_t one = 1;
  if (write(wakeFd_, &one, 8) < 0) {
  }  // a new peer is connected to on the engine's next pass
  return "";
}

bool Engine::RemoveWire(uint64_t uid) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end()) return false;
  Wire* w = it->second.get();
  // The far end loses carrier: this end is gone.
  if (w->segment) {
    SendSegmentCarrier(w, false);
    for (auto& sp : w->segPeers) {
      for (auto& e : w->ends) sp.p->paused.erase(std::remove(sp.p->paused.begin(), sp.p->paused.end(), e.get()), sp.p->paused.end());
      if (--sp.p->wires == 0 && sp.p->sub) FailConn(sp.p->sub, "no wire needs this peer any more");
    }
  } else if (w->ends.size() == 1) SendCarrier(w->ends[0]->peer, {{uid, false, false}});
  for (auto& e : w->ends) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, e->port->fd(), nullptr);
    endsById_.erase(e->id);
    impaired_.erase(std::remove(impaired_.begin(), impaired_.end(), e.get()), impaired_.end());
    for (auto r = readers_.begin(); r != readers_.end();) {
      if (r->second.first == e->ring.get()) r = readers_.erase(r);
      else ++r;
    }
    if (e->peer) {
      Peer* p = e->peer;
      p->paused.erase(std::remove(p->paused.begin(), p->paused.end(), e.get()), p->paused.end());
      if (--p->wires == 0 && p->sub) FailConn(p->sub, "no wire needs this peer any more");
    }
  }
  wires_.erase(it);
  Reap();
  uint64_t one = 1;
  if (write(wakeFd_, &one, 8) < 0) {
  }  // what was queued for the peer goes out on the engine's next pass
  return true;
}

bool Engine::Counters(uint64_t uid, std::vector<std::map<std::string, uint64_t>>* out) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end()) return false;
  for (auto& e : it->second->ends) {
    e->port->ReadKernelStats();
    auto& c = e->c;
    auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    out->push_back({{"rxFrames", ld(c.rxFrames)},         {"rxBytes", ld(c.rxBytes)},
                    {"txFrames", ld(c.txFrames)},         {"txBytes", ld(c.txBytes)},
                    {"queueFull", ld(c.queueFull)},       {"peerDown", ld(c.peerDown)},
                    {"tooBig", ld(c.tooBig)},             {"kernelRing", ld(c.kernelRing)},
                    {"truncated", ld(c.truncated)},       {"sendBusy", ld(c.sendBusy)},
                    {"sendError", ld(c.sendError)},       {"vlanRestored", ld(c.vlanRestored)},
                    {"pauses", ld(c.pauses)},             {"cablePulled", ld(c.cablePulled)},
                    {"noCarrier", ld(c.noCarrier)},
                    {"captureDrops", e->ring->readerDrops.load()},
                    {"captureEvicted", e->ring->evicted.load()},
                    {"impairedLoss", ld(c.impairedLoss)}, {"rateLimited", ld(c.rateLimited)},
                    {"impairOverflow", ld(c.impairOverflow)}, {"impairDuplicated", ld(c.impairDuplicated)},
                    {"impairCorrupted", ld(c.impairCorrupted)}, {"impairReordered", ld(c.impairReordered)},
                    {"impairHeldBytes", (e->imp[0] ? e->imp[0]->heldBytes() : 0) + (e->imp[1] ? e->imp[1]->heldBytes() : 0)}});
  }
  return true;
}

bool Engine::PeerUp(const std::string& node) {
  ApiLock lock(this);
  auto it = peers_.find(node);
  return it != peers_.end() && it->second->subscribed && it->second->out != nullptr;
}

std::vector<PeerInfo> Engine::Peers() {
  ApiLock lock(this);
  std::vector<PeerInfo> out;
  for (auto& [node, p] : peers_) {
    if (p->wires == 0 && p->out == nullptr && p->sub == nullptr) continue;
    out.push_back({node, p->address, p->subscribed, p->out != nullptr, p->reconnects, p->framesIn, p->framesOut,
                   p->batchesIn, p->batchesOut, p->out ? p->out->qbytes : 0, p->rttMs, p->lastError});
  }
  return out;
}

EngineHealth Engine::Health() {
  ApiLock lock(this);
  return {unknownWire_.load(), malformed_.load(), malformedFrames_.load(), refusedStreams_.load(), accepted_.load(),
          tlsRefused_.load(), identityRefused_.load(), refusedConns_.load(), tlsRotations_.load(), lastTlsRefusal_,
          lastConnRefusal_, cert_};
}

// ---- carrier ----------------------------------------------------------------

bool Engine::CablePulled(const End* e) const {
  if (!e->car.plugged) return true;
  if (e->seg) return false;  // a segment's other members are checked one by one
  if (e->pair) return !e->pair->car.plugged;
  return e->car.farKnown && e->car.farPresent && !e->car.farPlugged;
}

// One end's carrier from what is known now (see carrier.h).
void Engine::EvalCarrier(End* e, uint64_t now) {
  const Carrier& c = e->car;
  const bool on = c.on;
  const uint64_t events = c.eventsTotal;
  const std::string reason = c.reason;
  EvalCarrierOf(e, now);
  if (c.on != on || c.eventsTotal != events || c.reason != reason) carrierRevision_.fetch_add(1, std::memory_order_relaxed);
}

void Engine::EvalCarrierOf(End* e, uint64_t now) {
  Carrier& c = e->car;
  const uint64_t us = NowUsReal();
  if (e->pair) {
    if (!c.plugged) c.Set(false, "cable pulled at this end", us);
    else if (!e->pair->car.plugged) c.Set(false, "cable pulled at the far end (" + e->pair->name + ")", us);
    else c.Set(true, "wire whole", us);
    return;
  }
  if (e->seg) {
    // A member has carrier while its cable is plugged and at least one other
    // member, here or on a reachable peer that said so, has its cable
    // plugged. No hold time: a peer out of reach counts as no members.
    c.uncertainSinceMs = 0;
    if (!c.plugged) {
      c.Set(false, "cable pulled at this end", us);
      return;
    }
    for (auto& o : e->seg->ends)
      if (o.get() != e && o->car.plugged) {
        c.Set(true, "segment member " + o->name + " present", us);
        return;
      }
    for (auto& sp : e->seg->segPeers) {
      Peer* q = sp.p;
      const bool reach = q->subscribed && q->sub != nullptr && q->out != nullptr && q->out->state == Conn::kOpen;
      if (reach && sp.farKnown && sp.farPresent && sp.farPlugged) {
        c.Set(true, "segment members present on " + q->node, us);
        return;
      }
    }
    c.Set(false, "no other segment member present with its cable plugged", us);
    return;
  }
  Peer* p = e->peer;
  const bool reachable = p->subscribed && p->sub != nullptr && p->out != nullptr && p->out->state == Conn::kOpen;
  if (reachable && c.farKnown) {
    c.uncertainSinceMs = 0;
    if (!c.plugged) c.Set(false, "cable pulled at this end", us);
    else if (!c.farPresent) c.Set(false, "far end gone (its wire was removed on " + p->node + ")", us);
    else if (!c.farPlugged) c.Set(false, "cable pulled at the far end (on " + p->node + ")", us);
    else c.Set(true, "far end ready (on " + p->node + ")", us);
    return;
  }
  if (c.uncertainSinceMs == 0) c.uncertainSinceMs = now;
  if (!c.plugged) {
    c.Set(false, "cable pulled at this end", us);
    return;
  }
  // Off stays off until the far end is known ready; on is held for the hold time.
  if (!c.on) {
    if (c.reason.empty()) c.reason = "waiting for the far end";
    return;
  }
  if (now - c.uncertainSinceMs < c.holdMs) {
    c.Set(true, (reachable ? "far end on " + p->node + " has not reported yet" : "far daemon " + p->node + " out of reach") +
                    ": carrier held for up to " + std::to_string(c.holdMs) + " ms",
          us);
    return;
  }
  const std::string hold = std::to_string(c.holdMs) + " ms (the hold time)";
  if (!reachable)
    c.Set(false, "far daemon " + p->node + " unreachable for more than " + hold +
                     (p->lastError.empty() ? "" : ": " + p->lastError), us);
  else
    c.Set(false, "far end on " + p->node + " did not report within " + hold, us);
}

uint64_t Engine::EvalAllCarrier(uint64_t now) {
  uint64_t due = 0;
  for (auto& [node, p] : peers_) p->holding = 0;
  for (auto& [uid, w] : wires_) {
    for (auto& e : w->ends) {
      EvalCarrier(e.get(), now);
      const Carrier& c = e->car;
      if (e->peer && c.on && c.uncertainSinceMs != 0) {
        e->peer->holding++;
        uint64_t at = c.uncertainSinceMs + c.holdMs;
        if (due == 0 || at < due) due = at;
      }
    }
  }
  return due;
}

void Engine::SendCarrier(Peer* p, const std::vector<CarrierStateRef>& states) {
  if (p == nullptr || p->out == nullptr || p->out->state != Conn::kOpen || states.empty()) return;
  if (p->out->qbytes > opts_.highWaterBytes) {
    p->carrierResend = true;
    return;
  }
  std::vector<uint8_t> msg = EncodeCarrierStates(states);
  QueueMessage(p->out, msg.data(), msg.size(), false);
}

void Engine::SendAllCarrier(Peer* p) {
  std::vector<CarrierStateRef> states;
  for (auto& [uid, w] : wires_) {
    if (w->ends.size() != 1 || w->peerNode != p->node) continue;
    states.push_back({uid, true, w->ends[0]->car.plugged});
    if (states.size() == kMaxFramesPerBatch) {  // the far decoder's bound per message
      SendCarrier(p, states);
      states.clear();
    }
  }
  for (auto& [uid, w] : wires_) {
    if (!w->segment) continue;
    if (std::none_of(w->segPeers.begin(), w->segPeers.end(), [p](const Wire::SegPeer& sp) { return sp.p == p; })) continue;
    states.push_back({uid, true, w->AnyPlugged()});
    if (states.size() == kMaxFramesPerBatch) {
      SendCarrier(p, states);
      states.clear();
    }
  }
  SendCarrier(p, states);
}

// What peer p said of its ends (states_): our ends of those wires follow.
void Engine::FarStates(Peer* p) {
  std::vector<CarrierStateRef> reply;
  for (const CarrierStateRef& s : states_) {
    auto it = wires_.find(s.wire);
    if (it != wires_.end() && it->second->segment) {
      // A segment: what p says of its own members (only if it is one of the segment's daemons).
      Wire* w = it->second.get();
      for (auto& sp : w->segPeers) {
        if (sp.p != p) continue;
        const bool news = s.present && !(sp.farKnown && sp.farPresent);
        sp.farKnown = true;
        sp.farPresent = s.present;
        sp.farPlugged = s.plugged;
        if (news && std::none_of(reply.begin(), reply.end(), [&](const CarrierStateRef& r) { return r.wire == s.wire; }))
          reply.push_back({s.wire, true, w->AnyPlugged()});
      }
      continue;
    }
    // Only the daemon that holds a wire's far end speaks for it.
    if (it == wires_.end() || it->second->ends.size() != 1 || it->second->peerNode != p->node) continue;
    Carrier& c = it->second->ends[0]->car;
    // News of an end we did not know (its wire was added after ours, or it
    // came back): it may not know ours either, so tell it.
    const bool news = s.present && !(c.farKnown && c.farPresent);
    c.farKnown = true;
    c.farPresent = s.present;
    c.farPlugged = s.plugged;
    // One answer per wire, however often a batch repeats it.
    if (news && std::none_of(reply.begin(), reply.end(), [&](const CarrierStateRef& r) { return r.wire == s.wire; }))
      reply.push_back({s.wire, true, c.plugged});
  }
  SendCarrier(p, reply);
  carrierDirty_ = true;
  carrierRevision_.fetch_add(1, std::memory_order_relaxed);
}

// The stream that tells us how p's ends are ended: what it said may be stale.
void Engine::FarUnknown(Peer* p) {
  for (auto& [uid, w] : wires_) {
    if (!w->segment && w->ends.size() == 1 && w->ends[0]->peer == p) w->ends[0]->car.farKnown = false;
    for (auto& sp : w->segPeers)
      if (sp.p == p) sp.farKnown = false;
  }
  carrierDirty_ = true;
  carrierRevision_.fetch_add(1, std::memory_order_relaxed);
}

// Tells every daemon of segment w how its members here are.
void Engine::SendSegmentCarrier(Wire* w, bool present) {
  for (auto& sp : w->segPeers) SendCarrier(sp.p, {{w->uid, present, present && w->AnyPlugged()}});
}

std::string Engine::SetCable(uint64_t uid, int end, bool plugged) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end()) return "wire " + std::to_string(uid) + " does not exist in the engine";
  Wire* w = it->second.get();
  if (end < 0 || end >= static_cast<int>(w->ends.size())) return "wire " + std::to_string(uid) + " has no end " + std::to_string(end);
  End* e = w->ends[end].get();
  if (e->car.plugged == plugged) return "";
  e->car.plugged = plugged;
  uint64_t now = NowMs();
  // Both ends at once: this one here, the far one through its daemon.
  EvalCarrier(e, now);
  if (e->seg) {
    // Every member here, and the members elsewhere through their daemons.
    for (auto& o : w->ends) EvalCarrier(o.get(), now);
    SendSegmentCarrier(w, true);
  } else if (e->pair) EvalCarrier(e->pair, now);
  else SendCarrier(e->peer, {{uid, true, plugged}});
  carrierDirty_ = true;
  uint64_t one = 1;
  if (write(wakeFd_, &one, 8) < 0) {
  }
  return "";
}

bool Engine::CarrierOf(uint64_t uid, std::vector<CarrierInfo>* out) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end()) return false;
  for (auto& e : it->second->ends) {
    const Carrier& c = e->car;
    CarrierInfo ci{c.on, c.plugged, c.farKnown, c.farPresent, c.farPlugged, c.holdMs, c.reason, c.lastError,
                   c.eventsTotal, {c.events.begin(), c.events.end()}};
    if (e->pair) {
      ci.farKnown = true;
      ci.farPresent = true;
      ci.farPlugged = e->pair->car.plugged;
    }
    if (e->seg) {
      // "far" of a member: the other members taken together.
      ci.farKnown = e->seg->ends.size() > 1;
      ci.farPresent = ci.farKnown;
      ci.farPlugged = false;
      for (auto& o : e->seg->ends)
        if (o.get() != e.get() && o->car.plugged) ci.farPlugged = true;
      for (auto& sp : e->seg->segPeers) {
        ci.farKnown = ci.farKnown || sp.farKnown;
        ci.farPresent = ci.farPresent || (sp.farKnown && sp.farPresent);
        ci.farPlugged = ci.farPlugged || (sp.farKnown && sp.farPresent && sp.farPlugged);
      }
    }
    out->push_back(std::move(ci));
  }
  return true;
}

bool Engine::RingSnapshot(uint64_t uid, int end, std::vector<uint8_t>* out) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end() || end < 0 || end >= static_cast<int>(it->second->ends.size())) return false;
  *out = it->second->ends[end]->ring->Snapshot();
  return true;
}

int Engine::RingReaderAdd(uint64_t uid, int end, size_t maxBytes) {
  ApiLock lock(this);
  auto it = wires_.find(uid);
  if (it == wires_.end() || end < 0 || end >= static_cast<int>(it->second->ends.size())) return 0;
  CaptureRing* ring = it->second->ends[end]->ring.get();
  if (ring->onReadable == nullptr) {
    ring->onReadable = [](void* ctx, CaptureRing* r, int ringReader) {
      Engine* e = static_cast<Engine*>(ctx);
      // Engine lock is held (this runs inside a pass): map back to the global id.
      for (auto& [gid, v] : e->readers_)
        if (v.first == r && v.second == ringReader) e->notify_(gid);
    };
  }
  int id = nextReader_++;
  readers_[id] = {ring, ring->AddReader(maxBytes)};
  return id;
}

bool Engine::RingReaderDrain(int reader, std::vector<uint8_t>* out, uint64_t* dropped) {
  ApiLock lock(this);
  auto it = readers_.find(reader);
  if (it == readers_.end()) return false;
  return it->second.first->Drain(it->second.second, out, dropped);
}

void Engine::RingReaderRemove(int reader) {
  ApiLock lock(this);
  auto it = readers_.find(reader);
  if (it == readers_.end()) return;
  it->second.first->RemoveReader(it->second.second);
  readers_.erase(it);
}

}  // namespace pw::engine
