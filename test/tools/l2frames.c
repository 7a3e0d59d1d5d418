/*
 * l2frames: a static raw-Ethernet sender and receiver for the test guest
 * (test/helpers/guest.ts builds it with gcc -static into the initramfs).
 *
 *   l2frames send IFNAME          frames as hex, one per line on stdin; prints how many were sent
 *   l2frames recv IFNAME MS MARK  prints, as hex lines, every frame arriving on IFNAME within MS
 *                                 milliseconds that contains the ASCII string MARK; then "end N"
 *
 * The kernel takes 802.1Q/802.1ad tags off received frames before AF_PACKET
 * sees them; recv puts the tag back from PACKET_AUXDATA, so the frame printed
 * is the frame on the wire.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 65600

static int open_on(const char *ifname) {
  int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) { perror("socket"); exit(2); }
  struct sockaddr_ll sll = {0};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)if_nametoindex(ifname);
  if (sll.sll_ifindex == 0) { fprintf(stderr, "no interface %s\n", ifname); exit(2); }
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); exit(2); }
  return fd;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int do_send(const char *ifname) {
  int fd = open_on(ifname);
  static char line[2 * MAX_FRAME + 4];
  static unsigned char frame[MAX_FRAME];
  long sent = 0;
  while (fgets(line, sizeof line, stdin)) {
    size_t n = 0;
    for (char *p = line; p[0] && p[1] && n < sizeof frame; p += 2) {
      int hi = hexval(p[0]), lo = hexval(p[1]);
      if (hi < 0 || lo < 0) break;
      frame[n++] = (unsigned char)(hi << 4 | lo);
    }
    if (n == 0) continue;
    if (send(fd, frame, n, 0) != (ssize_t)n) { perror("send"); return 1; }
    sent++;
    usleep(500);
  }
  printf("sent %ld\n", sent);
  return 0;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int do_recv(const char *ifname, long ms, const char *mark) {
  int fd = open_on(ifname);
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one);
  /* Promiscuous while we listen: a NIC filters unicast to other MACs and
     multicast nobody joined (QEMU's virtio-net does, in the host). */
  struct packet_mreq mr = {0};
  mr.mr_ifindex = (int)if_nametoindex(ifname);
  mr.mr_type = PACKET_MR_PROMISC;
  if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) { perror("PACKET_MR_PROMISC"); exit(2); }
  static unsigned char buf[MAX_FRAME], out[MAX_FRAME + 4];
  char cbuf[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
  long end = now_ms() + ms, count = 0;
  printf("listening\n");
  fflush(stdout);
  for (;;) {
    long left = end - now_ms();
    if (left <= 0) break;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)left) <= 0) continue;
    struct sockaddr_ll from;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {&from, sizeof from, &iov, 1, cbuf, sizeof cbuf, 0};
    ssize_t n = recvmsg(fd, &m, 0);
    if (n < 14) continue;
    if (from.sll_pkttype == PACKET_OUTGOING) continue;
    size_t len = (size_t)n;
    unsigned char *f = buf;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      struct tpacket_auxdata a;
      memcpy(&a, CMSG_DATA(c), sizeof a);
      if (!(a.tp_status & TP_STATUS_VLAN_VALID)) continue;
      unsigned short tpid = (a.tp_status & TP_STATUS_VLAN_TPID_VALID) ? a.tp_vlan_tpid : ETH_P_8021Q;
      memcpy(out, buf, 12);
      out[12] = tpid >> 8; out[13] = tpid & 0xff;
      out[14] = a.tp_vlan_tci >> 8; out[15] = a.tp_vlan_tci & 0xff;
      memcpy(out + 16, buf + 12, len - 12);
      f = out;
      len += 4;
    }
    if (!memmem(f, len, mark, strlen(mark))) continue;
    for (size_t i = 0; i < len; i++) printf("%02x", f[i]);
    printf("\n");
    count++;
  }
  printf("end %ld\n", count);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "send")) return do_send(argv[2]);
  if (argc == 5 && !strcmp(argv[1], "recv")) return do_recv(argv[2], atol(argv[3]), argv[4]);
  fprintf(stderr, "usage: l2frames send IFNAME | l2frames recv IFNAME MS MARK\n");
  return 2;
}
