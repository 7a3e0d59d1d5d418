// A stress harness for the frame engine outside Node.js, for the sanitizers
// (scripts/engine-stress.sh builds it with AddressSanitizer + LeakSanitizer +
// UBSan, or with ThreadSanitizer). Two engines in one process, joined over
// loopback; wire ends are datagram socketpairs (the engine reads them as it
// reads a tap: one frame per read, one per write). It checks that frames
// cross byte for byte, then:
//   - adds and removes wires over and over while frames flow,
//   - restarts one engine over and over (the other reconnects each time),
//   - reads counters, peers and ring snapshots from another thread throughout,
// and exits non-zero if a frame is wrong or stops crossing.
//
// usage: engine_stress [wire-cycles] [reconnects]
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../src/engine/engine.h"

using pw::engine::Engine;
using pw::engine::EngineOptions;
using pw::engine::WireConfig;

namespace {

int Fail(const std::string& why) {
  fprintf(stderr, "engine_stress: %s\n", why.c_str());
  return 1;
}

std::unique_ptr<Engine> Make(const std::string& node, int port, int* bound) {
  EngineOptions o;
  o.node = node;
  o.lab = "stress";
  o.listenHost = "127.0.0.1";
  o.listenPort = port;
  o.keepaliveMs = 1000;
  auto e = std::make_unique<Engine>(o, [](int) {});
  std::string err = e->Start(bound);
  if (!err.empty()) {
    fprintf(stderr, "engine_stress: start %s: %s\n", node.c_str(), err.c_str());
    return nullptr;
  }
  return e;
}

struct Pair {
  int outside;  // the "pod" side: frames are written and read here
  int inside;   // handed to the engine
};

Pair MakePair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return {-1, -1};
  return {sv[0], sv[1]};
}

WireConfig Config(uint64_t uid, int fd, const std::string& peer, int peerPort) {
  WireConfig c;
  c.uid = uid;
  c.ringBytes = 64 << 10;
  c.peerNode = peer;
  c.peerAddress = "127.0.0.1:" + std::to_string(peerPort);
  c.ends.push_back({"p/eth" + std::to_string(uid), fd, true, false, 2048, 16, 1522});
  return c;
}

// A segment: these fds as its members here, the other daemon as its peer.
WireConfig SegConfig(uint64_t uid, std::vector<int> fds, const std::string& peer, int peerPort) {
  WireConfig c;
  c.uid = uid;
  c.ringBytes = 64 << 10;
  c.segment = true;
  c.segmentPeers.push_back({peer, "127.0.0.1:" + std::to_string(peerPort)});
  for (size_t i = 0; i < fds.size(); i++)
    c.ends.push_back({"s/eth" + std::to_string(uid) + "-" + std::to_string(i), fds[i], true, false, 2048, 16, 1522});
  return c;
}

// Reads what is waiting on fd (frames of 100 bytes) until `seq` has come, and
// counts how often it came (0 after waitMs).
int Arrivals(int fd, uint32_t seq, int waitMs) {
  int got = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(waitMs);
  while (std::chrono::steady_clock::now() < deadline) {
    uint8_t g[200];
    ssize_t n = read(fd, g, sizeof(g));
    if (n == 100 && memcmp(g + 14, &seq, 4) == 0) got++;
    if (n < 0) {
      if (got) return got;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return got;
}

void SendSeq(int fd, uint32_t seq) {
  uint8_t f[100];
  memset(f, 0, sizeof(f));
  memcpy(f, "\x01\x80\xc2\x00\x00\x0e\x02\x00\x00\x00\x00\x02\x88\xcc", 14);
  memcpy(f + 14, &seq, 4);
  if (write(fd, f, sizeof(f)) < 0) {
  }
}

// Sends a frame into `from` (again every 50 ms) until it arrives whole at `to`.
bool Cross(int from, int to, uint32_t seq, int waitMs) {
  uint8_t f[100];
  memset(f, 0, sizeof(f));
  memcpy(f, "\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5", 14);
  memcpy(f + 14, &seq, 4);
  for (int i = 18; i < 100; i++) f[i] = static_cast<uint8_t>(i + seq);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(waitMs);
  auto nextSend = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::chrono::steady_clock::now() >= nextSend) {
      if (write(from, f, sizeof(f)) < 0 && errno != EAGAIN) return false;
      nextSend += std::chrono::milliseconds(50);
    }
    uint8_t g[200];
    ssize_t n = read(to, g, sizeof(g));
    if (n == static_cast<ssize_t>(sizeof(f)) && memcmp(f, g, sizeof(f)) == 0) return true;
    if (n < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = argc > 1 ? atoi(argv[1]) : 1000;
  int reconnects = argc > 2 ? atoi(argv[2]) : 100;
  int portA = 0, portB = 0;
  auto a = Make("a", 0, &portA);
  auto b = Make("b", 0, &portB);
  if (!a || !b) return 1;

  std::atomic<bool> done{false};
  std::mutex bMu;  // the reader thread must not use b while it is replaced
  std::thread reader([&] {
    while (!done) {
      std::vector<std::map<std::string, uint64_t>> c;
      a->Counters(1, &c);
      a->Peers();
      std::vector<uint8_t> snap;
      a->RingSnapshot(1, 0, &snap);
      {
        std::lock_guard<std::mutex> l(bMu);
        b->Peers();
        c.clear();
        b->Counters(1, &c);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto finish = [&](int rc) {
    done = true;
    reader.join();
    return rc;
  };

  // The long-lived wire: frames must cross it at the start and after everything.
  Pair pa = MakePair(), pb = MakePair();
  if (!a->AddWire(Config(1, pa.inside, "b", portB)).empty() || !b->AddWire(Config(1, pb.inside, "a", portA)).empty())
    return finish(Fail("adding wire 1"));
  uint32_t seq = 1;
  if (!Cross(pa.outside, pb.outside, seq++, 10000)) return finish(Fail("no frame crossed wire 1 a->b"));
  if (!Cross(pb.outside, pa.outside, seq++, 10000)) return finish(Fail("no frame crossed wire 1 b->a"));

  // Wires added and removed while wire 1 carries frames.
  for (int i = 0; i < cycles; i++) {
    uint64_t uid = 1000 + i;
    Pair x = MakePair(), y = MakePair();
    if (!a->AddWire(Config(uid, x.inside, "b", portB)).empty()) return finish(Fail("add " + std::to_string(uid)));
    {
      std::lock_guard<std::mutex> l(bMu);
      if (!b->AddWire(Config(uid, y.inside, "a", portA)).empty()) return finish(Fail("add " + std::to_string(uid)));
    }
    uint8_t f[64] = {0};
    if (write(x.outside, f, sizeof(f)) < 0) {
    }
    if (i % 50 == 0 && !Cross(pa.outside, pb.outside, seq++, 5000))
      return finish(Fail("wire 1 stopped during add/remove cycle " + std::to_string(i)));
    a->RemoveWire(uid);
    {
      std::lock_guard<std::mutex> l(bMu);
      b->RemoveWire(uid);
    }
    close(x.outside);
    close(y.outside);
  }
  fprintf(stderr, "engine_stress: %d wire add/remove cycles done\n", cycles);

  // Segments: two members on a, one on b. Each frame reaches the other two
  // members once and never its sender; then segments come and go while
  // frames cross them.
  for (int i = 0; i < cycles / 10 + 1; i++) {
    uint64_t uid = 500000 + i;
    Pair s0 = MakePair(), s1 = MakePair(), s2 = MakePair();
    if (!a->AddWire(SegConfig(uid, {s0.inside, s1.inside}, "b", portB)).empty()) return finish(Fail("add segment on a"));
    {
      std::lock_guard<std::mutex> l(bMu);
      if (!b->AddWire(SegConfig(uid, {s2.inside}, "a", portA)).empty()) return finish(Fail("add segment on b"));
    }
    if (i % 20 == 0) {
      // b's stream may need a moment for a new peer; the first frame is retried until it crosses.
      bool crossed = false;
      for (int tries = 0; tries < 100 && !crossed; tries++) {
        uint32_t s = seq++;
        SendSeq(s0.outside, s);
        crossed = Arrivals(s2.outside, s, 100) > 0;
        while (Arrivals(s1.outside, s, 5) > 0) {
        }
      }
      if (!crossed) return finish(Fail("no frame crossed segment " + std::to_string(uid)));
      uint32_t s = seq++;
      SendSeq(s2.outside, s);
      int at0 = Arrivals(s0.outside, s, 3000), at1 = Arrivals(s1.outside, s, 3000), back = Arrivals(s2.outside, s, 50);
      if (at0 != 1 || at1 != 1 || back != 0)
        return finish(Fail("segment frame from b: " + std::to_string(at0) + ", " + std::to_string(at1) + " copies, " + std::to_string(back) + " back"));
      s = seq++;
      SendSeq(s1.outside, s);
      int atB = Arrivals(s2.outside, s, 3000), atA0 = Arrivals(s0.outside, s, 3000);
      if (atB != 1 || atA0 != 1) return finish(Fail("segment frame from a: " + std::to_string(atB) + ", " + std::to_string(atA0) + " copies"));
    } else {
      SendSeq(s0.outside, seq++);
      SendSeq(s2.outside, seq++);
    }
    a->RemoveWire(uid);
    {
      std::lock_guard<std::mutex> l(bMu);
      b->RemoveWire(uid);
    }
    close(s0.outside);
    close(s1.outside);
    close(s2.outside);
  }
  fprintf(stderr, "engine_stress: %d segment add/remove cycles done\n", cycles / 10 + 1);

  // b restarts: a reconnects each time, and wire 1 carries frames again.
  for (int i = 0; i < reconnects; i++) {
    {
      std::lock_guard<std::mutex> l(bMu);
      b->Stop();
      int bound = 0;
      auto nb = Make("b", portB, &bound);
      if (!nb) return finish(Fail("restart b"));
      b = std::move(nb);
      close(pb.outside);
      pb = MakePair();
      if (!b->AddWire(Config(1, pb.inside, "a", portA)).empty()) return finish(Fail("re-add wire 1 on b"));
    }
    if (!Cross(pa.outside, pb.outside, seq++, 10000)) return finish(Fail("no frame after reconnect " + std::to_string(i)));
  }
  fprintf(stderr, "engine_stress: %d reconnects done\n", reconnects);
  int rc = finish(0);
  a->Stop();
  b->Stop();
  close(pa.outside);
  close(pb.outside);
  fprintf(stderr, "engine_stress: ok\n");
  return rc;
}
