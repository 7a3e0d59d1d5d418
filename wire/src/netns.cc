#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <thread>

namespace pw {

std::string RunInNetns(const std::string& nsPath, const std::function<std::string()>& fn) {
  if (nsPath.empty()) return fn();
  std::string err;
  // setns() only changes the calling thread, so a throwaway thread keeps the
  // event loop thread in the daemon's own namespace.
  std::thread t([&]() {
    int nsfd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
      err = "network namespace " + nsPath + ": " + strerror(errno);
      return;
    }
    if (setns(nsfd, CLONE_NEWNET) != 0) {
      err = "setns " + nsPath + ": " + strerror(errno);
      close(nsfd);
      return;
    }
    close(nsfd);
    err = fn();
  });
  t.join();
  return err;
}

}  // namespace pw
