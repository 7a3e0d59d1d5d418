// libFuzzer target for what the engine parses from peers (wire/src/engine/codec.h):
// the input is read both as one message (DecodeBatch with and without carrier
// states, DecodeSubscribeRequest)
// and as a gRPC message stream fed to MessageReader in chunks whose sizes are
// derived from the input, each message then decoded both ways. Besides the
// sanitizers it checks invariants: every decoded pointer lies inside its
// buffer and within the limits, re-encoding what was decoded decodes to the
// same, and the chunking never changes which messages come out.
// Built and run by scripts/fuzz.sh; its seed corpus is wire/fuzz/corpus/codec/.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../src/engine/codec.h"

using namespace pw::engine;

namespace {

// Small limits, so inputs of a few KiB reach every bound.
constexpr size_t kMaxMessage = 2048;
constexpr DecodeLimits kLimits{16, 512};
constexpr size_t kMaxHelloString = 64;

#define INVARIANT(cond)                                                          \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

bool Inside(const uint8_t* p, size_t n, const uint8_t* buf, size_t len) {
  return p >= buf && n <= len && static_cast<size_t>(p - buf) <= len - n;
}

// A copy in an allocation of exactly its size, so ASan sees a read one byte past it.
std::unique_ptr<uint8_t[]> Exact(const uint8_t* p, size_t n) {
  std::unique_ptr<uint8_t[]> c(new uint8_t[n ? n : 1]);
  if (n) std::memcpy(c.get(), p, n);
  return c;
}

void CheckBatch(const uint8_t* buf, size_t len) {
  std::vector<FrameRef> frames;
  std::string node, err;
  const bool ok = DecodeBatch(buf, len, kLimits, frames, &node, &err);
  INVARIANT(frames.size() <= kLimits.maxFrames);
  INVARIANT(ok || !err.empty());
  INVARIANT(node.size() <= len);
  for (const FrameRef& f : frames) {
    INVARIANT(f.data && f.len > 0 && f.len <= kLimits.maxFrameLen);
    INVARIANT(Inside(f.data, f.len, buf, len));
    INVARIANT(!f.vnetHdr || Inside(f.vnetHdr, kVnetHdrLen, buf, len));
  }
  if (!ok) return;
  // What the engine would forward: re-encoded, it must decode to the same frames.
  size_t total = 0;
  for (const FrameRef& f : frames) total += EncodedFrameSize(f.wire, f.vnetHdr && VnetHdrMatters(f.vnetHdr), f.len);
  std::unique_ptr<uint8_t[]> enc(new uint8_t[total ? total : 1]);
  uint8_t* p = enc.get();
  for (const FrameRef& f : frames) p = EncodeFrame(p, f.wire, f.vnetHdr, f.data, f.len);
  INVARIANT(p == enc.get() + total);
  std::vector<FrameRef> again;
  INVARIANT(DecodeBatch(enc.get(), total, kLimits, again, nullptr, &err));
  INVARIANT(again.size() == frames.size());
  for (size_t i = 0; i < frames.size(); i++) {
    const FrameRef &a = frames[i], &b = again[i];
    INVARIANT(a.wire == b.wire && a.len == b.len && std::memcmp(a.data, b.data, a.len) == 0);
    const bool matters = a.vnetHdr && VnetHdrMatters(a.vnetHdr);
    INVARIANT(matters == (b.vnetHdr != nullptr));
    INVARIANT(!matters || std::memcmp(a.vnetHdr, b.vnetHdr, kVnetHdrLen) == 0);
  }
  // A hello re-encoded reads back the same node.
  if (!node.empty()) {
    std::vector<uint8_t> hello = EncodeHelloResponse(node);
    std::string node2;
    INVARIANT(DecodeBatch(hello.data(), hello.size(), {0, 0}, again, &node2, &err) && node2 == node && again.empty());
  }
}

// Carrier states (field 30) decode within the limits, each with a wire, and
// re-encoded read back the same; the frames of the same message are the ones
// DecodeBatch returns without asking for states.
void CheckCarrier(const uint8_t* buf, size_t len) {
  std::vector<FrameRef> frames, plain;
  std::vector<CarrierStateRef> states;
  std::string err, err2;
  const bool ok = DecodeBatch(buf, len, kLimits, frames, nullptr, &err, &states);
  INVARIANT(ok || !err.empty());
  INVARIANT(states.size() <= kLimits.maxFrames);
  for (const CarrierStateRef& s : states) INVARIANT(s.wire != 0);
  if (!ok) return;
  // Skipped as an unknown field, the states leave the frames as they were.
  INVARIANT(DecodeBatch(buf, len, kLimits, plain, nullptr, &err2));
  INVARIANT(plain.size() == frames.size());
  std::vector<uint8_t> enc = EncodeCarrierStates(states);
  std::vector<FrameRef> none;
  std::vector<CarrierStateRef> back;
  INVARIANT(DecodeBatch(enc.data(), enc.size(), kLimits, none, nullptr, &err, &back));
  INVARIANT(none.empty() && back.size() == states.size());
  for (size_t i = 0; i < states.size(); i++)
    INVARIANT(back[i].wire == states[i].wire && back[i].present == states[i].present && back[i].plugged == states[i].plugged);
}

void CheckRequest(const uint8_t* buf, size_t len) {
  SubscribeRequest r;
  std::string err;
  if (!DecodeSubscribeRequest(buf, len, kMaxHelloString, &r, &err)) {
    INVARIANT(!err.empty());
    return;
  }
  INVARIANT(r.node.size() <= kMaxHelloString && r.lab.size() <= kMaxHelloString);
  std::vector<uint8_t> enc = EncodeSubscribeRequest(r);
  SubscribeRequest back;
  INVARIANT(DecodeSubscribeRequest(enc.data(), enc.size(), kMaxHelloString, &back, &err));
  INVARIANT(back.node == r.node && back.lab == r.lab);
}

struct Seen {
  std::vector<std::string> msgs;
};

bool OnMessage(void* ctx, const uint8_t* msg, size_t len) {
  INVARIANT(len <= kMaxMessage);
  auto copy = Exact(msg, len);
  CheckBatch(copy.get(), len);
  CheckCarrier(copy.get(), len);
  CheckRequest(copy.get(), len);
  static_cast<Seen*>(ctx)->msgs.emplace_back(reinterpret_cast<const char*>(msg), len);
  return true;
}

struct Outcome {
  bool ok;
  bool idle;
  int status;
  std::string error;
  size_t capacity;
  Seen seen;
};

// Feeds `data` to a MessageReader in chunks: one chunk when seed == 0, else
// sizes from a small PRNG seeded with `seed` (mostly tiny, so prefixes split).
Outcome ReadStream(const uint8_t* data, size_t size, uint64_t seed) {
  Outcome o{true, true, 0, "", 0, {}};
  MessageReader r(kMaxMessage);
  size_t off = 0;
  uint64_t s = seed;
  while (off < size && o.ok) {
    size_t n = size - off;
    if (seed) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t x = static_cast<uint32_t>(s >> 33);
      n = std::min<size_t>(n, (x & 3) ? 1 + x % 8 : 1 + x % 700);
    }
    auto chunk = Exact(data + off, n);
    o.ok = r.Push(chunk.get(), n, OnMessage, &o.seen);
    off += n;
  }
  o.idle = r.idle();
  o.status = r.status();
  o.error = r.error();
  o.capacity = r.bufferedCapacity();
  INVARIANT(o.capacity <= kMaxMessage);
  r.ShrinkIfIdle(0);
  INVARIANT(!r.idle() || r.bufferedCapacity() == 0);
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckBatch(data, size);
  CheckCarrier(data, size);
  CheckRequest(data, size);

  uint64_t seed = 1469598103934665603ull;  // FNV-1a of the input: the chunking replays
  for (size_t i = 0; i < size; i++) seed = (seed ^ data[i]) * 1099511628211ull;
  const Outcome whole = ReadStream(data, size, 0);
  const Outcome cut = ReadStream(data, size, seed | 1);
  INVARIANT(whole.ok == cut.ok && whole.status == cut.status && whole.error == cut.error);
  INVARIANT(whole.seen.msgs == cut.seen.msgs);
  if (whole.ok) INVARIANT(whole.idle == cut.idle);
  return 0;
}
