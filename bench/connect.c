/* Connection benchmark client and server for bench/connect.sh. Built static.
 *
 *   connbench server PORT
 *       echo server on 127.0.0.1:PORT, a thread per connection.
 *   connbench MODE N PORT [PROXYPORT]
 *       MODE conn: N times connect + close; the time of each connect is measured.
 *       MODE rr:   N times connect, 64-byte request, 64-byte reply, close.
 *       MODE keep: one connection, N request/reply exchanges of 64 bytes.
 *       With PROXYPORT, every connection goes through an HTTP CONNECT proxy on loopback, and
 *       "connect" includes the CONNECT exchange (what a client must do before it can talk).
 *   Prints one line: MODE n=N median_us=… p90_us=… rate=…/s
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void die(const char *what) {
    fprintf(stderr, "connbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int read_full(int fd, char *buf, int n) {
    int got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static void *echo(void *arg) {
    int c = (int)(long)arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0)
        if (write(c, buf, n) != n) break;
    close(c);
    return NULL;
}

static int serve(int port) {
    struct sockaddr_in a = loopback(port);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) die("listen");
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, echo, (void *)(long)c) != 0) {
            close(c);
            continue;
        }
        pthread_detach(t);
    }
}

/* A connected socket to the server: directly, or through the proxy's CONNECT. */
static int open_conn(int port, int proxy) {
    struct sockaddr_in a = loopback(proxy ? proxy : port);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (proxy) {
        char req[128], resp[1024];
        int n = snprintf(req, sizeof req, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                         port, port);
        if (write(s, req, n) != n) die("proxy write");
        /* Read up to the end of the response head. */
        int got = 0;
        while (got < (int)sizeof resp - 1) {
            ssize_t r = read(s, resp + got, sizeof resp - 1 - got);
            if (r <= 0) die("proxy read");
            got += r;
            resp[got] = 0;
            if (strstr(resp, "\r\n\r\n")) break;
        }
        if (strncmp(resp, "HTTP/1.1 200", 12) && strncmp(resp, "HTTP/1.0 200", 12)) {
            fprintf(stderr, "connbench: proxy refused: %.60s\n", resp);
            exit(1);
        }
    }
    return s;
}

static void exchange(int s) {
    char buf[MSG];
    memset(buf, 'x', sizeof buf);
    if (write(s, buf, MSG) != MSG) die("write");
    if (read_full(s, buf, MSG) < 0) die("read");
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "server")) return serve(atoi(argv[2]));
    if (argc < 4) {
        fprintf(stderr, "usage: connbench server PORT | connbench conn|rr|keep N PORT [PROXYPORT]\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = atoi(argv[2]), port = atoi(argv[3]), proxy = argc > 4 ? atoi(argv[4]) : 0;
    double *lat = calloc(n, sizeof *lat);
    double start = now_us();
    if (!strcmp(mode, "keep")) {
        int s = open_conn(port, proxy);
        for (int i = 0; i < n; i++) {
            double t = now_us();
            exchange(s);
            lat[i] = now_us() - t;
        }
        close(s);
    } else {
        int rr = !strcmp(mode, "rr");
        for (int i = 0; i < n; i++) {
            double t = now_us();
            int s = open_conn(port, proxy);
            if (rr) exchange(s);
            lat[i] = now_us() - t;
            close(s);
        }
    }
    double total = now_us() - start;
    qsort(lat, n, sizeof *lat, cmp);
    printf("%s n=%d median_us=%.1f p90_us=%.1f rate=%.0f\n", mode, n, lat[n / 2], lat[n * 9 / 10],
           n / (total / 1e6));
    return 0;
}
