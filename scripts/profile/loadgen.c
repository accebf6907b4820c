/*
 * Profiling load generator and TCP echo target (issue 12, step 2; see scripts/profile/README.md).
 * One epoll thread, no allocation on the hot path, so it is not the limit of what it measures.
 * Every run is bounded in time. It reads the CPU of the server under test from /proc/PID/stat
 * (utime + stime) at the start and end of its measuring window, so the figures are CPU per message
 * or per connection, not wall-clock rates on a shared machine.
 *
 *   loadgen target PORT
 *       TCP echo server on 127.0.0.1:PORT (0: any); prints {"port":N}; runs until killed.
 *   loadgen echo ws|tcp PORT SESSIONS WARMUP_MS WINDOW_MS PID[,PID...] [SIZE]
 *       Opens SESSIONS connections (ws: WebSocket handshake to /), then each one sends a SIZE-byte
 *       (default 32) message and waits for its echo, over and over. Counts echoes in the window.
 *   loadgen idle ws|tcp PORT SESSIONS 0 HOLD_MS PID
 *       Opens SESSIONS sessions, one echo each, then holds them idle: runs WINDOW_CMD (and waits
 *       for it), then HOLD_MS more, then exits (closing them all).
 *   loadgen setup ws|tcp PORT PARALLEL WARMUP_MS WINDOW_MS PID[,PID...]
 *       PARALLEL loops of: connect, (ws: handshake), one 32-byte echo, (ws: close frame), wait for
 *       the server to close, close. Counts completed connections in the window.
 *
 * WINDOW_CMD (environment): a shell command started when the window opens and stopped with
 * SIGINT when it closes (e.g. `exec strace -c -f -p PID -o FILE` or `exec perf record -g -p PID
 * -o FILE`), so a profile covers exactly the counted echoes or connections.
 *
 * Prints one JSON line: {"mode","count","windowMs","rate","serverCpuMs","usPer","loadCpuMs",...}.
 * Build: cc -O2 -o /tmp/loadgen scripts/profile/loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXS 20000
#define BUF 512

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static long ticks_hz;
static int npids;
static int pids[16];

/* utime + stime of the given processes, in ms. */
static double server_cpu_ms(void) {
  double total = 0;
  for (int i = 0; i < npids; i++) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) continue;
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    int field = 2;
    for (char *q = p + 1; *q && field < 15; q++) {
      if (*q == ' ') {
        field++;
        if (field == 14) ut = strtoul(q + 1, NULL, 10);
        if (field == 15) st = strtoul(q + 1, NULL, 10);
      }
    }
    total += (ut + st) * 1000.0 / ticks_hz;
  }
  return total;
}

static double own_cpu_ms(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec * 1e3 + r.ru_utime.tv_usec / 1e3 + r.ru_stime.tv_sec * 1e3 +
         r.ru_stime.tv_usec / 1e3;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ------------------------------------------------------------------ target */

static void target(int port) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (void *)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 4096) < 0) die("listen");
  socklen_t al = sizeof a;
  getsockname(ls, (void *)&a, &al);
  printf("{\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[256];
  static char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        /* Echo; small sync messages never fill the send buffer, so a blocking loop is fine. */
        ssize_t off = 0;
        while (off < r) {
          ssize_t w = write(fd, buf + off, r - off);
          if (w < 0 && errno == EAGAIN) continue;
          if (w <= 0) break;
          off += w;
        }
      } else if (r == 0 || errno != EAGAIN) {
        close(fd);
      }
    }
  }
}

/* ------------------------------------------------------------------ clients */

enum { S_CONNECTING, S_HANDSHAKE, S_ECHO, S_CLOSING, S_DONE };

struct sess {
  int fd;
  int state;
  int len;             /* bytes in buf */
  long payload;        /* payload bytes of the current echo received */
  unsigned char buf[BUF];
};

static struct sess ss[MAXS];
static int ws_mode, port, size = 32, ep;
static unsigned char msg[256], closemsg[8];
static int msglen, closelen;
static char req[256];
static int reqlen;
static long count, failed;
static int counting, idle_mode;

static void build_messages(void) {
  static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
  if (ws_mode) {
    msg[0] = 0x82;
    msg[1] = 0x80 | size;
    memcpy(msg + 2, mask, 4);
    for (int i = 0; i < size; i++) msg[6 + i] = ('a' + i % 26) ^ mask[i % 4];
    msglen = 6 + size;
    closemsg[0] = 0x88;
    closemsg[1] = 0x82;
    memcpy(closemsg + 2, mask, 4);
    closemsg[6] = 0x03 ^ mask[0];
    closemsg[7] = 0xe8 ^ mask[1];
    closelen = 8;
  } else {
    for (int i = 0; i < size; i++) msg[i] = 'a' + i % 26;
    msglen = size;
  }
  reqlen = snprintf(req, sizeof req,
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    port);
}

static void send_all(struct sess *s, const void *data, int n) {
  int off = 0;
  while (off < n) {
    ssize_t w = write(s->fd, (const char *)data + off, n - off);
    if (w < 0 && errno == EAGAIN) continue;
    if (w <= 0) return;
    off += w;
  }
}

static void open_sess(int i) {
  struct sess *s = &ss[i];
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (s->fd < 0) die("socket");
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->state = S_CONNECTING;
  s->len = 0;
  s->payload = 0;
  connect(s->fd, (void *)&a, sizeof a);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = i};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void close_sess(struct sess *s) {
  epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
  s->state = S_DONE;
}

static void start_echo(struct sess *s) {
  s->state = S_ECHO;
  s->payload = 0;
  send_all(s, msg, msglen);
}

/* Consumes received bytes; returns 1 when one echo is complete. */
static int consume(struct sess *s, int *closed_frame) {
  if (!ws_mode) {
    s->payload += s->len;
    s->len = 0;
    if (s->payload >= size) {
      s->payload -= size;
      return 1;
    }
    return 0;
  }
  int done = 0, off = 0;
  while (s->len - off >= 2) {
    int op = s->buf[off] & 0x0f;
    int l = s->buf[off + 1] & 0x7f, h = 2;
    if (l == 126) {
      if (s->len - off < 4) break;
      l = (s->buf[off + 2] << 8) | s->buf[off + 3];
      h = 4;
    } else if (l == 127) {
      fprintf(stderr, "unexpected 64-bit frame\n");
      exit(1);
    }
    if (s->len - off < h + l) break;
    if (op == 8) *closed_frame = 1;
    else if (op == 2 || op == 1 || op == 0) s->payload += l;
    off += h + l;
  }
  memmove(s->buf, s->buf + off, s->len - off);
  s->len -= off;
  if (s->payload >= size) {
    s->payload = 0;
    done = 1;
  }
  return done;
}

/* One event on session i. setup: 1 for set-up loops (reopen after close). */
static void on_event(int i, unsigned events, int setup) {
  struct sess *s = &ss[i];
  if (s->fd < 0) return;
  if (s->state == S_CONNECTING) {
    if (!(events & EPOLLOUT) && !(events & (EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
      failed++;
      close_sess(s);
      if (setup) open_sess(i);
      return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
    if (ws_mode) {
      s->state = S_HANDSHAKE;
      send_all(s, req, reqlen);
    } else {
      if (setup) start_echo(s);
      else s->state = S_ECHO + 10; /* opened, waiting for the start signal */
    }
    return;
  }
  for (;;) {
    if (s->len >= BUF) {
      fprintf(stderr, "receive buffer overflow\n");
      exit(1);
    }
    ssize_t r = read(s->fd, s->buf + s->len, BUF - s->len);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
      if (s->state == S_CLOSING) {
        if (counting) count++;
      } else {
        failed++;
      }
      close_sess(s);
      if (setup) open_sess(i);
      return;
    }
    s->len += r;
    if (s->state == S_HANDSHAKE) {
      void *end = memmem(s->buf, s->len, "\r\n\r\n", 4);
      if (!end) continue;
      if (memcmp(s->buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "handshake refused: %.*s\n", 40, s->buf);
        exit(1);
      }
      int head = (unsigned char *)end + 4 - s->buf;
      memmove(s->buf, s->buf + head, s->len - head);
      s->len -= head;
      if (setup) start_echo(s);
      else s->state = S_ECHO + 10;
    }
    if (s->state == S_ECHO) {
      int closed = 0;
      if (consume(s, &closed)) {
        if (setup) {
          s->state = S_CLOSING;
          if (ws_mode) send_all(s, closemsg, closelen);
          else shutdown(s->fd, SHUT_WR);
        } else if (idle_mode) {
          count++;
          s->state = S_ECHO + 10; /* parked: idle from now on */
        } else {
          if (counting) count++;
          send_all(s, msg, msglen);
        }
      }
    } else if (s->state == S_CLOSING) {
      s->len = 0; /* close frame and anything else: wait for EOF */
    } else if (s->state == S_ECHO + 10) {
      s->len = 0;
    }
  }
}

static void parse_pids(const char *arg) {
  char *copy = strdup(arg), *tok, *save;
  for (tok = strtok_r(copy, ",", &save); tok && npids < 16; tok = strtok_r(NULL, ",", &save))
    pids[npids++] = atoi(tok);
  free(copy);
}

static void run(int setup, int sessions, double warmup, double window) {
  struct rlimit rl = {MAXS + 100, MAXS + 100};
  setrlimit(RLIMIT_NOFILE, &rl);
  ep = epoll_create1(0);
  build_messages();
  struct epoll_event evs[512];
  double t0 = now_ms();
  int opened = 0;
  if (!setup) {
    /* Open all sessions (at most 100 handshakes in flight), then start them together. */
    int next = 0;
    while (opened < sessions) {
      while (next < sessions && next - opened < 100) open_sess(next++);
      int n = epoll_wait(ep, evs, 512, 100);
      for (int k = 0; k < n; k++) on_event(evs[k].data.u32, evs[k].events, 0);
      opened = 0;
      for (int k = 0; k < next; k++)
        if (ss[k].state == S_ECHO + 10) opened++;
      if (now_ms() - t0 > 30000) break;
      if (failed) {
        fprintf(stderr, "%ld sessions failed to open\n", failed);
        exit(1);
      }
    }
    for (int k = 0; k < sessions; k++)
      if (ss[k].state == S_ECHO + 10) start_echo(&ss[k]);
  } else {
    for (int k = 0; k < sessions; k++) open_sess(k);
    opened = sessions;
  }
  if (idle_mode) {
    /* Every session has echoed once; hold them idle while WINDOW_CMD runs, then WINDOW_MS. */
    while (count < opened && now_ms() - t0 < 40000) {
      int n = epoll_wait(ep, evs, 512, 100);
      for (int k = 0; k < n; k++) on_event(evs[k].data.u32, evs[k].events, 0);
    }
    const char *cmd = getenv("WINDOW_CMD");
    int rc = cmd && *cmd ? system(cmd) : 0;
    usleep((useconds_t)(window * 1000));
    printf("{\"mode\":\"idle\",\"route\":\"%s\",\"sessions\":%d,\"opened\":%d,\"count\":%ld,"
           "\"commandStatus\":%d,\"failed\":%ld}\n",
           ws_mode ? "ws" : "tcp", sessions, opened, count, rc, failed);
    return;
  }
  double start = now_ms(), tw = start + warmup, te = tw + window;
  double cpu0 = 0, own0 = 0, wstart = 0;
  const char *cmd = getenv("WINDOW_CMD");
  pid_t child = -1;
  long failed0 = 0;
  for (;;) {
    double t = now_ms();
    if (!counting && t >= tw) {
      counting = 1;
      cpu0 = server_cpu_ms();
      own0 = own_cpu_ms();
      wstart = now_ms();
      failed0 = failed;
      if (cmd && *cmd) {
        child = fork();
        if (child == 0) {
          setpgid(0, 0);
          execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
          _exit(127);
        }
      }
    }
    if (counting && t >= te) break;
    int n = epoll_wait(ep, evs, 512, 10);
    for (int k = 0; k < n; k++) on_event(evs[k].data.u32, evs[k].events, setup);
  }
  double cpu1 = server_cpu_ms(), own1 = own_cpu_ms(), wend = now_ms();
  if (child > 0) {
    kill(-child, SIGINT);
    waitpid(child, NULL, 0);
  }
  double ms = wend - wstart, cpu = cpu1 - cpu0;
  printf("{\"mode\":\"%s\",\"route\":\"%s\",\"sessions\":%d,\"opened\":%d,\"count\":%ld,"
         "\"windowMs\":%.0f,\"rate\":%.0f,\"serverCpuMs\":%.0f,\"usPer\":%.2f,"
         "\"serverCpuShare\":%.2f,\"loadCpuShare\":%.2f,\"failed\":%ld}\n",
         setup ? "setup" : "echo", ws_mode ? "ws" : "tcp", sessions, opened, count, ms,
         count / ms * 1000, cpu, count ? cpu * 1000 / count : 0, cpu / ms, (own1 - own0) / ms,
         failed - failed0);
}

int main(int argc, char **argv) {
  ticks_hz = sysconf(_SC_CLK_TCK);
  if (argc >= 3 && strcmp(argv[1], "target") == 0) {
    target(atoi(argv[2]));
    return 0;
  }
  if (argc < 8) {
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
  }
  int setup = strcmp(argv[1], "setup") == 0;
  idle_mode = strcmp(argv[1], "idle") == 0;
  ws_mode = strcmp(argv[2], "ws") == 0;
  port = atoi(argv[3]);
  int sessions = atoi(argv[4]);
  if (sessions < 1 || sessions > MAXS) return 2;
  double warmup = atof(argv[5]), window = atof(argv[6]);
  parse_pids(argv[7]);
  if (argc > 8) size = atoi(argv[8]);
  if (size < 1 || size > 125) return 2;
  run(setup, sessions, warmup, window);
  return 0;
}
