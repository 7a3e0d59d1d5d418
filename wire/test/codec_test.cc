// Unit tests of the engine's wire codec (wire/src/engine/codec.cc), built with
// sanitizers by scripts/build-native-tests.sh and run by test/codec-native.test.ts.
// Prints one "ok"/"not ok" line per check and a summary; exits 1 on any failure.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../src/engine/codec.h"

using namespace pw::engine;
using Bytes = std::vector<uint8_t>;

static int g_checks = 0, g_failed = 0;

#define CHECK(cond, what)                                                       \
  do {                                                                          \
    g_checks++;                                                                 \
    if (cond) {                                                                 \
      std::printf("ok %d - %s\n", g_checks, std::string(what).c_str());         \
    } else {                                                                    \
      g_failed++;                                                               \
      std::printf("not ok %d - %s (%s:%d: %s)\n", g_checks, std::string(what).c_str(), __FILE__, __LINE__, #cond); \
    }                                                                           \
  } while (0)

static Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

static Bytes Varint(uint64_t v) {
  Bytes b;
  while (v >= 0x80) {
    b.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  b.push_back(static_cast<uint8_t>(v));
  return b;
}

static Bytes Field(uint32_t field, uint32_t wt, const Bytes& body) {
  Bytes b = Varint((static_cast<uint64_t>(field) << 3) | wt);
  if (wt == 2) b = Cat({b, Varint(body.size())});
  return Cat({b, body});
}

static Bytes Pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; i++) b[i] = static_cast<uint8_t>(i * 31 + seed);
  return b;
}

static Bytes EncodeOne(uint64_t wire, const uint8_t* hdr, const Bytes& data) {
  const bool withHdr = hdr && VnetHdrMatters(hdr);
  Bytes out(EncodedFrameSize(wire, withHdr, static_cast<uint32_t>(data.size())));
  uint8_t* end = EncodeFrame(out.data(), wire, hdr, data.data(), static_cast<uint32_t>(data.size()));
  if (end != out.data() + out.size()) out.clear();  // the size disagreed: make every later check fail
  return out;
}

static const DecodeLimits kLimits{1024, 65536};

struct Decoded {
  Bytes buf;  // the frames point into this copy (moving a vector keeps its storage)
  bool ok;
  std::vector<FrameRef> frames;
  std::string node, err;
};

static Decoded Decode(const Bytes& b, DecodeLimits lim = kLimits) {
  Decoded d;
  d.buf = b;
  d.ok = DecodeBatch(d.buf.data(), d.buf.size(), lim, d.frames, &d.node, &d.err);
  return d;
}

static bool SameBytes(const uint8_t* p, const Bytes& b) { return p && std::memcmp(p, b.data(), b.size()) == 0; }

static void TestFrameEncoding() {
  const uint8_t gso[kVnetHdrLen] = {1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0};
  const uint8_t zero[kVnetHdrLen] = {};
  const Bytes data = Pattern(100, 3);
  // Same bytes as codec.ts encodeBatch for wire 300000 with no header: tag, len, 08 <varint>, 1a 64 <data>.
  Bytes want = Cat({{0x0a}, Varint(1 + 3 + 1 + 1 + 100), {0x08}, Varint(300000), {0x1a, 100}, data});
  CHECK(EncodeOne(300000, nullptr, data) == want, "a frame without a header encodes as codec.ts does");
  CHECK(EncodeOne(300000, zero, data) == want, "an all-zero virtio-net header is left out");
  Bytes withHdr = EncodeOne(7, gso, data);
  Bytes wantHdr = Cat({{0x0a}, Varint(2 + 12 + 2 + 100), {0x08, 7, 0x12, 10}, Bytes(gso, gso + 10), {0x1a, 100}, data});
  CHECK(withHdr == wantHdr, "a meaningful header travels as field 2");
  CHECK(EncodeOne(0, nullptr, data)[2] == 0x08, "wire 0 is still written (as codec.ts does)");

  // uids and lengths at every varint size boundary survive a round trip.
  const uint64_t uids[] = {0, 1, 127, 128, 16383, 16384, (1ull << 32) - 1, 1ull << 32, (1ull << 53) + 1, ~0ull};
  for (uint64_t uid : uids) {
    for (size_t len : {1u, 127u, 128u, 16384u}) {
      Bytes d = Pattern(len, static_cast<uint8_t>(uid));
      Bytes enc = EncodeOne(uid, gso, d);
      Decoded got = Decode(enc);
      bool good = got.ok && got.frames.size() == 1 && got.frames[0].wire == uid && got.frames[0].len == len &&
                  SameBytes(got.frames[0].data, d) && SameBytes(got.frames[0].vnetHdr, Bytes(gso, gso + 10));
      if (!good) {
        CHECK(false, "round trip of uid " + std::to_string(uid) + " len " + std::to_string(len));
        return;
      }
    }
  }
  CHECK(true, "uids and data lengths at every varint boundary round-trip, up to 2^64-1");

  uint8_t prefix[kGrpcPrefix];
  WriteGrpcPrefix(prefix, 0x01020304);
  CHECK(Bytes(prefix, prefix + 5) == Bytes({0, 1, 2, 3, 4}), "the gRPC prefix is a zero flag and a big-endian length");
}

static void TestBatchDecoding() {
  const Bytes a = Pattern(60, 1), b = Pattern(9014, 2);
  const Bytes hdr = Pattern(10, 9);
  Bytes batch = Cat({Field(2, 2, {'n', '1'}), EncodeOne(5, nullptr, a), EncodeOne(1ull << 40, hdr.data(), b)});
  Decoded d = Decode(batch);
  CHECK(d.ok && d.frames.size() == 2, "a hello and two frames decode");
  CHECK(d.node == "n1", "the node field is returned");
  CHECK(d.frames[0].wire == 5 && !d.frames[0].vnetHdr && SameBytes(d.frames[0].data, a), "frame 1 fields");
  CHECK(d.frames[1].wire == (1ull << 40) && SameBytes(d.frames[1].vnetHdr, hdr) && d.frames[1].len == b.size() &&
            SameBytes(d.frames[1].data, b),
        "frame 2 fields, 64-bit uid");
  CHECK(d.frames[1].data >= d.buf.data() && d.frames[1].data + d.frames[1].len <= d.buf.data() + d.buf.size(),
        "data points into the batch buffer");

  // Unknown fields of every wire type, at the top and inside a frame, in field numbers needing 2-byte keys.
  Bytes unknown = Cat({Field(9, 0, Varint(~0ull)), Field(10, 1, Bytes(8, 1)), Field(11, 2, Bytes(3, 2)), Field(12, 5, Bytes(4, 3)),
                       Field(300, 2, Bytes(20, 4)), Field(100000, 0, {1})});
  Bytes inner = Cat({unknown, Field(1, 0, Varint(77)), unknown, Field(3, 2, a), unknown});
  Bytes withUnknown = Cat({unknown, Field(1, 2, inner), unknown});
  d = Decode(withUnknown);
  CHECK(d.ok && d.frames.size() == 1 && d.frames[0].wire == 77 && SameBytes(d.frames[0].data, a) && d.frames[0].len == a.size(),
        "unknown fields of wire types 0/1/2/5 with 1-3 byte keys are skipped");

  // proto3: the last value of a non-repeated field wins; an empty vnet_hdr means none.
  Bytes lastWins = Field(1, 2, Cat({Field(1, 0, {1}), Field(2, 2, hdr), Field(3, 2, b), Field(1, 0, {2}), Field(2, 2, {}), Field(3, 2, a)}));
  d = Decode(Cat({Field(2, 2, {'x'}), lastWins, Field(2, 2, {'y', 'z'})}));
  CHECK(d.ok && d.frames[0].wire == 2 && !d.frames[0].vnetHdr && SameBytes(d.frames[0].data, a) && d.frames[0].len == a.size(),
        "the last wire, vnet_hdr and data of a frame win");
  CHECK(d.node == "yz", "the last node wins");
  // A known field number with another wire type is an unknown field (as protobuf treats it).
  d = Decode(Cat({Field(1, 0, {5}), Field(1, 2, Cat({Field(1, 2, {1, 2}), Field(3, 2, a)}))}));
  CHECK(d.ok && d.frames.size() == 1 && d.frames[0].wire == 0, "frames as a varint and wire as bytes are skipped");
  d = Decode({});
  CHECK(d.ok && d.frames.empty() && d.node.empty(), "an empty batch is valid");
  d = Decode(EncodeHelloResponse("node-7"));
  CHECK(d.ok && d.frames.empty() && d.node == "node-7", "the hello response decodes to its node");
  CHECK(EncodeHelloResponse("").empty(), "an empty node encodes to nothing (proto3 default)");
  std::vector<FrameRef> out;
  CHECK(DecodeBatch(withUnknown.data(), withUnknown.size(), kLimits, out, nullptr, nullptr) && out.size() == 1,
        "node and err may be null");
}

static void ExpectError(const Bytes& b, const std::string& want, const std::string& what, DecodeLimits lim = kLimits, size_t framesBefore = 0) {
  Decoded d = Decode(b, lim);
  bool good = !d.ok && d.err.find(want) != std::string::npos && d.frames.size() == framesBefore;
  CHECK(good, what + " -> '" + d.err + "'");
}

static void TestBatchErrors() {
  const Bytes a = Pattern(100, 1);
  const Bytes good = EncodeOne(1, nullptr, a);
  for (size_t cut = 1; cut < good.size(); cut++) {
    Decoded d = Decode(Bytes(good.begin(), good.begin() + cut));
    if (d.ok) {
      CHECK(false, "a batch cut at " + std::to_string(cut) + " is refused");
      return;
    }
  }
  CHECK(true, "a frame cut anywhere is refused");
  ExpectError({0x0a, 0x02, 0x08, 0x01}, "frame without data", "a frame without data");
  ExpectError(Field(1, 2, Cat({Field(1, 0, {1}), Field(3, 2, {})})), "frame without data", "a frame with empty data");
  ExpectError({0x0a, 0xff}, "truncated varint", "a length cut inside its varint");
  ExpectError(Cat({{0x08}, Bytes(10, 0xff), {0x01}}), "varint too long", "an 11-byte varint");
  ExpectError(Cat({{0x0a}, Varint(~0ull)}), "frame runs past the batch", "a frame length of 2^64-1");
  ExpectError(Cat({{0x0a}, Varint(1ull << 63), {0}}), "frame runs past the batch", "a frame length of 2^63");
  ExpectError(Cat({{0x0a, 200}, Field(3, 2, a)}), "frame runs past the batch", "a frame longer than the batch");
  ExpectError(Field(1, 2, Cat({Field(1, 0, {1}), {0x1a, 50}, Bytes(10, 0)})), "field runs past the frame", "data longer than its frame");
  // The data field fits the batch but not its frame: must not be read past the frame.
  ExpectError(Cat({Field(1, 2, Cat({Field(1, 0, {1}), {0x1a, 20}})), Bytes(20, 0)}), "field runs past the frame",
              "data running from its frame into the next bytes of the batch");
  ExpectError(Field(1, 2, Cat({{0x21}, Bytes(4, 0)})), "field runs past the frame", "a fixed64 cut short inside a frame");
  ExpectError(Field(1, 2, Cat({{0x25}, Bytes(2, 0)})), "field runs past the frame", "a fixed32 cut short inside a frame");
  ExpectError(Cat({{0x49}, Bytes(7, 0)}), "batch ends inside a field", "a fixed64 cut short at the top");
  ExpectError(Cat({{0x4a, 5}, Bytes(4, 0)}), "batch ends inside a field", "an unknown field longer than the batch");
  ExpectError({0x12, 3, 'a'}, "batch ends inside a field", "a node longer than the batch");
  for (uint32_t wt : {3u, 4u, 6u, 7u}) ExpectError({static_cast<uint8_t>((5 << 3) | wt), 0}, "unsupported wire type " + std::to_string(wt), "wire type " + std::to_string(wt));
  ExpectError(Field(1, 2, Cat({{0x2b}, Field(3, 2, a)})), "unsupported wire type 3", "a group inside a frame");
  ExpectError({0x02, 0x00}, "invalid field key", "field number 0");
  ExpectError(Cat({Varint(1ull << 35), {0}}), "invalid field key", "a field key beyond 32 bits");
  ExpectError(Field(1, 2, Cat({Field(2, 2, Bytes(3, 1)), Field(3, 2, a)})), "vnet_hdr of 3 bytes", "a 3-byte vnet_hdr");
  ExpectError(Field(1, 2, Cat({Field(2, 2, Bytes(11, 1)), Field(3, 2, a)})), "vnet_hdr of 11 bytes", "an 11-byte vnet_hdr");

  // Limits: frames per batch and bytes per frame; the frames before the error stay in `out`.
  Bytes three = Cat({good, good, good});
  Decoded d = Decode(three, {3, 100});
  CHECK(d.ok && d.frames.size() == 3, "exactly maxFrames frames pass");
  ExpectError(Cat({three, good}), "more than 3 frames in a batch", "maxFrames + 1 frames", {3, 100}, 3);
  ExpectError(Cat({good, EncodeOne(1, nullptr, Pattern(101, 0))}), "frame of 101 bytes exceeds the limit of 100", "a frame over maxFrameLen",
              {3, 100}, 1);
  d = Decode(good, {0, 100});
  CHECK(!d.ok && d.frames.empty(), "maxFrames 0 refuses any frame");
  d = Decode(EncodeHelloResponse("n"), {0, 0});
  CHECK(d.ok, "a hello passes any frame limit");
}

struct Collected {
  std::vector<Bytes> msgs;
  std::vector<const uint8_t*> ptrs;
  size_t stopAfter = SIZE_MAX;
};

static bool Collect(void* ctx, const uint8_t* msg, size_t len) {
  auto* c = static_cast<Collected*>(ctx);
  c->msgs.emplace_back(msg, msg + len);
  c->ptrs.push_back(msg);
  return c->msgs.size() < c->stopAfter;
}

static Bytes Framed(const Bytes& m) {
  Bytes out(kGrpcPrefix);
  WriteGrpcPrefix(out.data(), static_cast<uint32_t>(m.size()));
  return Cat({out, m});
}

// Feeds `stream` cut at `cuts`; returns false if the reader refused it or did not end idle.
static bool ReadCut(const Bytes& stream, const std::vector<size_t>& cuts, std::vector<Bytes>* out, size_t max = 1 << 20) {
  MessageReader r(max);
  Collected c;
  size_t prev = 0;
  std::vector<size_t> all = cuts;
  all.push_back(stream.size());
  for (size_t cut : all) {
    // Each chunk in its own allocation, so ASan sees any read past it.
    Bytes chunk(stream.begin() + prev, stream.begin() + cut);
    if (!r.Push(chunk.data(), chunk.size(), Collect, &c)) return false;
    prev = cut;
  }
  *out = c.msgs;
  return r.idle();
}

static void TestMessageReader() {
  const std::vector<Bytes> msgs = {Pattern(0, 1), Pattern(1, 2), Pattern(7, 3), Pattern(300, 4), Pattern(0, 5), Pattern(5, 6)};
  Bytes stream;
  for (const auto& m : msgs) stream = Cat({stream, Framed(m)});
  size_t cases = 0;
  bool allGood = true;
  for (size_t a = 0; a <= stream.size() && allGood; a++) {
    for (size_t b = a; b <= stream.size(); b++) {
      std::vector<Bytes> got;
      if (!ReadCut(stream, {a, b}, &got) || got != msgs) {
        CHECK(false, "cut at " + std::to_string(a) + " and " + std::to_string(b));
        allGood = false;
        break;
      }
      cases++;
    }
  }
  if (allGood) CHECK(true, std::to_string(cases) + " ways of cutting the stream in three give back the same messages");
  std::vector<size_t> every;
  for (size_t i = 1; i < stream.size(); i++) every.push_back(i);
  std::vector<Bytes> got;
  CHECK(ReadCut(stream, every, &got) && got == msgs, "one byte per chunk");

  // Large messages over 64 KiB chunks.
  const std::vector<Bytes> big = {Pattern(200000, 7), Pattern(70000, 8), Pattern(500000, 9)};
  Bytes bigStream;
  for (const auto& m : big) bigStream = Cat({bigStream, Framed(m)});
  std::vector<size_t> cuts;
  for (size_t c = 65536; c < bigStream.size(); c += 65536) cuts.push_back(c);
  CHECK(ReadCut(bigStream, cuts, &got) && got == big, "large messages across many 64 KiB chunks");

  // Whole messages in one chunk are handed on in place.
  Bytes chunk = Cat({Framed(Pattern(100, 1)), Framed(Pattern(50, 2))});
  MessageReader r(1 << 20);
  Collected c;
  CHECK(r.Push(chunk.data(), chunk.size(), Collect, &c) && c.msgs.size() == 2, "two messages in one chunk");
  CHECK(c.ptrs[0] == chunk.data() + 5 && c.ptrs[1] == chunk.data() + 5 + 100 + 5, "both are views of the chunk (no copy)");
  CHECK(r.bufferedCapacity() == 0, "no assembly buffer for whole messages");
  CHECK(r.Push(chunk.data(), 0, Collect, &c) && r.idle(), "an empty chunk is fine");

  // The assembly buffer grows with the bytes that arrive, not with the announced length.
  MessageReader g(8 << 20);
  Bytes hugeHead(5);
  WriteGrpcPrefix(hugeHead.data(), 8 << 20);
  Collected gc;
  CHECK(g.Push(hugeHead.data(), 5, Collect, &gc) && g.bufferedCapacity() == 0, "a prefix alone allocates nothing");
  Bytes some = Pattern(1000, 1);
  CHECK(g.Push(some.data(), some.size(), Collect, &gc) && g.bufferedCapacity() == 64 << 10 && !g.idle(), "1000 bytes of 8 MiB hold 64 KiB");
  g.ShrinkIfIdle(0);
  CHECK(g.bufferedCapacity() == 64 << 10, "ShrinkIfIdle keeps the buffer of a message in progress");

  // A spanning message of 300 KB, then shrink.
  MessageReader s(1 << 20);
  Collected sc;
  Bytes m300 = Framed(Pattern(300000, 4));
  CHECK(s.Push(m300.data(), 1000, Collect, &sc) && s.Push(m300.data() + 1000, m300.size() - 1000, Collect, &sc) && sc.msgs.size() == 1 &&
            sc.msgs[0] == Pattern(300000, 4),
        "a spanning 300 KB message is assembled");
  CHECK(s.bufferedCapacity() >= 300000 && s.bufferedCapacity() <= (1 << 20), "the assembly buffer is within maxMessage");
  s.ShrinkIfIdle(64 << 10);
  CHECK(s.bufferedCapacity() == 64 << 10, "ShrinkIfIdle gives back what is above keepBytes");
  s.ShrinkIfIdle(0);
  CHECK(s.bufferedCapacity() == 0, "ShrinkIfIdle(0) frees it");
  CHECK(s.Push(m300.data(), 7, Collect, &sc) && s.Push(m300.data() + 7, m300.size() - 7, Collect, &sc) && sc.msgs.size() == 2 &&
            sc.msgs[1] == Pattern(300000, 4),
        "and the reader still assembles after shrinking");

  // Refusals, with the status to reset the stream with.
  Bytes compressed = Framed(Pattern(10, 1));
  compressed[0] = 1;
  MessageReader e1(100);
  Collected ec;
  CHECK(!e1.Push(compressed.data(), compressed.size(), Collect, &ec) && e1.status() == kInternal &&
            e1.error() == "compressed message (flag 1) but no compression was negotiated" && ec.msgs.empty(),
        "a compressed message is refused with INTERNAL");
  Bytes tooBig = Framed(Pattern(101, 1));
  MessageReader e2(100);
  CHECK(!e2.Push(tooBig.data(), tooBig.size(), Collect, &ec) && e2.status() == kResourceExhausted &&
            e2.error() == "message of 101 bytes exceeds the limit of 100",
        "a message over maxMessage is refused with RESOURCE_EXHAUSTED");
  MessageReader e3(100);
  CHECK(e3.Push(tooBig.data(), 2, Collect, &ec) && !e3.Push(tooBig.data() + 2, 3, Collect, &ec) && e3.status() == kResourceExhausted &&
            e3.bufferedCapacity() == 0,
        "a prefix cut in two is checked before any body is buffered");
  Bytes good = Framed(Pattern(5, 1));
  CHECK(!e3.Push(good.data(), good.size(), Collect, &ec) && ec.msgs.empty(), "after an error the reader refuses everything");
  Bytes maxLen = Framed(Pattern(100, 1));
  MessageReader e4(100);
  CHECK(e4.Push(maxLen.data(), maxLen.size(), Collect, &ec) && ec.msgs.size() == 1, "a message of exactly maxMessage passes");
  Bytes fullLen = {0, 0xff, 0xff, 0xff, 0xff};
  MessageReader e5(~size_t{0});
  Collected fc;
  CHECK(e5.Push(fullLen.data(), 5, Collect, &fc) && !e5.idle(), "a 4 GiB prefix with no limit waits for its body without allocating");
  CHECK(e5.bufferedCapacity() == 0, "nothing allocated for it yet");

  // onMessage returning false stops the reader for good.
  Bytes three = Cat({Framed(Pattern(3, 1)), Framed(Pattern(3, 2)), Framed(Pattern(3, 3))});
  MessageReader st(100);
  Collected stc;
  stc.stopAfter = 2;
  CHECK(!st.Push(three.data(), three.size(), Collect, &stc) && stc.msgs.size() == 2 && st.error().empty(), "a stop ends the push, no error set");
  CHECK(!st.Push(three.data(), three.size(), Collect, &stc) && stc.msgs.size() == 2, "and later pushes are refused");
  // A stream ending inside a prefix or a body is not idle.
  MessageReader half(100);
  Collected hc;
  CHECK(half.Push(three.data(), 3, Collect, &hc) && !half.idle(), "not idle inside a prefix");
  CHECK(half.Push(three.data() + 3, 4, Collect, &hc) && !half.idle(), "not idle inside a body");
  CHECK(half.Push(three.data() + 7, 1, Collect, &hc) && half.idle() && hc.msgs.size() == 1 && hc.msgs[0] == Pattern(3, 1),
        "idle after the message");
}

static void TestSubscribeRequest() {
  SubscribeRequest r{"node-a", "lab1"};
  Bytes enc = EncodeSubscribeRequest(r);
  CHECK(enc == Cat({{0x0a, 6}, Bytes(r.node.begin(), r.node.end()), {0x12, 4}, Bytes(r.lab.begin(), r.lab.end())}),
        "a request encodes as codec.ts does");
  SubscribeRequest got;
  std::string err;
  CHECK(DecodeSubscribeRequest(enc.data(), enc.size(), 64, &got, &err) && got.node == "node-a" && got.lab == "lab1", "and decodes back");
  CHECK(EncodeSubscribeRequest({"", ""}).empty(), "a keepalive (empty request) encodes to nothing");
  got = {"stale", "stale"};
  CHECK(DecodeSubscribeRequest(nullptr, 0, 64, &got, &err) && got.node.empty() && got.lab.empty(), "an empty request decodes to empty strings");
  Bytes unk = Cat({Field(7, 0, {1}), Field(1, 2, {'x'}), Field(9, 5, Bytes(4, 0)), Field(2, 2, {'y'}), Field(20, 2, Bytes(200, 0)),
                   Field(1, 2, {'z'})});
  CHECK(DecodeSubscribeRequest(unk.data(), unk.size(), 64, &got, &err) && got.node == "z" && got.lab == "y",
        "unknown fields skipped (even longer than maxLen), last value wins");
  Bytes longNode = Field(1, 2, Bytes(65, 'a'));
  CHECK(!DecodeSubscribeRequest(longNode.data(), longNode.size(), 64, &got, &err) && err == "node of 65 bytes exceeds the limit of 64",
        "a node over maxLen is refused");
  Bytes longLab = Field(2, 2, Bytes(65, 'a'));
  CHECK(!DecodeSubscribeRequest(longLab.data(), longLab.size(), 64, &got, &err) && err == "lab of 65 bytes exceeds the limit of 64",
        "a lab over maxLen is refused");
  Bytes exact = Field(1, 2, Bytes(64, 'a'));
  CHECK(DecodeSubscribeRequest(exact.data(), exact.size(), 64, &got, &err) && got.node.size() == 64, "exactly maxLen passes");
  Bytes cut = {0x0a, 5, 'a', 'b'};
  CHECK(!DecodeSubscribeRequest(cut.data(), cut.size(), 64, &got, &err), "a string longer than the request is refused");
  Bytes huge = Cat({{0x0a}, Varint(~0ull)});
  CHECK(!DecodeSubscribeRequest(huge.data(), huge.size(), ~size_t{0}, &got, &err), "a length of 2^64-1 with no string limit is refused");
  Bytes group = {0x0b};
  CHECK(!DecodeSubscribeRequest(group.data(), group.size(), 64, &got, &err) && err == "unsupported wire type 3", "groups are refused");
}

static void TestPercent() {
  const std::string msg = "lab 'x' \xe2\x89\xa0 'y': 100% wrong\n";
  const std::string enc = PercentEncode(msg);
  CHECK(enc == "lab 'x' %E2%89%A0 'y': 100%25 wrong%0A", "grpc-message encoding: " + enc);
  CHECK(PercentDecode(enc) == msg, "and decodes back");
  CHECK(PercentDecode("bad %zz") == "bad %zz", "a malformed escape leaves the string as it is");
  CHECK(PercentDecode("cut %4") == "cut %4", "an escape cut short too");
  CHECK(PercentDecode("%e2%89%a0") == "\xe2\x89\xa0", "lower-case hex");
  CHECK(PercentDecode("%FF") == "%FF", "an escaped byte that is no UTF-8 lead");
  CHECK(PercentDecode("%E2%89") == "%E2%89", "an escaped UTF-8 sequence cut short");
  CHECK(PercentDecode("%C0%80") == "%C0%80", "an overlong encoding");
  CHECK(PercentDecode("%ED%A0%80") == "%ED%A0%80", "a surrogate");
  CHECK(PercentDecode("%F4%90%80%80") == "%F4%90%80%80", "beyond U+10FFFF");
  CHECK(PercentDecode("%00x") == std::string("\0x", 2), "NUL decodes");
}

// Carrier states (SubscribeResponse field 30): encoded, decoded beside frames,
// bounded like frames, refused without a wire, and skipped when not asked for.
static void TestCarrierStates() {
  std::vector<CarrierStateRef> in = {{1, true, true}, {300000, true, false}, {(1ULL << 48) - 1, false, false}};
  Bytes enc = EncodeCarrierStates(in);
  const Bytes f = EncodeOne(9, nullptr, Pattern(60, 3));
  Bytes both = Cat({f, enc});
  std::vector<FrameRef> frames;
  std::vector<CarrierStateRef> got;
  std::string err;
  CHECK(DecodeBatch(both.data(), both.size(), kLimits, frames, nullptr, &err, &got) && frames.size() == 1 && got.size() == 3,
        "carrier states decode beside a frame");
  bool same = got.size() == in.size();
  for (size_t i = 0; same && i < in.size(); i++) same = got[i].wire == in[i].wire && got[i].present == in[i].present && got[i].plugged == in[i].plugged;
  CHECK(same, "each state reads back as written");
  CHECK(DecodeBatch(both.data(), both.size(), kLimits, frames, nullptr, &err) && frames.size() == 1, "without a states vector they are skipped");
  std::vector<CarrierStateRef> many(kLimits.maxFrames + 1, CarrierStateRef{1, true, true});
  Bytes over = EncodeCarrierStates(many);
  CHECK(!DecodeBatch(over.data(), over.size(), kLimits, frames, nullptr, &err, &got) && err.find("carrier states") != std::string::npos,
        "more states than the frame bound are refused");
  Bytes noWire = Field(30, 2, Field(2, 0, {1}));
  CHECK(!DecodeBatch(noWire.data(), noWire.size(), kLimits, frames, nullptr, &err, &got) && err.find("without a wire") != std::string::npos,
        "a state without a wire is refused");
  Bytes cut(enc.begin(), enc.end() - 1);
  CHECK(!DecodeBatch(cut.data(), cut.size(), kLimits, frames, nullptr, &err, &got), "a state cut short is refused");
}

int main() {
  TestCarrierStates();
  TestFrameEncoding();
  TestBatchDecoding();
  TestBatchErrors();
  TestMessageReader();
  TestSubscribeRequest();
  TestPercent();
  std::printf("1..%d\n# %d checks, %d failed\n", g_checks, g_checks, g_failed);
  return g_failed ? 1 : 0;
}
