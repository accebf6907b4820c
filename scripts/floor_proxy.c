/*
 * The bench's "floor" column (scripts/bench.ts): a minimal WebSocket-to-TCP proxy in C, the least
 * any proxy costs on the machine. It does the system calls a proxy cannot avoid (one read and one
 * send per chunk and direction, epoll, a connect per session) and nothing else: the handshake is
 * not checked and answered with a fixed 101 (the load generator checks only the status line),
 * control frames other than close are dropped, a close frame ends the session without an answer,
 * the dial blocks, and there is no logging, no limit and no TLS. Not correct for real clients, so
 * only the bench starts it (built with `cc -O2` by scripts/loadgen.ts, as the load generator).
 *
 *   floor_proxy TARGET_PORT        listens on 127.0.0.1 (any port), prints {"port":N}
 *
 * Client frames are unmasked in place, eight bytes at a time, and their payloads forwarded as one
 * send per read; target data goes out as one frame per read (the header written in front of the
 * payload, one send). A send the kernel does not take whole stops reading the other side until
 * the rest is written. See docs/decisions.md, "The floor: a C proxy in the bench".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536
#define ROOM 14

struct session {
  int client, target;
  int upgraded; /* the 101 was sent */
  char head[4096];
  size_t head_len;
  /* frame parser */
  uint8_t header[14];
  size_t header_len, header_need;
  uint8_t mask[4];
  unsigned phase;
  uint64_t remaining;
  int control; /* the frame's payload is dropped */
  int closing; /* 1: a close frame arrived; 2: closed, freed after the batch */
  /* client -> target: unmasked payload waiting for the target */
  uint8_t up[CHUNK];
  size_t up_off, up_len;
  /* target -> client: a frame waiting for the client */
  uint8_t down[ROOM + CHUNK];
  size_t down_off, down_len;
};

/* epoll data: the session pointer with the low bit telling the target side. */
static int ep;
static int target_port;

static void *tag(struct session *s, int target) { return (void *)((uintptr_t)s | (uintptr_t)target); }

static void watch(struct session *s, int target, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = tag(s, target)};
  epoll_ctl(ep, op, target ? s->target : s->client, &ev);
}

/* Sessions closed during one epoll batch are freed after it (a later event may name them). */
static struct session *dead[256];
static int dead_count;

static void finish(struct session *s) {
  if (s->closing == 2) return;
  s->closing = 2;
  close(s->client);
  if (s->target >= 0) close(s->target);
  dead[dead_count++] = s;
}

/* XORs n bytes with the mask starting at phase, eight bytes at a time. */
static void unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned phase) {
  uint8_t m8[8];
  for (int i = 0; i < 8; i++) m8[i] = mask[(phase + i) & 3];
  uint64_t word;
  memcpy(&word, m8, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    v ^= word;
    memcpy(p + i, &v, 8);
  }
  for (; i < n; i++) p[i] ^= mask[(phase + i) & 3];
}

/* Parses n bytes of client data at data (may alias s->up); appends payload to s->up. */
static void parse(struct session *s, uint8_t *data, size_t n) {
  size_t at = 0;
  while (at < n && s->closing == 0) {
    if (s->remaining == 0 && s->header_need == 0) {
      s->header_len = 0;
      s->header_need = 2;
    }
    if (s->header_need > 0) {
      while (at < n && s->header_len < s->header_need) {
        s->header[s->header_len++] = data[at++];
        if (s->header_len == 2) {
          size_t len7 = s->header[1] & 0x7f;
          s->header_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
        }
      }
      if (s->header_len < s->header_need) return;
      size_t len7 = s->header[1] & 0x7f, p = 2;
      uint64_t len = len7;
      if (len7 == 126) len = (uint64_t)s->header[2] << 8 | s->header[3], p = 4;
      if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | s->header[2 + i];
        p = 10;
      }
      memcpy(s->mask, s->header + p, 4);
      s->phase = 0;
      s->remaining = len;
      s->header_need = 0;
      int opcode = s->header[0] & 0x0f;
      s->control = opcode >= 8;
      if (opcode == 8) s->closing = 1;
      continue;
    }
    size_t take = n - at < s->remaining ? n - at : (size_t)s->remaining;
    if (!s->control) {
      uint8_t *out = s->up + s->up_len;
      memmove(out, data + at, take);
      unmask(out, take, s->mask, s->phase);
      s->up_len += take;
    }
    s->phase = (s->phase + take) & 3;
    s->remaining -= take;
    at += take;
  }
}

/* Sends what is pending on one side; returns 0 when all went, 1 when some is left, -1 on error. */
static int push(int fd, uint8_t *buf, size_t *off, size_t *len) {
  while (*off < *len) {
    ssize_t k = send(fd, buf + *off, *len - *off, MSG_NOSIGNAL);
    if (k < 0) return errno == EAGAIN ? 1 : -1;
    *off += (size_t)k;
  }
  *off = *len = 0;
  return 0;
}

static void from_client(struct session *s) {
  if (!s->upgraded) {
    ssize_t k = read(s->client, s->head + s->head_len, sizeof s->head - 1 - s->head_len);
    if (k <= 0) return finish(s);
    s->head_len += (size_t)k;
    s->head[s->head_len] = 0;
    char *end = strstr(s->head, "\r\n\r\n");
    if (!end) return s->head_len >= sizeof s->head - 1 ? finish(s) : (void)0;
    s->target = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(target_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s->target, (struct sockaddr *)&a, sizeof a) < 0) return finish(s);
    int one = 1;
    setsockopt(s->target, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s->target, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (fcntl(s->target, F_SETFL, O_NONBLOCK) < 0) return finish(s);
    static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    if (send(s->client, ok, sizeof ok - 1, MSG_NOSIGNAL) != sizeof ok - 1) return finish(s);
    s->upgraded = 1;
    watch(s, 1, EPOLLIN, EPOLL_CTL_ADD);
    size_t used = (size_t)(end + 4 - s->head);
    if (used < s->head_len) parse(s, (uint8_t *)s->head + used, s->head_len - used);
  } else {
    if (s->up_len > 0) return; /* waiting for the target to take the rest */
    ssize_t k = read(s->client, s->up, CHUNK);
    if (k <= 0) return finish(s);
    parse(s, s->up, (size_t)k);
  }
  if (s->closing == 1) return finish(s);
  int r = push(s->target, s->up, &s->up_off, &s->up_len);
  if (r < 0) return finish(s);
  if (r > 0) {
    watch(s, 0, 0, EPOLL_CTL_MOD);
    watch(s, 1, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
  }
}

static void from_target(struct session *s) {
  if (s->down_len > 0) return; /* waiting for the client to take the rest */
  ssize_t k = read(s->target, s->down + ROOM, CHUNK);
  if (k <= 0) return finish(s);
  size_t n = (size_t)k, h = n < 126 ? 2 : n < 65536 ? 4 : 10;
  uint8_t *f = s->down + ROOM - h;
  f[0] = 0x82;
  if (h == 2) f[1] = (uint8_t)n;
  else if (h == 4) f[1] = 126, f[2] = (uint8_t)(n >> 8), f[3] = (uint8_t)n;
  else {
    f[1] = 127;
    for (int i = 0; i < 8; i++) f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
  }
  s->down_off = ROOM - h;
  s->down_len = ROOM + n;
  int r = push(s->client, s->down, &s->down_off, &s->down_len);
  if (r < 0) return finish(s);
  if (r > 0) {
    watch(s, 1, 0, EPOLL_CTL_MOD);
    watch(s, 0, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: floor_proxy TARGET_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Two descriptors per session: thousands of sessions need more than the usual soft limit. */
  struct rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  target_port = atoi(argv[1]);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
    perror("listen");
    return 1;
  }
  getsockname(lfd, (struct sockaddr *)&a, &al);
  printf("{\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(ep, events, 64, -1);
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct session *s = calloc(1, sizeof *s);
          s->client = fd;
          s->target = -1;
          watch(s, 0, EPOLLIN, EPOLL_CTL_ADD);
        }
        continue;
      }
      uintptr_t p = (uintptr_t)events[i].data.ptr;
      struct session *s = (struct session *)(p & ~(uintptr_t)1);
      int target = (int)(p & 1);
      if (s->closing == 2) continue;
      /* A pending send on the other side's behalf: finish it, then read again. */
      if (events[i].events & EPOLLOUT) {
        int r = target ? push(s->target, s->up, &s->up_off, &s->up_len)
                       : push(s->client, s->down, &s->down_off, &s->down_len);
        if (r < 0) {
          finish(s);
          continue;
        }
        if (r == 0) {
          watch(s, target, EPOLLIN, EPOLL_CTL_MOD);
          watch(s, !target, EPOLLIN, EPOLL_CTL_MOD);
        }
        continue;
      }
      if (target) from_target(s);
      else from_client(s);
    }
    for (int i = 0; i < dead_count; i++) free(dead[i]);
    dead_count = 0;
  }
}
