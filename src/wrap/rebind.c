/*
 * rebind.so: moves a program's bind() of one TCP port to a loopback port, so websockify can
 * listen on the port the program asked for and proxy to it (wrap mode, `-- COMMAND`).
 *
 * Loaded with LD_PRELOAD. A bind() of a stream socket to port REBIND_OLD_PORT, on any address,
 * becomes a bind() to REBIND_NEW_PORT on loopback:
 *   - AF_INET                    -> 127.0.0.1:NEW
 *   - AF_INET6, dual-stack       -> [::ffff:127.0.0.1]:NEW (reachable at 127.0.0.1:NEW)
 *   - AF_INET6 with IPV6_V6ONLY  -> [::1]:NEW
 * Every other bind() is passed through unchanged. Upstream's rebind.c handles IPv4 only.
 *
 * When REBIND_PARENT_PID names the parent of the process loading this library (websockify
 * itself, not a grandchild that inherited the variable), the process asks the kernel for SIGTERM
 * when that parent dies, so a killed proxy never leaves the wrapped command running.
 * No effect on statically linked or setuid programs (the dynamic loader ignores LD_PRELOAD).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

static int parse_port(const char *text) {
    char *end;
    long value;
    if (text == NULL || *text == '\0') return 0;
    value = strtol(text, &end, 10);
    if (*end != '\0' || value <= 0 || value > 65535) return 0;
    return (int)value;
}

__attribute__((constructor)) static void follow_parent(void) {
    const char *text = getenv("REBIND_PARENT_PID");
    char *end;
    long parent;
    if (text == NULL || *text == '\0') return;
    parent = strtol(text, &end, 10);
    if (*end != '\0' || parent <= 1 || (long)getppid() != parent) return;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return;
    /* The parent may have died between the check and prctl(). */
    if ((long)getppid() != parent) raise(SIGTERM);
}

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function real_bind;
    int old_port, new_port, type = 0, v6only = 0;
    socklen_t option_length = sizeof(int);
    if (real_bind == NULL) {
        real_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
        if (real_bind == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    old_port = parse_port(getenv("REBIND_OLD_PORT"));
    new_port = parse_port(getenv("REBIND_NEW_PORT"));
    if (address == NULL || old_port == 0 || new_port == 0) return real_bind(fd, address, length);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &option_length) != 0 || type != SOCK_STREAM) {
        return real_bind(fd, address, length);
    }
    if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in moved;
        memcpy(&moved, address, sizeof(moved));
        if (ntohs(moved.sin_port) != old_port) return real_bind(fd, address, length);
        moved.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        moved.sin_port = htons((unsigned short)new_port);
        return real_bind(fd, (const struct sockaddr *)&moved, sizeof(moved));
    }
    if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 moved;
        memcpy(&moved, address, sizeof(moved));
        if (ntohs(moved.sin6_port) != old_port) return real_bind(fd, address, length);
        option_length = sizeof(int);
        if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &option_length) != 0) v6only = 1;
        if (v6only) {
            moved.sin6_addr = in6addr_loopback;
        } else {
            /* ::ffff:127.0.0.1, so the proxy reaches the program at 127.0.0.1. */
            memset(&moved.sin6_addr, 0, sizeof(moved.sin6_addr));
            moved.sin6_addr.s6_addr[10] = 0xff;
            moved.sin6_addr.s6_addr[11] = 0xff;
            moved.sin6_addr.s6_addr[12] = 127;
            moved.sin6_addr.s6_addr[15] = 1;
        }
        moved.sin6_port = htons((unsigned short)new_port);
        moved.sin6_scope_id = 0;
        moved.sin6_flowinfo = 0;
        return real_bind(fd, (const struct sockaddr *)&moved, sizeof(moved));
    }
    return real_bind(fd, address, length);
}
