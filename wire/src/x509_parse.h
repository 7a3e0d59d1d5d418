// Reading certificate requests, apart from N-API so that a fuzz target
// (wire/fuzz/csr_fuzz.cc) can drive it: `patchwire signer` reads requests any
// client of the Kubernetes API may have written.
#pragma once
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstddef>
#include <string>
#include <vector>

namespace pw {

constexpr size_t kMaxPem = 64 << 10;      // a request or certificate is a few hundred bytes
constexpr size_t kMaxDnsNames = 64;       // more is not a node identity; the rest is ignored
constexpr size_t kMaxDnsNameBytes = 253;  // RFC 1035's limit for a name

struct CsrFields {
  // the subject's CN, "" when absent, longer than kMaxDnsNameBytes or not
  // printable ASCII (as for dns_names)
  std::string common_name;
  // subjectAltName DNS entries of 1 to kMaxDnsNameBytes bytes, at most
  // kMaxDnsNames; an entry holding a NUL or a byte outside printable ASCII is
  // dropped (it cannot be a node's name, and would confuse comparisons).
  std::vector<std::string> dns_names;
  bool signature_valid = false;
};

// Parses a PEM request of at most kMaxPem bytes. false (and *err) when it is
// not one; a request whose signature does not verify parses with
// signature_valid false.
bool ParseCsrPem(const char* data, size_t len, CsrFields* out, std::string* err);

std::string CommonName(X509_NAME* name);
std::vector<std::string> DnsNames(const GENERAL_NAMES* names);
// OpenSSL's last error appended to `what`, and the error queue cleared.
std::string SslErr(const std::string& what);

}  // namespace pw
