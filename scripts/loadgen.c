/*
 * loadgen: the benchmark's load generator and TCP target (scripts/bench.ts builds it with
 * `cc -O2` at start and pins it to the load CPU with taskset). One thread, epoll, non-blocking
 * sockets. Client frames are masked once ahead of time; received frames are only delimited,
 * never copied or unmasked (servers do not mask).
 *
 * Usage: loadgen MODE [key=value ...]       (unknown keys are an error, exit 2)
 *
 * Common keys of the client modes:
 *   port=N        port to connect to on host (required)
 *   host=A.B.C.D  IPv4 address (default 127.0.0.1)
 *   ws=1|0        1: WebSocket (handshake, masked binary frames); 0: raw TCP (default 1)
 *   mode=1|0      1: first send the target's mode message ("E", "S...", "R..."; see target);
 *                 0: the server only echoes, send no mode message (websocketd + cat). Default 1.
 *   server=PIDS   comma-separated pids of the server under test: CPU share and memory of their
 *                 process trees are reported (serverCpu, memoryKib)
 *   target=PIDS   pids of the TCP target (its CPU share counts on the load side: targetCpu)
 *   limit=MS      give up after this long overall (default 120000): prints {"error":...}
 * Every client mode prints one JSON line with its result (and "test":MODE). CPU figures are
 * shares of one core over the measuring window: ownCpu (this process, getrusage), serverCpu,
 * targetCpu, loadCpu = ownCpu + targetCpu, and cores (how busy each core was, every process
 * counted, from /proc/stat); "windowMs" is the window's real length. serverCpuMs is the server's
 * CPU in the window in ms (utime+stime+cutime+cstime of its trees, in 10 ms ticks); echo and setup
 * add usPer, server CPU microseconds per counted unit (echo: per message of `messages`; setup: per
 * connection of `completed`). Shares and usPer are null for windows under 0.5 s. Sessions that
 * failed to open add openErrors (count) and lastError ("connect: <strerror>", or "handshake:
 * refused").
 *
 * WINDOW_CMD (environment, optional): a shell command (sh -c, in a process group of its own)
 * started when the measuring window opens and stopped with SIGINT to its group when the window
 * closes, then waited for, e.g. `exec strace -c -f -o FILE -p PID` or `exec perf record -g -p PID
 * -o FILE`: a profile covers exactly the counted messages or connections. In idle mode it runs
 * once the sessions are open (and have echoed), is waited for without a signal, then the hold
 * starts. Its stdout is loadgen's; its exit status is reported as commandStatus (128 + signal when
 * killed by one).
 *
 * Modes:
 *   echo  sessions=N size=32 window=MS warmup=300 open=100 opentimeout=20000
 *         starttimeout=20000 announce=0
 *         Opens N sessions (at most `open` connecting at a time), and only once all are open (or
 *         opentimeout passed) each sends a `size`-byte binary message and sends it again whenever
 *         its echo is back. After every session had its first echo (or starttimeout), prints
 *         {"ready":true,"started":K} if announce=1, waits warmup, then counts echoes for window.
 *         -> rate (msg/s), messages (echoes counted in the window), usPer, sessions, opened,
 *         failed, started, served (sessions with an echo in the window), neverStarted, stalled,
 *         closed, openSeconds, firstEchoSeconds, memoryKib.
 *   setup parallel=4 window=MS size=16 timeout=5000 text= warmup=0
 *         `parallel` loops of: connect, handshake, one echo, close frame, wait for the server's
 *         close (frame or EOF), close (ws=0: close after the echo). text=LINE sends LINE as a
 *         text message and expects it back (a line program such as cat behind websocketd or
 *         --stdio-text). warmup=MS: the loops run that long before the window opens (nothing
 *         counted). -> rate (conn/s), completed (in the window), failed, usPer.
 *   up    size=65536 window=MS warmup=MS deflate=PATH
 *         ws->tcp: sends "S"+u32 window+u32 warmup, then `size`-byte messages as fast as the
 *         socket takes them (256 KiB writes); the sink counts what arrives during its window and
 *         answers with a u64. -> mbps (MB/s at the sink), bytes. deflate=PATH (any mode offers
 *         permessage-deflate with it): each message is the file's bytes, a raw deflate stream
 *         without its 00 00 ff ff tail, sent with RSV1 instead of `size` bytes; the sink counts
 *         what the proxy inflated them to.
 *   down  size=65536 window=MS warmup=MS discard=1
 *         tcp->ws: sends "R"+u32 size; the source writes `size`-byte chunks as fast as it can;
 *         counts payload received for window after warmup. -> mbps, bytes. discard=1: payload
 *         left in a frame of 16 KiB or more is dropped in the kernel (recv MSG_TRUNC, no copy);
 *         discard=0 reads everything into the buffer.
 *   latency count=4000 size=32
 *         One session, `count` round trips of a `size`-byte message (after 200 unmeasured ones).
 *         -> p50, p99, mean (microseconds).
 *   newcomer busy=2000 window=MS interval=100 timeout=10000 size=32 open=100
 *         opentimeout=30000 starttimeout=20000
 *         Opens `busy` sessions echoing as in echo mode; once all echo (or starttimeout passed:
 *         busyStarted says how many did), opens new sessions one
 *         after another for window ms (connect, handshake, one echo, close; `interval` ms apart).
 *         -> count, p50, max (ms, handshake + echo), timeouts (counted with the time waited),
 *         failures, busyRate (msg/s of the busy sessions meanwhile), busyServed, busyOpened,
 *         busyStarted.
 *   idle  sessions=N hold=1000 open=50 opentimeout=30000 size=1 echo=MODE
 *         Memory of the server before, then opens N sessions (each echoes one `size`-byte message
 *         once so its target connection exists; echo=1|0, default the mode= key: whether they do,
 *         after the mode message if mode=1), runs WINDOW_CMD if set, holds them for hold ms,
 *         memory again. -> kibPerSession, beforeKib, afterKib (memoryKib = afterKib), opened,
 *         failed, started (sessions that echoed).
 *
 * Target modes (the protocol of the first bytes of a connection or of stdin):
 *   target [port=0] [host=127.0.0.1]   TCP target; prints {"port":N}, runs until killed.
 *   stdio                               the same protocol on stdin/stdout, one session (a
 *                                       program behind websocketd --binary).
 *   First byte 'E': echo everything after it. 'S' + u32 window ms + u32 warm-up ms (big-endian):
 *   sink; the window starts warm-up ms after the first data byte; then answers with the bytes
 *   counted in the window as a u64 and keeps discarding. 'R' + u32 size: source; writes
 *   size-byte chunks as fast as the peer reads.
 *
 * CLI stability: other scripts use these modes and keys; add keys, do not change them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

#define MAX_OPTS 32
/* deflate=PATH: offer permessage-deflate; up mode sends the file's bytes as compressed messages. */
static const char *deflate_path;
static const char *opt_keys[MAX_OPTS];
static const char *opt_vals[MAX_OPTS];
static int opt_used[MAX_OPTS];
static int opt_count;

static const char *opt_str(const char *key, const char *def) {
  for (int i = 0; i < opt_count; i++) {
    if (strcmp(opt_keys[i], key) == 0) {
      opt_used[i] = 1;
      return opt_vals[i];
    }
  }
  return def;
}

static long opt_long(const char *key, long def) {
  const char *v = opt_str(key, NULL);
  if (!v) return def;
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == 0 || *end != 0) {
    fprintf(stderr, "loadgen: %s=%s is not a number\n", key, v);
    exit(2);
  }
  return n;
}

static void opts_check(void) {
  for (int i = 0; i < opt_count; i++) {
    if (!opt_used[i]) {
      fprintf(stderr, "loadgen: unknown key '%s' for this mode (see the header of loadgen.c)\n",
              opt_keys[i]);
      exit(2);
    }
  }
}

/* ------------------------------------------------------------------ time, output */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t) { return (double)(now_ns() - t) / 1e6; }

/* ------------------------------------------------------------------ WINDOW_CMD */

static pid_t window_child = -1;
static int window_status = -1; /* exit status of the latest WINDOW_CMD, -1: none ran */

/* Starts WINDOW_CMD, if set, in a process group of its own; returns 1 if it started. */
static int window_cmd_start(void) {
  const char *cmd = getenv("WINDOW_CMD");
  if (!cmd || !*cmd || window_child > 0) return 0;
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) return 0;
  if (child == 0) {
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL); /* ignored here, and an ignored signal stays so across exec */
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(child, child);
  window_child = child;
  return 1;
}

/* Reaps WINDOW_CMD (flags: 0 or WNOHANG); returns 1 once it is gone. */
static int window_cmd_reap(int flags) {
  if (window_child <= 0) return 1;
  int status;
  pid_t r = waitpid(window_child, &status, flags);
  if (r == 0 || (r < 0 && errno == EINTR)) return 0;
  if (r == window_child)
    window_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  window_child = -1;
  return 1;
}

/* The window closed: SIGINT to WINDOW_CMD's group, and wait for it. */
static void window_cmd_stop(void) {
  if (window_child <= 0) return;
  kill(-window_child, SIGINT);
  while (!window_cmd_reap(0)) {
  }
}

static char out_json[8192];
static size_t out_len;

static void j_begin(const char *test) {
  out_len = (size_t)snprintf(out_json, sizeof out_json, "{\"test\":\"%s\"", test);
}
static void j_num(const char *key, double v) {
  if (v != v) /* NaN */
    out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, ",\"%s\":null", key);
  else
    out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, ",\"%s\":%.6g",
                                key, v);
}
static void j_int(const char *key, long long v) {
  out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, ",\"%s\":%lld", key,
                              v);
}
static void j_str(const char *key, const char *v) {
  out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, ",\"%s\":\"%s\"", key,
                              v);
}
/* Why the latest session that failed to open failed (connect errno, or the handshake). */
static char last_error[128];
static int open_errors;
static void note_error(const char *what, int err) {
  open_errors++;
  snprintf(last_error, sizeof last_error, "%s: %s", what, err ? strerror(err) : "refused");
}
/* Adds the open errors to the result, when there were any. */
static void j_errors(void) {
  if (open_errors == 0) return;
  j_int("openErrors", open_errors);
  j_str("lastError", last_error);
}
static void j_end(void) {
  if (window_status >= 0) j_int("commandStatus", window_status);
  printf("%s}\n", out_json);
  fflush(stdout);
}

static void fail(const char *test, const char *message) {
  window_cmd_stop();
  printf("{\"test\":\"%s\",\"error\":\"%s\"}\n", test, message);
  fflush(stdout);
  exit(0);
}

/* ------------------------------------------------------------------ /proc: CPU and memory */

#define MAX_PIDS 16384
typedef struct {
  int pids[MAX_PIDS];
  int count;
} PidSet;

static int pidset_has(PidSet *set, int pid) {
  for (int i = 0; i < set->count; i++)
    if (set->pids[i] == pid) return 1;
  return 0;
}

static void tree_visit(PidSet *set, int pid) {
  if (pidset_has(set, pid) || set->count >= MAX_PIDS) return;
  set->pids[set->count++] = pid;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *dir = opendir(path);
  if (!dir) return;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    if (entry->d_name[0] == '.') continue;
    char file[320];
    snprintf(file, sizeof file, "/proc/%d/task/%s/children", pid, entry->d_name);
    FILE *f = fopen(file, "r");
    if (!f) continue;
    int child;
    while (fscanf(f, "%d", &child) == 1) tree_visit(set, child);
    fclose(f);
  }
  closedir(dir);
}

static void parse_pids(const char *text, int *out, int *count) {
  *count = 0;
  if (!text) return;
  const char *p = text;
  while (*p && *count < 64) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) break;
    if (v > 0) out[(*count)++] = (int)v;
    p = *end == ',' ? end + 1 : end;
  }
}

static int server_pids[64], server_npids, target_pids[64], target_npids;

static void tree_of(const int *pids, int n, PidSet *set) {
  set->count = 0;
  for (int i = 0; i < n; i++) tree_visit(set, pids[i]);
}

/* CPU milliseconds of the trees (utime+stime+cutime+cstime). */
static double tree_cpu_ms(const int *pids, int n) {
  static PidSet set;
  tree_of(pids, n, &set);
  double ticks = 0;
  for (int i = 0; i < set.count; i++) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", set.pids[i]);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) continue;
    p += 2; /* field 3 */
    for (int field = 3; field <= 17 && *p; field++) {
      if (field >= 14) ticks += strtod(p, NULL);
      p = strchr(p, ' ');
      if (!p) break;
      p++;
    }
  }
  return ticks * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double own_cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec * 1000 + (double)ru.ru_utime.tv_usec / 1000 +
         (double)ru.ru_stime.tv_sec * 1000 + (double)ru.ru_stime.tv_usec / 1000;
}

/* Memory in KiB: RSS of a lone process, PSS summed over a tree of several. */
static long server_memory_kib(int *processes) {
  static PidSet set;
  tree_of(server_pids, server_npids, &set);
  long total = 0;
  const char *key = set.count == 1 ? "Rss:" : "Pss:";
  for (int i = 0; i < set.count; i++) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", set.pids[i]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, key, 4) == 0) {
        total += strtol(line + 4, NULL, 10);
        break;
      }
    }
    fclose(f);
  }
  if (processes) *processes = set.count;
  return total;
}

#define MAX_CORES 64
typedef struct {
  uint64_t at;
  double own, server, target;
  /* per core from /proc/stat: busy and total ticks */
  double busy[MAX_CORES], total[MAX_CORES];
  int cores;
} CpuMark;

static void read_proc_stat(CpuMark *m) {
  m->cores = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f) && m->cores < MAX_CORES) {
    if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
    double v[10] = {0};
    char *p = strchr(line, ' ');
    for (int i = 0; i < 10 && p; i++) v[i] = strtod(p, &p);
    double total = 0;
    for (int i = 0; i < 8; i++) total += v[i]; /* user..steal; guest is inside user */
    m->busy[m->cores] = total - v[3] - v[4];    /* minus idle and iowait */
    m->total[m->cores] = total;
    m->cores++;
  }
  fclose(f);
}

static CpuMark cpu_mark(void) {
  CpuMark m;
  m.at = now_ns();
  m.own = own_cpu_ms();
  m.server = server_npids ? tree_cpu_ms(server_pids, server_npids) : 0;
  m.target = target_npids ? tree_cpu_ms(target_pids, target_npids) : 0;
  read_proc_stat(&m);
  return m;
}

/* The measuring window opens: a CPU mark, then WINDOW_CMD (j_cpu closes both). */
static CpuMark window_open(void) {
  CpuMark m = cpu_mark();
  window_cmd_start();
  return m;
}

/* The latest window's server CPU (ms) and whether it was too short for shares, for j_per. */
static double window_server_ms;
static int window_coarse;

/* Adds the CPU shares between `start` and now to the JSON result; stops WINDOW_CMD. */
static void j_cpu(CpuMark start) {
  CpuMark end = cpu_mark();
  window_cmd_stop();
  double wall = (double)(end.at - start.at) / 1e6;
  double own = (end.own - start.own) / wall;
  double target = target_npids ? (end.target - start.target) / wall : 0;
  j_num("windowMs", wall);
  j_num("ownCpu", own);
  /* /proc counts in ticks of 10 ms: no share from windows under 0.5 s. */
  int coarse = wall < 500;
  j_num("serverCpu", server_npids && !coarse ? (end.server - start.server) / wall : 0.0 / 0.0);
  window_server_ms = end.server - start.server;
  window_coarse = coarse;
  j_num("serverCpuMs", server_npids ? window_server_ms : 0.0 / 0.0);
  j_num("targetCpu", target_npids && !coarse ? target : 0.0 / 0.0);
  j_num("loadCpu", coarse && target_npids ? 0.0 / 0.0 : own + target);
  /* How busy each core was (all processes): "cores":[cpu0, cpu1, ...] */
  out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, ",\"cores\":[");
  for (int i = 0; i < end.cores && i < start.cores; i++) {
    double total = end.total[i] - start.total[i];
    double busy = total > 0 && !coarse ? (end.busy[i] - start.busy[i]) / total : 0.0 / 0.0;
    out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, "%s%s", i ? "," : "",
                                busy == busy ? "" : "null");
    if (busy == busy)
      out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, "%.3f", busy);
  }
  out_len += (size_t)snprintf(out_json + out_len, sizeof out_json - out_len, "]");
}

/* After j_cpu: usPer, the server's CPU microseconds per unit (message, connection) counted. */
static void j_per(double units) {
  int known = server_npids && !window_coarse && units > 0;
  j_num("usPer", known ? window_server_ms * 1000 / units : 0.0 / 0.0);
}

/* ------------------------------------------------------------------ frames */

static const uint8_t MASK[4] = {0x12, 0x34, 0x56, 0x78};
static int use_ws = 1, use_mode = 1;

/* A masked client frame (ws) or the raw bytes (tcp); malloc'd, length in *len. */
static uint8_t *make_frame(int opcode, const uint8_t *payload, size_t n, size_t *len) {
  if (!use_ws) {
    uint8_t *raw = malloc(n ? n : 1);
    memcpy(raw, payload, n);
    *len = n;
    return raw;
  }
  size_t head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  uint8_t *f = malloc(head + 4 + n);
  f[0] = (uint8_t)(0x80 | opcode);
  if (n < 126) {
    f[1] = (uint8_t)(0x80 | n);
  } else if (n < 65536) {
    f[1] = 0x80 | 126;
    f[2] = (uint8_t)(n >> 8);
    f[3] = (uint8_t)n;
  } else {
    f[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++) f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
  }
  memcpy(f + head, MASK, 4);
  for (size_t i = 0; i < n; i++) f[head + 4 + i] = payload[i] ^ MASK[i & 3];
  *len = head + 4 + n;
  return f;
}

/* Concatenation of two buffers (the mode message and the first message, sent in one write). */
static uint8_t *concat(const uint8_t *a, size_t an, const uint8_t *b, size_t bn, size_t *len) {
  uint8_t *c = malloc(an + bn + 1);
  memcpy(c, a, an);
  memcpy(c + an, b, bn);
  *len = an + bn;
  return c;
}

/* The mode message: a frame of its own (ws) or the raw byte(s) (tcp); empty with mode=0. */
static uint8_t *mode_message(const uint8_t *body, size_t n, size_t *len) {
  if (!use_mode) {
    *len = 0;
    return malloc(1);
  }
  return make_frame(2, body, n, len);
}

/* ------------------------------------------------------------------ client sessions */

enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSING, S_DEAD };

typedef struct Sess {
  int fd, state, id;
  uint64_t t0; /* when this session started connecting */
  char head[512];
  int headlen;
  /* frame delimiter */
  uint8_t fh[14];
  int fhave, fneed, op;
  uint64_t rem;
  /* payload bytes received and not yet consumed by the mode */
  uint64_t got;
  /* pending write */
  const uint8_t *out;
  size_t outlen;
  uint8_t *owned; /* malloc'd pending buffer, when the pending bytes were copied */
  int wantout;
  /* counters */
  uint64_t echoes, window_echoes, last_ns;
  int peer_closed;
  int was;    /* state before the session failed */
  int opened; /* it completed its handshake */
} Sess;

typedef struct {
  void (*on_open)(Sess *);
  void (*on_payload)(Sess *, const uint8_t *, size_t, int opcode);
  void (*on_close)(Sess *, int error); /* peer closed, close frame, or error */
  void (*on_writable)(Sess *);         /* pending bytes all written (only when asked) */
} Handlers;

static Handlers H;
/* down: payload is only counted, so long payloads are discarded without a copy */
static int discard_payload;
#define DISCARD_FROM (16 * 1024)
static int epfd;
static struct sockaddr_in peer;
static char request[512];
static size_t request_len;
static uint8_t rbuf[256 * 1024];

static void ep_set(Sess *s, int out) {
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = s};
  if (s->wantout != out) {
    s->wantout = out;
    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
  }
}

/* Closes the socket; the session's slot can be reused. */
static void sess_close(Sess *s) {
  if (s->fd >= 0) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
  }
  s->fd = -1;
  free(s->owned);
  s->owned = NULL;
  s->out = NULL;
  s->outlen = 0;
  s->state = S_DEAD;
}

static void sess_fail(Sess *s, int error) {
  if (s->state == S_DEAD || s->state == S_FREE) return;
  s->was = s->state;
  s->peer_closed = 1;
  sess_close(s);
  if (H.on_close) H.on_close(s, error);
}

/* Starts connecting; the session's callbacks run from the event loop. */
static void sess_connect(Sess *s) {
  memset(s, 0, offsetof(Sess, echoes));
  s->echoes = s->window_echoes = 0;
  s->peer_closed = 0;
  s->was = S_FREE;
  s->opened = 0;
  s->t0 = now_ns();
  /* CLOEXEC: WINDOW_CMD must not keep sockets open after loadgen closes them. */
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) {
    note_error("socket", errno);
    s->state = S_CONNECTING;
    sess_fail(s, 1);
    return;
  }
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  s->state = S_CONNECTING;
  s->fneed = 2;
  s->wantout = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = s};
  epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev);
  if (connect(s->fd, (struct sockaddr *)&peer, sizeof peer) < 0 && errno != EINPROGRESS) {
    note_error("connect", errno);
    sess_fail(s, 1);
  }
}

/* Writes what it can; keeps the rest (a pointer to `data`, which must outlive it, unless
 * `copy`) and writes it when the socket takes more. */
static void sess_send(Sess *s, const uint8_t *data, size_t n) {
  if (s->state == S_DEAD || s->fd < 0 || n == 0) return;
  if (s->outlen > 0) {
    uint8_t *joined = malloc(s->outlen + n);
    memcpy(joined, s->out, s->outlen);
    memcpy(joined + s->outlen, data, n);
    free(s->owned);
    s->owned = joined;
    s->out = joined;
    s->outlen += n;
    return;
  }
  ssize_t w = write(s->fd, data, n);
  if (w < 0) {
    if (errno != EAGAIN) {
      sess_fail(s, 1);
      return;
    }
    w = 0;
  }
  if ((size_t)w < n) {
    s->out = data + w;
    s->outlen = n - (size_t)w;
    ep_set(s, 1);
  }
}

static void flush_pending(Sess *s) {
  while (s->outlen > 0) {
    ssize_t w = write(s->fd, s->out, s->outlen);
    if (w < 0) {
      if (errno == EAGAIN) return;
      sess_fail(s, 1);
      return;
    }
    s->out += w;
    s->outlen -= (size_t)w;
  }
  free(s->owned);
  s->owned = NULL;
  s->out = NULL;
  ep_set(s, 0);
  if (H.on_writable) H.on_writable(s);
}

static void deliver(Sess *s, const uint8_t *p, size_t n) {
  if (!use_ws) {
    H.on_payload(s, p, n, 2);
    return;
  }
  while (n > 0 && s->state != S_DEAD) {
    if (s->rem > 0) {
      size_t take = s->rem < n ? (size_t)s->rem : n;
      s->rem -= take;
      if (s->op < 8) H.on_payload(s, p, take, s->op);
      p += take;
      n -= take;
      if (s->rem == 0 && s->op == 8) {
        s->peer_closed = 1;
        if (H.on_close) H.on_close(s, 0);
        return;
      }
      continue;
    }
    size_t take = (size_t)(s->fneed - s->fhave) < n ? (size_t)(s->fneed - s->fhave) : n;
    memcpy(s->fh + s->fhave, p, take);
    s->fhave += (int)take;
    p += take;
    n -= take;
    if (s->fhave < s->fneed) continue;
    int code = s->fh[1] & 0x7f;
    int need = code == 126 ? 4 : code == 127 ? 10 : 2;
    if (s->fh[1] & 0x80) need += 4; /* a masked server frame: not expected, but delimited */
    if (s->fneed < need) {
      s->fneed = need;
      continue;
    }
    s->op = s->fh[0] & 0x0f;
    if (code == 126) s->rem = (uint64_t)s->fh[2] << 8 | s->fh[3];
    else if (code == 127) {
      s->rem = 0;
      for (int i = 0; i < 8; i++) s->rem = s->rem << 8 | s->fh[2 + i];
    } else s->rem = (uint64_t)code;
    s->fhave = 0;
    s->fneed = 2;
    if (s->rem == 0 && s->op == 8) {
      s->peer_closed = 1;
      if (H.on_close) H.on_close(s, 0);
      return;
    }
  }
}

static void on_event(Sess *s, uint32_t events) {
  if (s->state == S_DEAD || s->state == S_FREE) return;
  if (s->state == S_CONNECTING) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & EPOLLERR)) {
      note_error("connect", err);
      sess_fail(s, 1);
      return;
    }
    ep_set(s, 0);
    if (use_ws) {
      s->state = S_HANDSHAKE;
      sess_send(s, (const uint8_t *)request, request_len);
    } else {
      s->state = S_OPEN;
      H.on_open(s);
    }
    return;
  }
  if (events & EPOLLOUT) {
    flush_pending(s);
    if (s->state == S_DEAD) return;
  }
  if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
  /* Long payloads the mode only counts are discarded in the kernel (MSG_TRUNC on TCP: no copy
   * to user space); headers and short frames are read into the buffer. */
  if (discard_payload && s->state == S_OPEN && (!use_ws || s->rem >= DISCARD_FROM)) {
    size_t want = use_ws ? (s->rem < (1u << 30) ? (size_t)s->rem : (1u << 30)) : (1u << 30);
    ssize_t got = recv(s->fd, NULL, want, MSG_TRUNC | MSG_DONTWAIT);
    if (got > 0) {
      if (use_ws) s->rem -= (uint64_t)got;
      H.on_payload(s, NULL, (size_t)got, use_ws ? s->op : 2);
      return;
    }
    if (got < 0 && errno == EAGAIN) return;
    if (got < 0) {
      sess_fail(s, 1);
      return;
    }
    sess_fail(s, s->state == S_CLOSING ? 0 : 1);
    return;
  }
  ssize_t n = read(s->fd, rbuf, sizeof rbuf);
  if (n < 0) {
    if (errno == EAGAIN) return;
    sess_fail(s, 1);
    return;
  }
  if (n == 0) {
    sess_fail(s, s->state == S_CLOSING ? 0 : 1);
    return;
  }
  if (s->state == S_HANDSHAKE) {
    size_t room = sizeof s->head - 1 - (size_t)s->headlen;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(s->head + s->headlen, rbuf, take);
    s->headlen += (int)take;
    s->head[s->headlen] = 0;
    char *end = strstr(s->head, "\r\n\r\n");
    if (!end) {
      if ((size_t)s->headlen >= sizeof s->head - 1) sess_fail(s, 1);
      return;
    }
    if (strncmp(s->head, "HTTP/1.1 101", 12) != 0) {
      note_error("handshake", 0);
      sess_fail(s, 1);
      return;
    }
    size_t used = (size_t)(end + 4 - s->head) - ((size_t)s->headlen - take);
    s->state = S_OPEN;
    H.on_open(s);
    if (s->state != S_DEAD && (size_t)n > used) deliver(s, rbuf + used, (size_t)n - used);
    return;
  }
  deliver(s, rbuf, (size_t)n);
}

/* Runs the event loop until `until` (ns) or until *stop is set. `tick` runs every turn. */
static void run_until(uint64_t until, volatile int *stop, void (*tick)(void), int max_wait_ms) {
  struct epoll_event events[512];
  while (!(stop && *stop)) {
    uint64_t now = now_ns();
    if (now >= until) return;
    int wait = (int)((until - now) / 1000000) + 1;
    if (wait > max_wait_ms) wait = max_wait_ms;
    int n = epoll_wait(epfd, events, 512, wait);
    for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events);
    if (tick) tick();
  }
}

static void client_init(void) {
  const char *host = opt_str("host", "127.0.0.1");
  long port = opt_long("port", 0);
  use_ws = (int)opt_long("ws", 1);
  use_mode = (int)opt_long("mode", 1);
  if (port <= 0 || port > 65535) {
    fprintf(stderr, "loadgen: port=N is required\n");
    exit(2);
  }
  memset(&peer, 0, sizeof peer);
  peer.sin_family = AF_INET;
  peer.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &peer.sin_addr) != 1) {
    fprintf(stderr, "loadgen: host=%s is not an IPv4 address\n", host);
    exit(2);
  }
  deflate_path = opt_str("deflate", NULL);
  request_len = (size_t)snprintf(
      request, sizeof request,
      "GET / HTTP/1.1\r\nHost: %s:%ld\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Protocol: binary\r\nOrigin: http://%s\r\n%s\r\n",
      host, port, host,
      deflate_path ? "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
                   : "");
  parse_pids(opt_str("server", NULL), server_pids, &server_npids);
  parse_pids(opt_str("target", NULL), target_pids, &target_npids);
  epfd = epoll_create1(EPOLL_CLOEXEC);
}

static void be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------------ echo sessions (echo, newcomer) */

typedef struct {
  Sess *s;
  int n, opened, failed, open_failed, connecting, next, started, running, measuring;
  size_t size;
  uint8_t *frame, *first; /* the message; mode message + message */
  size_t frame_len, first_len;
  int parallel;
  uint64_t open_deadline;
  double open_seconds, first_echo_seconds;
} EchoPool;

static EchoPool pool;
/* The newcomer probe, when one runs beside the pool. */
static Sess probe;

static void pool_start_next(void) {
  while (pool.next < pool.n && pool.connecting < pool.parallel && now_ns() < pool.open_deadline) {
    Sess *s = &pool.s[pool.next];
    s->id = pool.next++;
    pool.connecting++;
    sess_connect(s);
  }
}

static void probe_open(Sess *s);
static void probe_payload(Sess *s, const uint8_t *p, size_t n, int op);
static void probe_closed(Sess *s, int error);

static void echo_open(Sess *s) {
  if (s == &probe) return probe_open(s);
  pool.connecting--;
  pool.opened++;
  s->opened = 1;
  pool_start_next();
}

static void echo_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)p;
  (void)op;
  if (s == &probe) return probe_payload(s, p, n, op);
  s->got += n;
  while (s->got >= pool.size) {
    s->got -= pool.size;
    if (s->echoes++ == 0) pool.started++;
    if (pool.measuring) s->window_echoes++;
    s->last_ns = now_ns();
    if (pool.running) sess_send(s, pool.frame, pool.frame_len);
  }
}

/* A session closed or failed: one that failed while opening frees its connecting slot. */
static void echo_closed(Sess *s, int error) {
  (void)error;
  if (s == &probe) return probe_closed(s, error);
  if (s->was == S_CONNECTING || s->was == S_HANDSHAKE) {
    pool.connecting--;
    pool.open_failed++;
    pool_start_next();
  }
  if (s->fd >= 0) sess_close(s);
}

static volatile int pool_all_open;
static void pool_open_tick(void) {
  if (pool.opened + pool.open_failed >= pool.n) pool_all_open = 1;
}
static volatile int pool_all_started;
static void pool_start_tick(void) {
  if (pool.started >= pool.opened) pool_all_started = 1;
}

/* Opens the pool and starts every session echoing; returns once all echo or timed out. */
static void pool_run(long sessions, size_t size, long parallel, long opentimeout,
                     long starttimeout) {
  pool.n = (int)sessions;
  pool.s = calloc((size_t)sessions, sizeof(Sess));
  for (int i = 0; i < pool.n; i++) pool.s[i].fd = -1;
  pool.size = size;
  pool.parallel = (int)parallel;
  uint8_t *payload = malloc(size);
  memset(payload, 0x44, size);
  pool.frame = make_frame(2, payload, size, &pool.frame_len);
  size_t mode_len;
  uint8_t *mode = mode_message((const uint8_t *)"E", 1, &mode_len);
  pool.first = concat(mode, mode_len, pool.frame, pool.frame_len, &pool.first_len);
  free(mode);
  free(payload);
  H.on_open = echo_open;
  H.on_payload = echo_payload;
  H.on_close = echo_closed;
  H.on_writable = NULL;
  uint64_t start = now_ns();
  pool.open_deadline = start + (uint64_t)opentimeout * 1000000u;
  pool_start_next();
  pool_all_open = 0;
  run_until(pool.open_deadline, &pool_all_open, pool_open_tick, 20);
  pool.open_seconds = ms_since(start) / 1000;
  /* Sessions still connecting at the deadline count as failed. */
  for (int i = 0; i < pool.n; i++) {
    Sess *s = &pool.s[i];
    if (s->state == S_CONNECTING || s->state == S_HANDSHAKE) sess_close(s);
  }
  pool.failed = pool.n - pool.opened;
  /* All sessions are open before any echoes. */
  pool.running = 1;
  uint64_t t = now_ns();
  for (int i = 0; i < pool.n; i++) {
    if (pool.s[i].state == S_OPEN) sess_send(&pool.s[i], pool.first, pool.first_len);
  }
  pool_all_started = 0;
  run_until(t + (uint64_t)starttimeout * 1000000u, &pool_all_started, pool_start_tick, 20);
  pool.first_echo_seconds = ms_since(t) / 1000;
}

static int pool_served(void) {
  int served = 0;
  for (int i = 0; i < pool.n; i++) served += pool.s[i].window_echoes > 0;
  return served;
}

static uint64_t pool_window_total(void) {
  uint64_t total = 0;
  for (int i = 0; i < pool.n; i++) total += pool.s[i].window_echoes;
  return total;
}

static void mode_echo(void) {
  long sessions = opt_long("sessions", 1000);
  size_t size = (size_t)opt_long("size", 32);
  long window = opt_long("window", 3000);
  long warmup = opt_long("warmup", 300);
  long parallel = opt_long("open", 100);
  long opentimeout = opt_long("opentimeout", 20000);
  long starttimeout = opt_long("starttimeout", 20000);
  long announce = opt_long("announce", 0);
  opts_check();
  pool_run(sessions, size, parallel, opentimeout, starttimeout);
  if (announce) {
    printf("{\"ready\":true,\"started\":%d}\n", pool.started);
    fflush(stdout);
  }
  run_until(now_ns() + (uint64_t)warmup * 1000000u, NULL, NULL, 50);
  CpuMark mark = window_open();
  uint64_t t = now_ns();
  pool.measuring = 1;
  run_until(t + (uint64_t)window * 1000000u, NULL, NULL, 50);
  pool.measuring = 0;
  double seconds = ms_since(t) / 1000;
  uint64_t messages = pool_window_total();
  j_begin("echo");
  j_num("rate", (double)messages / seconds);
  j_int("messages", (long long)messages);
  j_cpu(mark);
  j_per((double)messages);
  int processes = 0;
  j_int("memoryKib", server_memory_kib(&processes));
  j_int("processes", processes);
  j_int("sessions", pool.n);
  j_int("opened", pool.opened);
  j_int("failed", pool.failed);
  j_int("started", pool.started);
  int served = 0, never = 0, stalled = 0, closed = 0;
  for (int i = 0; i < pool.n; i++) {
    Sess *s = &pool.s[i];
    if (s->window_echoes > 0) served++;
    else if (s->opened) {
      if (s->echoes == 0) never++;
      else stalled++;
      if (s->state == S_DEAD) closed++;
    }
  }
  j_int("served", served);
  j_int("neverStarted", never);
  j_int("stalled", stalled);
  j_int("closed", closed);
  j_num("openSeconds", pool.open_seconds);
  j_num("firstEchoSeconds", pool.first_echo_seconds);
  j_errors();
  j_end();
}

/* ------------------------------------------------------------------ newcomer */

static double *probe_samples;
static int probe_count, probe_timeouts, probe_failures, probe_done;
static size_t probe_got;

static void probe_open(Sess *s) { sess_send(s, pool.first, pool.first_len); }
static void probe_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)p;
  (void)op;
  probe_got += n;
  if (probe_got >= pool.size && !probe_done) {
    probe_samples[probe_count++] = ms_since(s->t0);
    probe_done = 1;
    sess_close(s);
  }
}
static void probe_closed(Sess *s, int error) {
  (void)error;
  if (!probe_done) {
    probe_failures++;
    probe_done = 1;
  }
  if (s->fd >= 0) sess_close(s);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void mode_newcomer(void) {
  long busy = opt_long("busy", 2000);
  size_t size = (size_t)opt_long("size", 32);
  long window = opt_long("window", 5000);
  long interval = opt_long("interval", 100);
  long timeout = opt_long("timeout", 10000);
  long parallel = opt_long("open", 100);
  long opentimeout = opt_long("opentimeout", 30000);
  long starttimeout = opt_long("starttimeout", 20000);
  opts_check();
  pool_run(busy, size, parallel, opentimeout, starttimeout);
  if (pool.opened == 0) fail("newcomer", "none of the busy sessions opened");
  probe_samples = calloc(100000, sizeof(double));
  CpuMark mark = window_open();
  uint64_t t = now_ns();
  uint64_t end = t + (uint64_t)window * 1000000u;
  pool.measuring = 1;
  while (now_ns() < end && probe_count + probe_failures < 100000) {
    probe.fd = -1;
    probe_got = 0;
    probe_done = 0;
    sess_connect(&probe);
    uint64_t deadline = probe.t0 + (uint64_t)timeout * 1000000u;
    run_until(deadline, &probe_done, NULL, 20);
    if (!probe_done) {
      probe_timeouts++;
      probe_samples[probe_count++] = ms_since(probe.t0);
      sess_close(&probe);
    }
    run_until(now_ns() + (uint64_t)interval * 1000000u, NULL, NULL, 20);
  }
  pool.measuring = 0;
  double seconds = ms_since(t) / 1000;
  qsort(probe_samples, (size_t)probe_count, sizeof(double), cmp_double);
  j_begin("newcomer");
  j_int("count", probe_count);
  j_int("timeouts", probe_timeouts);
  j_int("failures", probe_failures);
  j_num("p50", probe_count ? probe_samples[probe_count / 2] : 0.0 / 0.0);
  j_num("max", probe_count ? probe_samples[probe_count - 1] : 0.0 / 0.0);
  j_num("busyRate", (double)pool_window_total() / seconds);
  j_int("busyServed", pool_served());
  j_int("busy", pool.n);
  j_int("busyOpened", pool.opened);
  j_int("busyStarted", pool.started);
  j_cpu(mark);
  j_errors();
  j_end();
}

/* ------------------------------------------------------------------ setup */

typedef struct {
  int completed, failed, parallel, active;
  size_t expected;
  uint8_t *message, *close_frame;
  size_t message_len, close_len;
  uint64_t deadline, timeout_ns;
  Sess *slots;
  int *got_echo;
} SetupState;

static SetupState su;

static void setup_next(Sess *s) {
  if (now_ns() >= su.deadline) {
    s->state = S_FREE;
    su.active--;
    return;
  }
  sess_connect(s);
}

static void setup_open(Sess *s) { sess_send(s, su.message, su.message_len); }

static void setup_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)p;
  (void)op;
  s->got += n;
  if (s->state == S_OPEN && s->got >= su.expected) {
    if (use_ws) {
      s->state = S_CLOSING;
      sess_send(s, su.close_frame, su.close_len);
    } else {
      sess_close(s);
      su.completed++;
      setup_next(s);
    }
  }
}

static void setup_closed(Sess *s, int error) {
  if (s->state == S_CLOSING || (!error && s->got >= su.expected)) {
    if (s->fd >= 0) sess_close(s);
    su.completed++;
  } else {
    if (s->fd >= 0) sess_close(s);
    su.failed++;
  }
  setup_next(s);
}

static void setup_tick(void) {
  uint64_t now = now_ns();
  for (int i = 0; i < su.parallel; i++) {
    Sess *s = &su.slots[i];
    if (s->state != S_FREE && s->state != S_DEAD && now - s->t0 > su.timeout_ns) {
      sess_close(s);
      su.failed++;
      setup_next(s);
    }
  }
}

static volatile int setup_finished;
static void setup_tick_all(void) {
  setup_tick();
  if (su.active == 0) setup_finished = 1;
}

static void mode_setup(void) {
  su.parallel = (int)opt_long("parallel", 4);
  long window = opt_long("window", 2000);
  size_t size = (size_t)opt_long("size", 16);
  long timeout = opt_long("timeout", 5000);
  const char *text = opt_str("text", NULL);
  long warmup = opt_long("warmup", 0);
  opts_check();
  uint8_t payload[4096];
  if (text) {
    size = strlen(text);
    memcpy(payload, text, size);
    use_mode = 0;
    su.message = make_frame(1, payload, size, &su.message_len);
  } else {
    memset(payload, 0x30, size);
    size_t mode_len, frame_len;
    uint8_t *mode = mode_message((const uint8_t *)"E", 1, &mode_len);
    uint8_t *frame = make_frame(2, payload, size, &frame_len);
    su.message = concat(mode, mode_len, frame, frame_len, &su.message_len);
  }
  su.expected = size;
  const uint8_t code[2] = {0x03, 0xe8};
  su.close_frame = make_frame(8, code, 2, &su.close_len);
  su.timeout_ns = (uint64_t)timeout * 1000000u;
  su.slots = calloc((size_t)su.parallel, sizeof(Sess));
  H.on_open = setup_open;
  H.on_payload = setup_payload;
  H.on_close = setup_closed;
  H.on_writable = NULL;
  CpuMark mark = warmup > 0 ? cpu_mark() : window_open();
  uint64_t t = now_ns();
  su.deadline = t + (uint64_t)(warmup + window) * 1000000u;
  su.active = su.parallel;
  for (int i = 0; i < su.parallel; i++) {
    su.slots[i].fd = -1;
    sess_connect(&su.slots[i]);
  }
  if (warmup > 0) {
    /* The loops run through the warm-up; the window counts from here. */
    run_until(t + (uint64_t)warmup * 1000000u, NULL, setup_tick, 10);
    mark = window_open();
    t = now_ns();
    su.completed = 0;
    su.failed = 0;
  }
  run_until(su.deadline + su.timeout_ns + 1000000000u, &setup_finished, setup_tick_all, 10);
  double seconds = ms_since(t) / 1000;
  j_begin("setup");
  j_num("rate", su.completed / seconds);
  j_int("completed", su.completed);
  j_int("failed", su.failed);
  j_cpu(mark);
  j_per(su.completed);
  j_errors();
  j_end();
}

/* ------------------------------------------------------------------ up, down */

static Sess one;
static uint8_t *up_block;
static size_t up_block_len;
static int one_open, one_done, one_error;
static uint8_t answer[8];
static size_t answer_have;
static uint64_t down_count;
static int down_counting;

static void one_open_cb(Sess *s) {
  (void)s;
  one_open = 1;
}
static void one_closed(Sess *s, int error) {
  (void)error;
  if (s->fd >= 0) sess_close(s);
  if (!one_done) one_error = 1;
  one_done = 1;
}

static void up_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)s;
  (void)op;
  for (size_t i = 0; i < n && answer_have < 8; i++) answer[answer_have++] = p[i];
  if (answer_have == 8) one_done = 1;
}

/* Keeps the socket full: writes blocks until it would block. */
static void up_fill(Sess *s) {
  while (!one_done && s->state == S_OPEN && s->outlen == 0) {
    ssize_t w = write(s->fd, up_block, up_block_len);
    if (w < 0) {
      if (errno != EAGAIN) sess_fail(s, 1);
      else {
        s->out = up_block;
        s->outlen = up_block_len;
        ep_set(s, 1);
      }
      return;
    }
    if ((size_t)w < up_block_len) {
      s->out = up_block + w;
      s->outlen = up_block_len - (size_t)w;
      ep_set(s, 1);
      return;
    }
  }
}

static void open_one(const char *test, long limit) {
  one.fd = -1;
  sess_connect(&one);
  run_until(now_ns() + (uint64_t)limit * 1000000u, &one_open, NULL, 50);
  if (!one_open) fail(test, "could not open a session");
}

static void mode_up(void) {
  size_t size = (size_t)opt_long("size", 65536);
  long window = opt_long("window", 2000);
  long warmup = opt_long("warmup", 500);
  opts_check();
  uint8_t *payload;
  if (deflate_path) {
    /* The message as the file holds it (raw deflate, its 00 00 ff ff tail removed), sent with
       RSV1: the proxy inflates it, the sink counts what it inflated to. */
    FILE *file = fopen(deflate_path, "rb");
    long length = -1;
    if (file && fseek(file, 0, SEEK_END) == 0) length = ftell(file);
    if (!file || length < 0 || fseek(file, 0, SEEK_SET) != 0) {
      fprintf(stderr, "loadgen: deflate=%s: %s\n", deflate_path, strerror(errno));
      exit(2);
    }
    if (length == 0) {
      fprintf(stderr, "loadgen: deflate=%s is empty: give a raw deflate message\n", deflate_path);
      exit(2);
    }
    payload = malloc((size_t)length);
    size = fread(payload, 1, (size_t)length, file);
    fclose(file);
    if (size != (size_t)length) {
      fprintf(stderr, "loadgen: deflate=%s: read %zu of %ld bytes\n", deflate_path, size, length);
      exit(2);
    }
  } else {
    payload = malloc(size);
    memset(payload, 0xa5, size);
  }
  size_t frame_len;
  uint8_t *frame = make_frame(2, payload, size, &frame_len);
  if (deflate_path) frame[0] |= 0x40;
  size_t per = frame_len >= 256 * 1024 ? 1 : 256 * 1024 / frame_len;
  up_block = malloc(per * frame_len);
  for (size_t i = 0; i < per; i++) memcpy(up_block + i * frame_len, frame, frame_len);
  up_block_len = per * frame_len;
  H.on_open = one_open_cb;
  H.on_payload = up_payload;
  H.on_close = one_closed;
  H.on_writable = up_fill;
  open_one("up", 10000);
  uint8_t header[9] = {'S'};
  be32(header + 1, (uint32_t)window);
  be32(header + 5, (uint32_t)warmup);
  size_t mode_len;
  use_mode = 1;
  uint8_t *mode = mode_message(header, 9, &mode_len);
  sess_send(&one, mode, mode_len);
  uint64_t t = now_ns();
  up_fill(&one);
  /* The sink's window starts about warm-up ms after the first bytes. */
  run_until(t + (uint64_t)warmup * 1000000u, &one_done, NULL, 50);
  CpuMark mark = window_open();
  run_until(now_ns() + (uint64_t)(window + 10000) * 1000000u, &one_done, NULL, 50);
  if (answer_have < 8) fail("up", one_error ? "the session closed" : "no answer from the sink");
  uint64_t bytes = 0;
  for (int i = 0; i < 8; i++) bytes = bytes << 8 | answer[i];
  j_begin("up");
  j_num("mbps", (double)bytes / ((double)window / 1000) / 1e6);
  j_int("bytes", (long long)bytes);
  j_cpu(mark);
  j_end();
}

static void down_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)s;
  (void)p;
  (void)op;
  if (down_counting) down_count += n;
}

static void mode_down(void) {
  size_t size = (size_t)opt_long("size", 65536);
  long window = opt_long("window", 2000);
  long warmup = opt_long("warmup", 500);
  discard_payload = (int)opt_long("discard", 1);
  opts_check();
  H.on_open = one_open_cb;
  H.on_payload = down_payload;
  H.on_close = one_closed;
  H.on_writable = NULL;
  open_one("down", 10000);
  uint8_t header[5] = {'R'};
  be32(header + 1, (uint32_t)size);
  size_t mode_len;
  use_mode = 1;
  uint8_t *mode = mode_message(header, 5, &mode_len);
  sess_send(&one, mode, mode_len);
  run_until(now_ns() + (uint64_t)warmup * 1000000u, &one_done, NULL, 50);
  CpuMark mark = window_open();
  uint64_t t = now_ns();
  down_counting = 1;
  run_until(t + (uint64_t)window * 1000000u, &one_done, NULL, 50);
  down_counting = 0;
  double seconds = ms_since(t) / 1000;
  if (one_error) fail("down", "the session closed");
  j_begin("down");
  j_num("mbps", (double)down_count / seconds / 1e6);
  j_int("bytes", (long long)down_count);
  j_cpu(mark);
  j_end();
}

/* ------------------------------------------------------------------ latency */

static size_t lat_got, lat_size;
static int lat_back;

static void lat_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)s;
  (void)p;
  (void)op;
  lat_got += n;
  if (lat_got >= lat_size) {
    lat_got -= lat_size;
    lat_back = 1;
  }
}

static void mode_latency(void) {
  long count = opt_long("count", 4000);
  lat_size = (size_t)opt_long("size", 32);
  opts_check();
  H.on_open = one_open_cb;
  H.on_payload = lat_payload;
  H.on_close = one_closed;
  H.on_writable = NULL;
  open_one("latency", 10000);
  uint8_t payload[65536];
  memset(payload, 0x33, lat_size);
  size_t frame_len, mode_len;
  uint8_t *frame = make_frame(2, payload, lat_size, &frame_len);
  uint8_t *mode = mode_message((const uint8_t *)"E", 1, &mode_len);
  if (mode_len) sess_send(&one, mode, mode_len);
  double *samples = calloc((size_t)count, sizeof(double));
  CpuMark mark = cpu_mark();
  for (long i = 0; i < count + 200; i++) {
    if (i == 200) mark = window_open();
    lat_back = 0;
    uint64_t t = now_ns();
    sess_send(&one, frame, frame_len);
    run_until(t + 10000000000u, &lat_back, NULL, 1000);
    if (!lat_back) fail("latency", one_error ? "the session closed" : "an echo took over 10 s");
    if (i >= 200) samples[i - 200] = (double)(now_ns() - t) / 1000;
  }
  double sum = 0;
  for (long i = 0; i < count; i++) sum += samples[i];
  qsort(samples, (size_t)count, sizeof(double), cmp_double);
  j_begin("latency");
  j_num("p50", samples[count / 2]);
  j_num("p99", samples[(long)(count * 0.99)]);
  j_num("mean", sum / (double)count);
  j_cpu(mark);
  j_end();
}

/* ------------------------------------------------------------------ idle */

static void idle_payload(Sess *s, const uint8_t *p, size_t n, int op) {
  (void)p;
  (void)op;
  s->got += n;
  if (s->got >= pool.size && s->echoes++ == 0) pool.started++;
}

static volatile int window_done;
static void window_tick(void) {
  if (window_cmd_reap(WNOHANG)) window_done = 1;
}

static void mode_idle(void) {
  long sessions = opt_long("sessions", 5000);
  long hold = opt_long("hold", 1000);
  long parallel = opt_long("open", 50);
  long opentimeout = opt_long("opentimeout", 30000);
  long size = opt_long("size", 1);
  long echo = opt_long("echo", use_mode);
  opts_check();
  if (size < 1) size = 1;
  struct timespec pause = {0, 300000000};
  nanosleep(&pause, NULL);
  long before = server_memory_kib(NULL);
  pool.n = (int)sessions;
  pool.s = calloc((size_t)sessions, sizeof(Sess));
  for (int i = 0; i < pool.n; i++) pool.s[i].fd = -1;
  pool.parallel = (int)parallel;
  pool.size = (size_t)size;
  H.on_open = echo_open;
  H.on_payload = idle_payload;
  H.on_close = echo_closed;
  H.on_writable = NULL;
  uint64_t t = now_ns();
  pool.open_deadline = t + (uint64_t)opentimeout * 1000000u;
  pool_start_next();
  pool_all_open = 0;
  run_until(pool.open_deadline, &pool_all_open, pool_open_tick, 20);
  for (int i = 0; i < pool.n; i++) {
    Sess *s = &pool.s[i];
    if (s->state == S_CONNECTING || s->state == S_HANDSHAKE) sess_close(s);
  }
  pool.failed = pool.n - pool.opened;
  if (echo) {
    uint8_t *x = malloc((size_t)size);
    memset(x, 'x', (size_t)size);
    size_t frame_len, mode_len, first_len;
    uint8_t *frame = make_frame(2, x, (size_t)size, &frame_len);
    free(x);
    uint8_t *mode = mode_message((const uint8_t *)"E", 1, &mode_len);
    uint8_t *first = concat(mode, mode_len, frame, frame_len, &first_len);
    for (int i = 0; i < pool.n; i++) {
      if (pool.s[i].state == S_OPEN) sess_send(&pool.s[i], first, first_len);
    }
    pool_all_started = 0;
    run_until(now_ns() + 20000000000u, &pool_all_started, pool_start_tick, 20);
  }
  if (window_cmd_start()) {
    /* The sessions stay served while the command runs; it ends by itself (or limit= ends us). */
    window_done = 0;
    run_until(now_ns() + 86400ull * 1000000000u, &window_done, window_tick, 50);
  }
  run_until(now_ns() + (uint64_t)hold * 1000000u, NULL, NULL, 50);
  int processes = 0;
  long after = server_memory_kib(&processes);
  j_begin("idle");
  j_num("kibPerSession", pool.opened ? (double)(after - before) / pool.opened : 0.0 / 0.0);
  j_int("beforeKib", before);
  j_int("afterKib", after);
  j_int("memoryKib", after);
  j_int("processes", processes);
  j_int("sessions", pool.n);
  j_int("opened", pool.opened);
  j_int("failed", pool.failed);
  j_int("started", pool.started);
  j_errors();
  j_end();
}

/* ------------------------------------------------------------------ TCP target */

enum { T_HEAD, T_ECHO, T_SINK, T_SOURCE };

typedef struct Conn {
  int fd, mode;
  uint8_t head[9];
  int headlen;
  /* echo: bytes waiting to be written back */
  uint8_t *pending;
  size_t pending_len, pending_at;
  /* sink */
  uint32_t window, warmup;
  uint64_t first_ns, count;
  int answered;
  /* source */
  uint8_t *block;
  size_t block_len, block_at;
  int out;
} Conn;

#define MAX_SINKS 256
static Conn *sinks[MAX_SINKS];
static int nsinks;

static void conn_set(Conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(Conn *c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  for (int i = 0; i < nsinks; i++) {
    if (sinks[i] == c) {
      sinks[i] = sinks[--nsinks];
      break;
    }
  }
  free(c->pending);
  free(c->block);
  free(c);
}

static void source_pump(Conn *c) {
  for (;;) {
    ssize_t w = write(c->fd, c->block + c->block_at, c->block_len - c->block_at);
    if (w < 0) {
      if (errno == EAGAIN) return;
      conn_close(c);
      return;
    }
    c->block_at = (c->block_at + (size_t)w) % c->block_len;
  }
}

/* Writes `data` back; what the socket does not take waits, and reading pauses until it is out. */
static int echo_back(Conn *c, const uint8_t *data, size_t n) {
  ssize_t w = write(c->fd, data, n);
  if (w < 0) {
    if (errno != EAGAIN) return -1;
    w = 0;
  }
  if ((size_t)w < n) {
    c->pending = malloc(n - (size_t)w);
    memcpy(c->pending, data + w, n - (size_t)w);
    c->pending_len = n - (size_t)w;
    c->pending_at = 0;
    conn_set(c, EPOLLOUT);
  }
  return 0;
}

static void sink_data(Conn *c, size_t n) {
  uint64_t now = now_ns();
  if (c->first_ns == 0) {
    c->first_ns = now;
    if (nsinks < MAX_SINKS) sinks[nsinks++] = c;
  }
  uint64_t from = c->first_ns + (uint64_t)c->warmup * 1000000u;
  if (now >= from && now < from + (uint64_t)c->window * 1000000u) c->count += n;
}

static void sinks_tick(void) {
  uint64_t now = now_ns();
  for (int i = 0; i < nsinks; i++) {
    Conn *c = sinks[i];
    uint64_t end = c->first_ns + (uint64_t)(c->warmup + c->window) * 1000000u;
    if (!c->answered && now >= end) {
      c->answered = 1;
      uint8_t a[8];
      for (int k = 0; k < 8; k++) a[k] = (uint8_t)(c->count >> (56 - 8 * k));
      if (write(c->fd, a, 8) < 0) {
        /* the client is gone */
      }
    }
  }
}

static void start_mode(Conn *c, const uint8_t *rest, size_t n) {
  if (c->head[0] == 'E') {
    c->mode = T_ECHO;
    if (n > 0 && echo_back(c, rest, n) < 0) conn_close(c);
  } else if (c->head[0] == 'S') {
    c->mode = T_SINK;
    c->window = (uint32_t)c->head[1] << 24 | (uint32_t)c->head[2] << 16 |
                (uint32_t)c->head[3] << 8 | c->head[4];
    c->warmup = (uint32_t)c->head[5] << 24 | (uint32_t)c->head[6] << 16 |
                (uint32_t)c->head[7] << 8 | c->head[8];
    if (n > 0) sink_data(c, n);
  } else if (c->head[0] == 'R') {
    c->mode = T_SOURCE;
    c->block_len = (size_t)c->head[1] << 24 | (size_t)c->head[2] << 16 |
                   (size_t)c->head[3] << 8 | c->head[4];
    if (c->block_len == 0) c->block_len = 65536;
    c->block = malloc(c->block_len);
    memset(c->block, 0x5a, c->block_len);
    conn_set(c, EPOLLIN | EPOLLOUT);
    source_pump(c);
  } else {
    conn_close(c);
  }
}

static void target_event(Conn *c, uint32_t events) {
  if (c->mode == T_ECHO && c->pending) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      conn_close(c);
      return;
    }
    ssize_t w = write(c->fd, c->pending + c->pending_at, c->pending_len - c->pending_at);
    if (w < 0) {
      if (errno != EAGAIN) conn_close(c);
      return;
    }
    c->pending_at += (size_t)w;
    if (c->pending_at == c->pending_len) {
      free(c->pending);
      c->pending = NULL;
      conn_set(c, EPOLLIN);
    }
    return;
  }
  if (c->mode == T_SOURCE && (events & EPOLLOUT)) {
    source_pump(c);
    return; /* conn may be closed */
  }
  ssize_t n = read(c->fd, rbuf, sizeof rbuf);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return;
    conn_close(c);
    return;
  }
  if (c->mode == T_ECHO) {
    if (echo_back(c, rbuf, (size_t)n) < 0) conn_close(c);
  } else if (c->mode == T_SINK) {
    sink_data(c, (size_t)n);
  } else if (c->mode == T_HEAD) {
    size_t at = 0;
    while (at < (size_t)n) {
      c->head[c->headlen++] = rbuf[at++];
      int need = c->head[0] == 'S' ? 9 : c->head[0] == 'R' ? 5 : 1;
      if (c->headlen >= need) {
        start_mode(c, rbuf + at, (size_t)n - at);
        return;
      }
    }
  }
}

static void mode_target(void) {
  const char *host = opt_str("host", "127.0.0.1");
  long port = opt_long("port", 0);
  opts_check();
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one_ = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one_, sizeof one_);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
    fprintf(stderr, "loadgen: cannot listen on %s:%ld: %s\n", host, port, strerror(errno));
    exit(1);
  }
  socklen_t len = sizeof a;
  getsockname(lfd, (struct sockaddr *)&a, &len);
  printf("{\"port\":%d}\n", ntohs(a.sin_port));
  fflush(stdout);
  epfd = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event events[512];
  for (;;) {
    int timeout = nsinks > 0 ? 5 : -1;
    int n = epoll_wait(epfd, events, 512, timeout);
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof one_);
          Conn *c = calloc(1, sizeof(Conn));
          c->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        }
      } else {
        target_event(events[i].data.ptr, events[i].events);
      }
    }
    if (nsinks > 0) sinks_tick();
  }
}

/* The same protocol on stdin/stdout, blocking: one session behind websocketd --binary. */
static void mode_stdio(void) {
  opts_check();
  signal(SIGPIPE, SIG_IGN);
  uint8_t head[9];
  size_t have = 0, need = 1;
  ssize_t n;
  size_t at = 0, len = 0;
  while (have < need) {
    n = read(0, rbuf, sizeof rbuf);
    if (n <= 0) return;
    len = (size_t)n;
    at = 0;
    while (at < len && have < need) {
      head[have++] = rbuf[at++];
      need = head[0] == 'S' ? 9 : head[0] == 'R' ? 5 : 1;
    }
  }
  if (head[0] == 'E') {
    if (at < len && write(1, rbuf + at, len - at) < 0) return;
    while ((n = read(0, rbuf, sizeof rbuf)) > 0) {
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(1, rbuf + off, (size_t)(n - off));
        if (w <= 0) return;
        off += w;
      }
    }
  } else if (head[0] == 'S') {
    uint32_t window = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 |
                      (uint32_t)head[3] << 8 | head[4];
    uint32_t warmup = (uint32_t)head[5] << 24 | (uint32_t)head[6] << 16 |
                      (uint32_t)head[7] << 8 | head[8];
    uint64_t first = now_ns(), from = first + (uint64_t)warmup * 1000000u;
    uint64_t end = from + (uint64_t)window * 1000000u, count = 0;
    int answered = 0;
    for (;;) {
      uint64_t now = now_ns();
      if (!answered && now >= end) {
        uint8_t a[8];
        for (int k = 0; k < 8; k++) a[k] = (uint8_t)(count >> (56 - 8 * k));
        if (write(1, a, 8) < 0) return;
        answered = 1;
      }
      struct pollfd p = {.fd = 0, .events = POLLIN};
      int wait = answered ? -1 : (int)((end - now) / 1000000) + 1;
      if (poll(&p, 1, wait) == 0) continue;
      n = read(0, rbuf, sizeof rbuf);
      if (n <= 0) return;
      now = now_ns();
      if (now >= from && now < end) count += (uint64_t)n;
    }
  } else if (head[0] == 'R') {
    size_t size = (size_t)head[1] << 24 | (size_t)head[2] << 16 | (size_t)head[3] << 8 | head[4];
    if (size == 0 || size > sizeof rbuf) size = 65536;
    memset(rbuf, 0x5a, size);
    for (;;) {
      if (write(1, rbuf, size) <= 0) return;
    }
  }
}

/* ------------------------------------------------------------------ main */

static void on_alarm(int sig) {
  (void)sig;
  if (window_child > 0) kill(-window_child, SIGINT);
  static const char text[] = "{\"error\":\"loadgen timed out (limit=)\"}\n";
  if (write(1, text, sizeof text - 1) < 0) _exit(3);
  _exit(3);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: loadgen MODE [key=value ...]; modes: echo, setup, up, down, latency, "
                    "newcomer, idle, target, stdio (see the header of loadgen.c)\n");
    return 2;
  }
  for (int i = 2; i < argc && opt_count < MAX_OPTS; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) {
      fprintf(stderr, "loadgen: '%s' is not key=value\n", argv[i]);
      return 2;
    }
    *eq = 0;
    opt_keys[opt_count] = argv[i];
    opt_vals[opt_count++] = eq + 1;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  const char *mode = argv[1];
  if (strcmp(mode, "target") == 0) mode_target();
  else if (strcmp(mode, "stdio") == 0) mode_stdio();
  else {
    signal(SIGPIPE, SIG_IGN);
    client_init();
    long limit = opt_long("limit", 120000);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)((limit + 999) / 1000));
    if (strcmp(mode, "echo") == 0) mode_echo();
    else if (strcmp(mode, "setup") == 0) mode_setup();
    else if (strcmp(mode, "up") == 0) mode_up();
    else if (strcmp(mode, "down") == 0) mode_down();
    else if (strcmp(mode, "latency") == 0) mode_latency();
    else if (strcmp(mode, "newcomer") == 0) mode_newcomer();
    else if (strcmp(mode, "idle") == 0) mode_idle();
    else {
      fprintf(stderr, "loadgen: unknown mode '%s'\n", mode);
      return 2;
    }
  }
  return 0;
}
