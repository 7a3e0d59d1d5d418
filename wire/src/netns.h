// Running a piece of work inside another network namespace.
#pragma once
#include <functional>
#include <string>

namespace pw {

// Runs fn on a short-lived thread that has joined the network namespace at
// nsPath (e.g. /var/run/netns/pod1); an empty path means the caller's own.
// Sockets and tun fds created there stay bound to that namespace after the
// thread exits, which is how one daemon owns ports in many pod namespaces
// without ever moving its main thread. Returns "" or an error message.
std::string RunInNetns(const std::string& nsPath, const std::function<std::string()>& fn);

}  // namespace pw
