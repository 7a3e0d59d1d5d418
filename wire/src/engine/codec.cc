// The engine's wire codec (codec.h): gRPC message framing and the hand-written
// protobuf encoding of SubscribeRequest / SubscribeResponse. Byte for byte what
// src/dataplane/codec.ts and grpc-wire.ts write; the decoders follow proto3
// (unknown fields skipped, last value of a scalar wins) but check every length
// against the bytes that remain before using it, since peers are not trusted.
#include "codec.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace pw::engine {

namespace {

constexpr uint8_t kTagFrames = (1 << 3) | 2;  // SubscribeResponse.frames
constexpr uint8_t kTagNode = (2 << 3) | 2;    // SubscribeResponse.node
constexpr uint8_t kTagReqNode = (1 << 3) | 2;  // SubscribeRequest.node
constexpr uint8_t kTagReqLab = (2 << 3) | 2;   // SubscribeRequest.lab
constexpr uint8_t kTagWire = (1 << 3) | 0;    // Frame.wire
constexpr uint8_t kTagVnet = (2 << 3) | 2;    // Frame.vnet_hdr
constexpr uint8_t kTagData = (3 << 3) | 2;    // Frame.data
constexpr int kMaxVarint = 10;                // a uint64 never needs more
constexpr size_t kMinAssembly = 64 << 10;     // first assembly buffer (as grpc-wire.ts)

bool Fail(std::string* err, std::string msg) {
  if (err) *err = std::move(msg);
  return false;
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

uint8_t* WriteVarint(uint8_t* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

// Reads a varint at p (advanced past it). Bits beyond 64 in a tenth byte are
// dropped, as protobuf's own parsers do; an eleventh byte is an error.
bool ReadVarint(const uint8_t*& p, const uint8_t* end, uint64_t* v, std::string* err) {
  uint64_t r = 0;
  for (int i = 0; i < kMaxVarint; i++) {
    if (p == end) return Fail(err, "truncated varint");
    const uint8_t b = *p++;
    r |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if (b < 0x80) {
      *v = r;
      return true;
    }
  }
  return Fail(err, "varint too long");
}

// A field key: field numbers are at most 2^29-1 and never 0.
bool ReadTag(const uint8_t*& p, const uint8_t* end, uint32_t* field, uint32_t* wireType, std::string* err) {
  uint64_t key;
  if (!ReadVarint(p, end, &key, err)) return false;
  if (key > 0xffffffffu || (key >> 3) == 0) return Fail(err, "invalid field key " + std::to_string(key));
  *field = static_cast<uint32_t>(key >> 3);
  *wireType = static_cast<uint32_t>(key & 7);
  return true;
}

// Reads a length-delimited field's length and checks it against what remains.
bool ReadLength(const uint8_t*& p, const uint8_t* end, uint64_t* len, const char* pastEnd, std::string* err) {
  if (!ReadVarint(p, end, len, err)) return false;
  if (*len > static_cast<uint64_t>(end - p)) return Fail(err, pastEnd);
  return true;
}

// Skips an unknown field's value. Groups (3, 4) and the undefined 6 and 7 are refused.
bool SkipField(const uint8_t*& p, const uint8_t* end, uint32_t wireType, const char* pastEnd, std::string* err) {
  switch (wireType) {
    case 0: {
      uint64_t v;
      return ReadVarint(p, end, &v, err);
    }
    case 1:
      if (end - p < 8) return Fail(err, pastEnd);
      p += 8;
      return true;
    case 2: {
      uint64_t len;
      if (!ReadLength(p, end, &len, pastEnd, err)) return false;
      p += len;
      return true;
    }
    case 5:
      if (end - p < 4) return Fail(err, pastEnd);
      p += 4;
      return true;
    default:
      return Fail(err, "unsupported wire type " + std::to_string(wireType));
  }
}

uint32_t ReadBE32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) | (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

void AppendString(std::vector<uint8_t>& out, uint8_t tag, const std::string& s) {
  if (s.empty()) return;  // proto3 leaves defaults out, as codec.ts does
  uint8_t head[1 + kMaxVarint];
  head[0] = tag;
  uint8_t* e = WriteVarint(head + 1, s.size());
  out.insert(out.end(), head, e);
  out.insert(out.end(), s.begin(), s.end());
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

// ---- MessageReader ----

MessageReader::MessageReader(size_t maxMessage) : max_(maxMessage) {}

bool MessageReader::idle() const { return headHave_ == 0 && !inBody_; }
const std::string& MessageReader::error() const { return error_; }
int MessageReader::status() const { return status_; }
size_t MessageReader::bufferedCapacity() const { return cap_; }

bool MessageReader::Refuse(int status, std::string msg) {
  failed_ = true;
  status_ = status;
  error_ = std::move(msg);
  return false;
}

bool MessageReader::CheckPrefix(uint8_t flag, uint32_t len) {
  if (flag != 0)
    return Refuse(kInternal, "compressed message (flag " + std::to_string(flag) + ") but no compression was negotiated");
  if (len > max_)
    return Refuse(kResourceExhausted, "message of " + std::to_string(len) + " bytes exceeds the limit of " + std::to_string(max_));
  return true;
}

// Grows the assembly buffer to hold at least `want` bytes of the current
// message. It grows with the bytes that arrive, not with the length a prefix
// announces, so a peer cannot make us hold maxMessage bytes by sending five.
bool MessageReader::Reserve(size_t want) {
  if (want <= cap_) return true;
  size_t size = std::max({cap_ * 2, kMinAssembly, want});
  size = std::min(size, std::max(need_, want));
  uint8_t* grown = new (std::nothrow) uint8_t[size];
  if (!grown) return Refuse(kResourceExhausted, "out of memory assembling a message of " + std::to_string(need_) + " bytes");
  if (bodyHave_) std::memcpy(grown, body_.get(), bodyHave_);
  body_.reset(grown);
  cap_ = size;
  return true;
}

bool MessageReader::Push(const uint8_t* data, size_t len, OnMessage onMessage, void* ctx) {
  // After an error or a stop the rest of the stream cannot be framed again.
  if (failed_) return false;
  size_t off = 0;
  while (off < len) {
    if (!inBody_) {
      if (headHave_ == 0 && len - off >= kGrpcPrefix) {
        const uint32_t n = ReadBE32(data + off + 1);
        if (!CheckPrefix(data[off], n)) return false;
        if (len - off - kGrpcPrefix >= n) {
          // The message lies whole in this chunk: no copy.
          const uint8_t* msg = data + off + kGrpcPrefix;
          off += kGrpcPrefix + n;
          if (!onMessage(ctx, msg, n)) return Stop();
          continue;
        }
        off += kGrpcPrefix;
        inBody_ = true;
        need_ = n;
        bodyHave_ = 0;
      } else {
        const size_t take = std::min(kGrpcPrefix - headHave_, len - off);
        std::memcpy(head_ + headHave_, data + off, take);
        headHave_ += take;
        off += take;
        if (headHave_ < kGrpcPrefix) return true;
        const uint32_t n = ReadBE32(head_ + 1);
        if (!CheckPrefix(head_[0], n)) return false;
        headHave_ = 0;
        if (n == 0) {
          if (!onMessage(ctx, data + off, 0)) return Stop();
          continue;
        }
        inBody_ = true;
        need_ = n;
        bodyHave_ = 0;
      }
    }
    const size_t take = std::min(need_ - bodyHave_, len - off);
    if (take == 0) break;  // the chunk ended right after a prefix
    if (!Reserve(bodyHave_ + take)) return false;
    std::memcpy(body_.get() + bodyHave_, data + off, take);
    bodyHave_ += take;
    off += take;
    if (bodyHave_ == need_) {
      const size_t n = need_;
      inBody_ = false;
      need_ = 0;
      bodyHave_ = 0;
      if (!onMessage(ctx, body_.get(), n)) return Stop();
    }
  }
  return true;
}

bool MessageReader::Stop() {
  failed_ = true;
  return false;
}

void MessageReader::ShrinkIfIdle(size_t keepBytes) {
  if (!idle() || cap_ <= keepBytes) return;
  // Idle: nothing in the buffer is wanted any more.
  if (keepBytes == 0) {
    body_.reset();
    cap_ = 0;
    return;
  }
  uint8_t* smaller = new (std::nothrow) uint8_t[keepBytes];
  if (!smaller) return;  // keep the larger one rather than none
  body_.reset(smaller);
  cap_ = keepBytes;
}

// ---- SubscribeResponse ----

bool DecodeBatch(const uint8_t* buf, size_t len, const DecodeLimits& limits, std::vector<FrameRef>& out, std::string* node,
                 std::string* err, std::vector<CarrierStateRef>* states) {
  out.clear();
  if (node) node->clear();
  if (states) states->clear();
  const uint8_t* p = buf;
  const uint8_t* const end = buf + len;
  while (p < end) {
    uint32_t field, wt;
    if (!ReadTag(p, end, &field, &wt, err)) return false;
    if (field == 1 && wt == 2) {
      uint64_t flen;
      if (!ReadLength(p, end, &flen, "frame runs past the batch", err)) return false;
      const uint8_t* const fend = p + flen;
      if (out.size() >= limits.maxFrames)
        return Fail(err, "more than " + std::to_string(limits.maxFrames) + " frames in a batch");
      FrameRef f{0, nullptr, nullptr, 0};
      bool haveData = false;
      while (p < fend) {
        uint32_t ff, fwt;
        if (!ReadTag(p, fend, &ff, &fwt, err)) return false;
        if (ff == 1 && fwt == 0) {
          if (!ReadVarint(p, fend, &f.wire, err)) return false;
        } else if ((ff == 2 || ff == 3) && fwt == 2) {
          uint64_t l;
          if (!ReadLength(p, fend, &l, "field runs past the frame", err)) return false;
          if (ff == 2) {
            // Empty is the proto3 default, as encoders that write defaults send it.
            if (l != kVnetHdrLen && l != 0) return Fail(err, "vnet_hdr of " + std::to_string(l) + " bytes");
            f.vnetHdr = l == 0 ? nullptr : p;
          } else {
            if (l > limits.maxFrameLen)
              return Fail(err, "frame of " + std::to_string(l) + " bytes exceeds the limit of " + std::to_string(limits.maxFrameLen));
            f.data = p;
            f.len = static_cast<uint32_t>(l);
            haveData = l > 0;
          }
          p += l;
        } else if (!SkipField(p, fend, fwt, "field runs past the frame", err)) {
          return false;
        }
      }
      if (!haveData) return Fail(err, "frame without data");
      out.push_back(f);
    } else if (field == 2 && wt == 2) {
      uint64_t l;
      if (!ReadLength(p, end, &l, "batch ends inside a field", err)) return false;
      if (node) node->assign(reinterpret_cast<const char*>(p), l);
      p += l;
    } else if (field == 30 && wt == 2 && states != nullptr) {
      uint64_t slen;
      if (!ReadLength(p, end, &slen, "carrier state runs past the batch", err)) return false;
      const uint8_t* const send = p + slen;
      if (states->size() >= limits.maxFrames)
        return Fail(err, "more than " + std::to_string(limits.maxFrames) + " carrier states in a batch");
      CarrierStateRef s{0, false, false};
      while (p < send) {
        uint32_t sf, swt;
        if (!ReadTag(p, send, &sf, &swt, err)) return false;
        uint64_t v;
        if (sf >= 1 && sf <= 3 && swt == 0) {
          if (!ReadVarint(p, send, &v, err)) return false;
          if (sf == 1) s.wire = v;
          else if (sf == 2) s.present = v != 0;
          else s.plugged = v != 0;
        } else if (!SkipField(p, send, swt, "field runs past the carrier state", err)) {
          return false;
        }
      }
      if (s.wire == 0) return Fail(err, "carrier state without a wire");
      states->push_back(s);
    } else if (!SkipField(p, end, wt, "batch ends inside a field", err)) {
      // Any field a newer peer adds is skipped.
      return false;
    }
  }
  return true;
}

size_t EncodedFrameSize(uint64_t wire, bool withVnetHdr, uint32_t dataLen) {
  const size_t inner = 1 + VarintSize(wire) + (withVnetHdr ? 2 + kVnetHdrLen : 0) + 1 + VarintSize(dataLen) + dataLen;
  return 1 + VarintSize(inner) + inner;
}

bool VnetHdrMatters(const uint8_t* vnetHdr) { return vnetHdr[0] != 0 || vnetHdr[1] != 0; }

uint8_t* EncodeFrame(uint8_t* dst, uint64_t wire, const uint8_t* vnetHdr, const uint8_t* data, uint32_t dataLen) {
  const bool withHdr = vnetHdr != nullptr && VnetHdrMatters(vnetHdr);
  const size_t inner = 1 + VarintSize(wire) + (withHdr ? 2 + kVnetHdrLen : 0) + 1 + VarintSize(dataLen) + dataLen;
  uint8_t* p = dst;
  *p++ = kTagFrames;
  p = WriteVarint(p, inner);
  *p++ = kTagWire;  // written even when 0, as codec.ts does
  p = WriteVarint(p, wire);
  if (withHdr) {
    *p++ = kTagVnet;
    *p++ = static_cast<uint8_t>(kVnetHdrLen);
    std::memcpy(p, vnetHdr, kVnetHdrLen);
    p += kVnetHdrLen;
  }
  *p++ = kTagData;
  p = WriteVarint(p, dataLen);
  if (dataLen) std::memcpy(p, data, dataLen);
  return p + dataLen;
}

void WriteGrpcPrefix(uint8_t* dst, uint32_t len) {
  dst[0] = 0;
  dst[1] = static_cast<uint8_t>(len >> 24);
  dst[2] = static_cast<uint8_t>(len >> 16);
  dst[3] = static_cast<uint8_t>(len >> 8);
  dst[4] = static_cast<uint8_t>(len);
}

std::vector<uint8_t> EncodeHelloResponse(const std::string& node) {
  std::vector<uint8_t> out;
  AppendString(out, kTagNode, node);
  return out;
}

std::vector<uint8_t> EncodeCarrierStates(const std::vector<CarrierStateRef>& states) {
  std::vector<uint8_t> out;
  uint8_t tmp[40];
  for (const CarrierStateRef& s : states) {
    uint8_t* p = tmp;
    *p++ = (1 << 3) | 0;
    p = WriteVarint(p, s.wire);
    *p++ = (2 << 3) | 0;
    *p++ = s.present ? 1 : 0;
    *p++ = (3 << 3) | 0;
    *p++ = s.plugged ? 1 : 0;
    const size_t inner = static_cast<size_t>(p - tmp);
    out.push_back(static_cast<uint8_t>((30 << 3) | 2) | 0x80);  // tag 30, wire type 2: two varint bytes
    out.push_back(static_cast<uint8_t>((30 << 3) >> 7));
    uint8_t lb[10];
    uint8_t* le = WriteVarint(lb, inner);
    out.insert(out.end(), lb, le);
    out.insert(out.end(), tmp, p);
  }
  return out;
}

// ---- SubscribeRequest ----

bool DecodeSubscribeRequest(const uint8_t* buf, size_t len, size_t maxLen, SubscribeRequest* out, std::string* err) {
  out->node.clear();
  out->lab.clear();
  const uint8_t* p = buf;
  const uint8_t* const end = buf + len;
  while (p < end) {
    uint32_t field, wt;
    if (!ReadTag(p, end, &field, &wt, err)) return false;
    if ((field == 1 || field == 2) && wt == 2) {
      uint64_t l;
      if (!ReadLength(p, end, &l, "request ends inside a field", err)) return false;
      const char* name = field == 1 ? "node" : "lab";
      if (l > maxLen)
        return Fail(err, std::string(name) + " of " + std::to_string(l) + " bytes exceeds the limit of " + std::to_string(maxLen));
      (field == 1 ? out->node : out->lab).assign(reinterpret_cast<const char*>(p), l);
      p += l;
    } else if (!SkipField(p, end, wt, "request ends inside a field", err)) {
      return false;
    }
  }
  return true;
}

std::vector<uint8_t> EncodeSubscribeRequest(const SubscribeRequest& r) {
  std::vector<uint8_t> out;
  AppendString(out, kTagReqNode, r.node);
  AppendString(out, kTagReqLab, r.lab);
  return out;
}

// ---- grpc-message ----

std::string PercentEncode(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const uint8_t b = static_cast<uint8_t>(c);
    if (b >= 0x20 && b <= 0x7e && b != '%') {
      out += c;
    } else {
      out += '%';
      out += kHex[b >> 4];
      out += kHex[b & 15];
    }
  }
  return out;
}

// As JavaScript's decodeURIComponent, which the TypeScript side uses: every
// %XX is decoded, escaped bytes of 0x80 and up must form whole, valid UTF-8
// sequences of escapes; anything malformed leaves the string as it was.
std::string PercentDecode(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  const size_t n = s.size();
  auto escape = [&](size_t i) -> int {
    if (n - i < 3) return -1;
    if (s[i] != '%') return -1;
    const int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  };
  for (size_t i = 0; i < n;) {
    if (s[i] != '%') {
      out += s[i++];
      continue;
    }
    const int b = escape(i);
    if (b < 0) return s;
    i += 3;
    if (b < 0x80) {
      out += static_cast<char>(b);
      continue;
    }
    // A UTF-8 lead byte and its continuation escapes.
    int more;
    uint32_t cp;
    if ((b & 0xe0) == 0xc0) {
      more = 1;
      cp = b & 0x1f;
    } else if ((b & 0xf0) == 0xe0) {
      more = 2;
      cp = b & 0x0f;
    } else if ((b & 0xf8) == 0xf0) {
      more = 3;
      cp = b & 0x07;
    } else {
      return s;
    }
    std::string seq(1, static_cast<char>(b));
    for (int k = 0; k < more; k++) {
      const int c = escape(i);
      if (c < 0 || (c & 0xc0) != 0x80) return s;
      cp = (cp << 6) | (c & 0x3f);
      seq += static_cast<char>(c);
      i += 3;
    }
    static const uint32_t kMinForLength[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return s;
    out += seq;
  }
  return out;
}

}  // namespace pw::engine
