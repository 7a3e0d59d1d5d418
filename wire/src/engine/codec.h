// Wire formats the engine parses from peers and writes to them, with no I/O:
// the gRPC length-prefixed message stream (the "gRPC over HTTP2" document),
// and patchwire.v1 SubscribeRequest / SubscribeResponse (proto/patchwire/v1/
// dataplane.proto) encoded by hand. Everything read from the network is
// bounded here; callers never see a length they have not been given a limit for.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pw::engine {

constexpr size_t kGrpcPrefix = 5;   // compressed flag (1 byte) + length (4 bytes, big endian)
constexpr size_t kVnetHdrLen = 10;  // struct virtio_net_hdr

// gRPC status codes the engine uses.
enum GrpcStatus : int { kOk = 0, kInvalidArgument = 3, kPermissionDenied = 7, kResourceExhausted = 8, kUnimplemented = 12, kInternal = 13 };

// Splits a byte stream (HTTP/2 DATA payloads, in any chunking) into gRPC
// messages. A message that lies whole in one chunk is handed on in place; one
// that spans chunks is assembled in a buffer this reader owns, which shrinks
// back after a spike (ShrinkIfIdle). Messages over maxMessage are refused.
class MessageReader {
 public:
  explicit MessageReader(size_t maxMessage);
  // Called for each complete message; the bytes are valid only during the call.
  // Return false to stop (Push then returns false with the error left as is).
  using OnMessage = bool (*)(void* ctx, const uint8_t* msg, size_t len);
  // Feeds one chunk. Returns false on a protocol error (then error()/status() say why)
  // or when onMessage returned false.
  bool Push(const uint8_t* data, size_t len, OnMessage onMessage, void* ctx);
  bool idle() const;             // between messages (a stream may only end here)
  const std::string& error() const;
  int status() const;            // GrpcStatus of the error
  size_t bufferedCapacity() const;  // bytes held for assembly (for memory accounting)
  void ShrinkIfIdle(size_t keepBytes);  // release the assembly buffer above keepBytes when idle
 private:
  bool CheckPrefix(uint8_t flag, uint32_t len);
  bool Reserve(size_t want);
  bool Refuse(int status, std::string msg);
  bool Stop();

  size_t max_;
  uint8_t head_[kGrpcPrefix] = {};
  size_t headHave_ = 0;       // bytes of a prefix that spans chunks
  bool inBody_ = false;       // a prefix is complete and its body is being assembled
  size_t need_ = 0;           // length of that body
  size_t bodyHave_ = 0;
  std::unique_ptr<uint8_t[]> body_;
  size_t cap_ = 0;
  bool failed_ = false;       // a protocol error or a stop: the stream cannot be read on
  std::string error_;
  int status_ = kOk;
};

// One frame of a decoded batch; pointers point into the batch buffer.
struct FrameRef {
  uint64_t wire;
  const uint8_t* vnetHdr;  // nullptr when the frame came without one (or with an empty one)
  const uint8_t* data;
  uint32_t len;
};

struct DecodeLimits {
  size_t maxFrames;    // frames per batch
  uint32_t maxFrameLen;  // bytes of one frame's data
};

// One end's state as its daemon tells the far daemon (SubscribeResponse
// field 30, CarrierState in dataplane.proto): whether that end exists and
// whether its cable is plugged. Carrier at the far end follows it.
struct CarrierStateRef {
  uint64_t wire;
  bool present;
  bool plugged;
};

// Decodes a SubscribeResponse into `out` (cleared first). Unknown fields are
// skipped (a newer peer may add some); the node field (hello) is returned in
// *node when node != nullptr. Returns false and sets *err on anything malformed
// or over the limits; `out` then holds the frames decoded before the error
// (callers count the whole batch as malformed by its frame count so far + 1).
// Carrier states (field 30) go to *states when states != nullptr (cleared
// first; at most limits.maxFrames of them, each with a non-zero wire), and
// are skipped as unknown fields otherwise.
bool DecodeBatch(const uint8_t* buf, size_t len, const DecodeLimits& limits, std::vector<FrameRef>& out,
                 std::string* node, std::string* err, std::vector<CarrierStateRef>* states = nullptr);
// A SubscribeResponse carrying only carrier states.
std::vector<uint8_t> EncodeCarrierStates(const std::vector<CarrierStateRef>& states);

// Size of one encoded Frame entry (field 1 of SubscribeResponse, tag + length + body).
size_t EncodedFrameSize(uint64_t wire, bool withVnetHdr, uint32_t dataLen);
// Writes one Frame entry at dst (which has EncodedFrameSize bytes); returns the end.
// vnetHdr == nullptr (or a header whose flags and gso_type are both 0) writes no vnet_hdr field.
uint8_t* EncodeFrame(uint8_t* dst, uint64_t wire, const uint8_t* vnetHdr, const uint8_t* data, uint32_t dataLen);
// Whether a virtio-net header says anything (flags or gso_type set); a zero one need not travel.
bool VnetHdrMatters(const uint8_t* vnetHdr);
// Writes the 5-byte gRPC prefix for a message of len bytes.
void WriteGrpcPrefix(uint8_t* dst, uint32_t len);

struct SubscribeRequest {
  std::string node;
  std::string lab;
};
// Hello and keepalive messages are small: maxLen bounds each string.
bool DecodeSubscribeRequest(const uint8_t* buf, size_t len, size_t maxLen, SubscribeRequest* out, std::string* err);
std::vector<uint8_t> EncodeSubscribeRequest(const SubscribeRequest& r);
// The server's first message: SubscribeResponse with only node set.
std::vector<uint8_t> EncodeHelloResponse(const std::string& node);

// gRPC's grpc-message percent-encoding (bytes outside printable ASCII, and '%').
std::string PercentEncode(const std::string& s);
std::string PercentDecode(const std::string& s);

}  // namespace pw::engine
