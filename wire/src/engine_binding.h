// JavaScript binding of the frame engine (wire/src/engine/).
#pragma once
#include <napi.h>

namespace pw {
Napi::Function InitEngine(Napi::Env env);
}
