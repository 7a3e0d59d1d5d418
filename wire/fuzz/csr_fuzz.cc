// libFuzzer target for what `patchwire signer` reads from the Kubernetes API:
// certificate requests (wire/src/x509_parse.cc). The input goes in as it is
// (PEM, mostly refused early) and, base64-wrapped into a PEM frame, as DER,
// so that the fuzzer reaches OpenSSL's ASN.1 reader and the code that picks
// names out of what it returns. Invariants: names within their bounds.
#include <openssl/evp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../src/x509_parse.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "invariant failed: %s\n", what);
    abort();
  }
}

void Parse(const std::string& pem) {
  pw::CsrFields f;
  std::string err;
  if (!pw::ParseCsrPem(pem.data(), pem.size(), &f, &err)) {
    Check(!err.empty(), "a refused request says why");
    return;
  }
  Check(f.dns_names.size() <= pw::kMaxDnsNames, "at most kMaxDnsNames names");
  Check(f.common_name.size() <= pw::kMaxDnsNameBytes, "common name length within bounds");
  for (unsigned char c : f.common_name) Check(c > 0x20 && c < 0x7f, "the common name is printable ASCII");
  for (const auto& n : f.dns_names) {
    Check(!n.empty() && n.size() <= pw::kMaxDnsNameBytes, "name length within bounds");
    for (unsigned char c : n) Check(c > 0x20 && c < 0x7f, "names are printable ASCII");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > pw::kMaxPem) return 0;
  Parse(std::string(reinterpret_cast<const char*>(data), size));
  std::string b64(4 * ((size + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&b64[0]), data, static_cast<int>(size));
  b64.resize(static_cast<size_t>(n));
  std::string pem = "-----BEGIN CERTIFICATE REQUEST-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) pem += b64.substr(i, 64) + "\n";
  pem += "-----END CERTIFICATE REQUEST-----\n";
  Parse(pem);
  return 0;
}
