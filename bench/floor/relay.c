// The RTT floor of a daemon-per-node wire on this machine: the least a
// userspace relay can do (AF_PACKET on each node's host end, one TCP
// connection between the two relay processes, frames length-prefixed, one
// blocking epoll loop each, no batching, no framing protocol, no runtime).
// Frames carry their virtio-net header (PACKET_VNET_HDR) as patchwire's do,
// so TCP super-frames cross whole and the loaded figures are comparable.
// patchwire's daemons do the same passes (four per ping) with Node.js,
// HTTP/2 and gRPC on top; the difference between the two RTTs is that cost.
//
// usage: relay IFNAME listen PORT
//        relay IFNAME connect IPV4 PORT
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned char stream[4 << 20];  // bytes read from TCP, not yet a whole frame
static size_t have;

static int die(const char* what) {
  fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 4 || (strcmp(argv[2], "listen") && strcmp(argv[2], "connect")) || (!strcmp(argv[2], "connect") && argc < 5)) {
    fprintf(stderr, "usage: relay IFNAME listen PORT | relay IFNAME connect IPV4 PORT\n");
    return 2;
  }
  int one = 1;
  int pkt = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (pkt < 0) return die("socket");
  struct sockaddr_ll sll = {0};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)if_nametoindex(argv[1]);
  if (sll.sll_ifindex == 0) return die(argv[1]);
  // Before bind: the header setting must precede any queued frame.
  if (setsockopt(pkt, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one)) return die("PACKET_VNET_HDR");
  int buf = 4 << 20;  // what patchwire's ports ask for
  setsockopt(pkt, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  if (bind(pkt, (struct sockaddr*)&sll, sizeof sll)) return die("bind");
  setsockopt(pkt, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);

  int tcp;
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  if (!strcmp(argv[2], "listen")) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_port = htons((uint16_t)atoi(argv[3]));
    if (bind(l, (struct sockaddr*)&a, sizeof a) || listen(l, 1)) return die("listen");
    tcp = accept(l, NULL, NULL);
    if (tcp < 0) return die("accept");
  } else {
    a.sin_port = htons((uint16_t)atoi(argv[4]));
    if (inet_pton(AF_INET, argv[3], &a.sin_addr) != 1) return die(argv[3]);
    for (int tries = 0;; tries++) {
      tcp = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(tcp, (struct sockaddr*)&a, sizeof a) == 0) break;
      close(tcp);
      if (tries == 50) return die("connect");
      usleep(100000);
    }
  }
  setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = pkt};
  epoll_ctl(ep, EPOLL_CTL_ADD, pkt, &ev);
  ev.data.fd = tcp;
  epoll_ctl(ep, EPOLL_CTL_ADD, tcp, &ev);
  // 4-byte length, then the 10-byte virtio-net header and the frame.
  static unsigned char frame[4 + sizeof(struct virtio_net_hdr) + 65536];
  for (;;) {
    struct epoll_event evs[2];
    int n = epoll_wait(ep, evs, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (evs[i].data.fd == pkt) {
        ssize_t r = recv(pkt, frame + 4, sizeof frame - 4, MSG_DONTWAIT);
        if (r <= 0) continue;
        frame[0] = (unsigned char)(r >> 24);
        frame[1] = (unsigned char)(r >> 16);
        frame[2] = (unsigned char)(r >> 8);
        frame[3] = (unsigned char)r;
        // Blocking: a full TCP buffer stops this relay reading its port,
        // and the port's receive buffer then drops, as patchwire's does.
        for (size_t off = 0; off < (size_t)r + 4;) {
          ssize_t w = write(tcp, frame + off, (size_t)r + 4 - off);
          if (w < 0) return die("write");
          off += (size_t)w;
        }
      } else {
        ssize_t r = read(tcp, stream + have, sizeof stream - have);
        if (r <= 0) return 0;  // the other relay is gone
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= 4) {
          size_t len = ((size_t)stream[off] << 24) | ((size_t)stream[off + 1] << 16) | ((size_t)stream[off + 2] << 8) | stream[off + 3];
          if (have - off < len + 4) break;
          send(pkt, stream + off + 4, len, 0);
          off += len + 4;
        }
        memmove(stream, stream + off, have - off);
        have -= off;
      }
    }
  }
}
