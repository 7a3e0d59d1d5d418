// Certificate requests and node certificates through OpenSSL (the copy Node
// ships), for patchwire's node identities: the daemon's request for its own
// certificate, and the signer that issues it (src/tls/).
#pragma once
#include <napi.h>

namespace pw {
void InitX509(Napi::Env env, Napi::Object exports);
}
