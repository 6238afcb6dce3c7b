/* Escape attempts for integration/escape.rs: the attacks an adversarial review tried against
 * the network guard, each as a probe subcommand that prints a verdict. Linked into the probe
 * (probe.c calls escape_main first). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef SOCK_PACKET
#define SOCK_PACKET 10
#endif
#ifndef IPV6_2292RTHDR
#define IPV6_2292RTHDR 5
#endif

static const char *err_name(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "errno?";
}

static int say(long rc) {
    puts(rc >= 0 ? "ok" : err_name(errno));
    return 0;
}

static struct sockaddr_in lo(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ---- swap: a descriptor swapped under a call the guard let continue ------------------- */

enum { M_TFO, M_UDP, M_SENDMSG, M_CONNECT };
static int sw_mode, sw_port, sw_fd, sw_unix, sw_udp;
static volatile int sw_stop;
static volatile long sw_tally[5]; /* ok, EINVAL, EACCES, EPERM, other */

static void *sw_flipper(void *u) {
    (void)u;
    while (!sw_stop) {
        int s = sw_mode == M_UDP || sw_mode == M_SENDMSG ? sw_udp : socket(AF_INET, SOCK_STREAM, 0);
        dup2(s, sw_fd);
        if (s != sw_udp) close(s);
        dup2(sw_unix, sw_fd);
    }
    return NULL;
}

static void *sw_caller(void *u) {
    (void)u;
    struct sockaddr_in a = lo(sw_port);
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
    while (!sw_stop) {
        long r;
        switch (sw_mode) {
        case M_TFO: r = sendto(sw_fd, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a); break;
        case M_UDP: r = sendto(sw_fd, "x", 1, 0, (struct sockaddr *)&a, sizeof a); break;
        case M_SENDMSG: r = sendmsg(sw_fd, &m, 0); break;
        default: r = connect(sw_fd, (struct sockaddr *)&a, sizeof a); break;
        }
        int slot = r >= 0 ? 0 : errno == EINVAL ? 1 : errno == EACCES ? 2 : errno == EPERM ? 3 : 4;
        __sync_fetch_and_add(&sw_tally[slot], 1);
    }
    return NULL;
}

/* swap MODE REFUSED_PORT SECONDS: prints BREACH when anything reached the refused port's
 * listener, else "ok" when the kernel fence refused at least one swapped call (EPERM: the
 * race was won by the attacker and still failed), "no-race" otherwise. */
static int swap(const char *mode, int port, int seconds) {
    sw_mode = !strcmp(mode, "tfo") ? M_TFO : !strcmp(mode, "udp") ? M_UDP
            : !strcmp(mode, "sendmsg") ? M_SENDMSG : M_CONNECT;
    sw_port = port;
    struct sockaddr_in a = lo(port);
    int tcp = sw_mode == M_TFO || sw_mode == M_CONNECT;
    int l = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK, 0), one = 1, q = 64;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (tcp) setsockopt(l, IPPROTO_TCP, TCP_FASTOPEN, &q, sizeof q);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || (tcp && listen(l, 4096) < 0)) {
        printf("setup-failed %s\n", err_name(errno));
        return 0;
    }
    sw_unix = socket(AF_UNIX, SOCK_DGRAM, 0);
    sw_udp = socket(AF_INET, SOCK_DGRAM, 0);
    sw_fd = dup(sw_unix);
    pthread_t f, c;
    pthread_create(&f, NULL, sw_flipper, NULL);
    pthread_create(&c, NULL, sw_caller, NULL);
    long reached = 0;
    double end = now() + seconds;
    char buf[64];
    while (now() < end) {
        struct pollfd p = {.fd = l, .events = POLLIN};
        poll(&p, 1, 50);
        int s;
        if (tcp)
            while ((s = accept(l, NULL, NULL)) >= 0) { reached++; close(s); }
        else
            while (recv(l, buf, sizeof buf, 0) >= 0) reached++;
    }
    sw_stop = 1;
    pthread_join(f, NULL);
    pthread_join(c, NULL);
    usleep(100000);
    int s;
    if (tcp)
        while ((s = accept(l, NULL, NULL)) >= 0) { reached++; close(s); }
    else
        while (recv(l, buf, sizeof buf, 0) >= 0) reached++;
    printf("%s reached=%ld ok=%ld EINVAL=%ld EACCES=%ld EPERM=%ld other=%ld\n",
           reached ? "BREACH" : sw_tally[3] ? "ok" : "no-race", reached, sw_tally[0], sw_tally[1],
           sw_tally[2], sw_tally[3], sw_tally[4]);
    return 0;
}

/* ---- a second notification listener ---------------------------------------------------- */

static long new_listener(void) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static const char *try_connect(int port) {
    struct sockaddr_in a = lo(port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    const char *r = connect(c, (struct sockaddr *)&a, sizeof a) == 0 ? "ok" : err_name(errno);
    close(c);
    return r;
}

static const char *try_udp(int port) {
    struct sockaddr_in a = lo(port);
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    const char *r = sendto(c, "x", 1, 0, (struct sockaddr *)&a, sizeof a) >= 0 ? "ok" : err_name(errno);
    close(c);
    return r;
}

static const char *try_tfo(int port) {
    struct sockaddr_in a = lo(port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    const char *r = sendto(c, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a) >= 0 ? "ok" : err_name(errno);
    close(c);
    return r;
}

static void guard_checks(FILE *out, int port) {
    long fd = new_listener();
    const char *nl = fd >= 0 ? "ok" : err_name(errno);
    fprintf(out, "notify=%s connect=%s udp=%s tfo=%s", nl, try_connect(port), try_udp(port),
            try_tfo(port));
    fprintf(out, " other-connect=%s other-udp=%s other-tfo=%s\n", try_connect(port + 1),
            try_udp(port + 1), try_tfo(port + 1));
}

/* afterguard TRIGGER OUT PORT: with the guard alive, then after TRIGGER exists (the test
 * killed the guard), try to install a notification listener and reach PORT (allowed) and
 * PORT+1 (refused); results in OUT.before and OUT. Starts no program. */
static int afterguard(const char *trigger, const char *out, int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1, q = 8;
    struct sockaddr_in a = lo(port);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(l, IPPROTO_TCP, TCP_FASTOPEN, &q, sizeof q);
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 64);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    bind(u, (struct sockaddr *)&a, sizeof a);
    char path[4096];
    snprintf(path, sizeof path, "%s.before", out);
    FILE *f = fopen(path, "w");
    guard_checks(f, port);
    fclose(f);
    struct stat st;
    while (stat(trigger, &st) != 0) usleep(50000);
    snprintf(path, sizeof path, "%s.new", out);
    f = fopen(path, "w");
    guard_checks(f, port);
    fclose(f);
    rename(path, out);
    pause();
    return 0;
}

/* ---- sockets and options the guard never sees ----------------------------------------- */

static int sockopt(const char *what) {
    int six = strstr(what, "IPV6") != NULL;
    int s = socket(six ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    unsigned char opt[40] = {0};
    long r;
    if (!strcmp(what, "IPV6_RTHDR")) {
        /* A segment routing header with one segment: sent to that segment first. */
        opt[0] = 0; opt[1] = 2; opt[2] = 4; opt[3] = 0; opt[4] = 0;
        r = setsockopt(s, IPPROTO_IPV6, IPV6_RTHDR, opt, 24);
    } else if (!strcmp(what, "IPV6_2292RTHDR")) {
        r = setsockopt(s, IPPROTO_IPV6, IPV6_2292RTHDR, opt, 24);
    } else if (!strcmp(what, "IP_OPTIONS")) {
        opt[0] = 0x83; opt[1] = 7; opt[2] = 4; /* loose source route, one hop */
        r = setsockopt(s, IPPROTO_IP, IP_OPTIONS, opt, 8);
    } else if (!strcmp(what, "IP_RETOPTS")) {
        opt[0] = 0x83; opt[1] = 7; opt[2] = 4;
        r = setsockopt(s, IPPROTO_IP, IP_RETOPTS, opt, 8);
    } else {
        int ttl = 32;
        r = setsockopt(s, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    }
    return say(r);
}

/* cmsg KIND PORT: one UDP datagram to loopback PORT carrying a source-route control message. */
static int cmsg(const char *kind, int port) {
    int six = !strcmp(kind, "IPV6_RTHDR");
    int s = socket(six ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a4 = lo(port);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    char ctl[CMSG_SPACE(40)];
    memset(ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    if (six) { m.msg_name = &a6; m.msg_namelen = sizeof a6; }
    else { m.msg_name = &a4; m.msg_namelen = sizeof a4; }
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (six) {
        c->cmsg_level = IPPROTO_IPV6; c->cmsg_type = IPV6_RTHDR; c->cmsg_len = CMSG_LEN(24);
        unsigned char *d = CMSG_DATA(c); d[1] = 2; d[2] = 2; d[3] = 1;
    } else if (!strcmp(kind, "IP_RETOPTS")) {
        c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_RETOPTS; c->cmsg_len = CMSG_LEN(8);
        unsigned char *d = CMSG_DATA(c); d[0] = 0x83; d[1] = 7; d[2] = 4;
    } else {
        c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_TTL; c->cmsg_len = CMSG_LEN(sizeof(int));
        *(int *)CMSG_DATA(c) = 32;
    }
    m.msg_controllen = c->cmsg_len;
    return say(sendmsg(s, &m, 0));
}

/* unspec PORT: a UDP datagram whose destination has family AF_UNSPEC (IPv4 UDP takes its
 * address and port all the same) to a loopback listener of our own. */
static int unspec(int port) {
    struct sockaddr_in a = lo(port);
    int l = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) { printf("setup-failed\n"); return 0; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_family = AF_UNSPEC;
    long r = sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    usleep(100000);
    char b;
    int got = recv(l, &b, 1, 0) >= 0;
    printf("%s%s\n", r >= 0 ? "ok" : err_name(e), got ? " REACHED" : "");
    return 0;
}

/* sockopt32 NAME: the 32-bit setsockopt (int 0x80) on a 64-bit process's inet socket. */
static int sockopt32(const char *what) {
    int six = strstr(what, "IPV6") != NULL;
    int s = socket(six ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    unsigned char *opt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    if (opt == MAP_FAILED) { printf("setup-failed\n"); return 0; }
    long level = IPPROTO_IP, name = IP_TTL, len = 4;
    if (!strcmp(what, "IP_OPTIONS")) { opt[0] = 0x83; opt[1] = 7; opt[2] = 4; name = IP_OPTIONS; len = 8; }
    else if (!strcmp(what, "IPV6_RTHDR")) { opt[1] = 2; opt[2] = 4; level = IPPROTO_IPV6; name = IPV6_RTHDR; len = 24; }
    else { *(int *)opt = 32; }
    long r;
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(366L), "b"((long)s), "c"(level), "d"(name), "S"((long)(unsigned long)opt), "D"(len)
                     : "memory");
    if (r < 0) { errno = -r; return say(-1); }
    return say(0);
}

/* execas ARGV0 PATH [ARG...]: exec PATH with argv[0] ARGV0. */
static int execas(int argc, char **argv) {
    char **av = calloc(argc, sizeof *av);
    av[0] = argv[2];
    for (int i = 4; i < argc; i++) av[i - 3] = argv[i];
    execv(argv[3], av);
    return say(-1);
}

/* ---- floods ----------------------------------------------------------------------------- */

/* trickle IP N SECONDS: N TCP connections to IP:53, a byte now and then on each. */
static int trickle(const char *ip, int n, int seconds) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int *fds = calloc(n, sizeof *fds), opened = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fds[i] < 0) break;
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS) opened++;
    }
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0) send(fds[i], "\0", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        usleep(500000);
    }
    printf("opened=%d\n", opened);
    return 0;
}

static void on_alarm(int sig) { (void)sig; }

/* blocked PORT N: a send that waits on a full buffer, interrupted by a signal, N times. */
static int blocked(int port, int n) {
    struct sockaddr_in a = lo(port);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1, small = 4096;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 8) < 0) {
        printf("setup-failed %s\n", err_name(errno));
        return 0;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("connect %s\n", err_name(errno));
        return 0;
    }
    static char junk[65536];
    while (send(c, junk, sizeof junk, MSG_DONTWAIT) > 0) {}
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART */
    int eintr = 0, other = 0;
    struct iovec iov = {.iov_base = junk, .iov_len = 4096};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    /* A repeating timer: a one-shot one that fired before the call began to wait (a
     * process descheduled for 5 ms, as under emulation) would leave the send blocked for
     * good, guard or no guard. */
    struct itimerval t = {.it_interval = {.tv_usec = 5000}, .it_value = {.tv_usec = 5000}};
    setitimer(ITIMER_REAL, &t, NULL);
    for (int i = 0; i < n; i++) {
        if (sendmsg(c, &m, 0) < 0 && errno == EINTR) eintr++;
        else other++;
    }
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("eintr=%d other=%d\n", eintr, other);
    return 0;
}

static void *count_replies(void *arg) {
    int s = *(int *)arg;
    char buf[512];
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long n = 0;
    while (recv(s, buf, sizeof buf, 0) > 0) n++;
    return (void *)n;
}

static int dns_query(unsigned char *q, int id, const char *name, int questions, const char *second) {
    int n = 0;
    q[n++] = id >> 8; q[n++] = id; q[n++] = 1; q[n++] = 0; /* RD */
    q[n++] = 0; q[n++] = questions; q[n++] = 0; q[n++] = 0; q[n++] = 0; q[n++] = 0; q[n++] = 0; q[n++] = 0;
    for (int k = 0; k < questions; k++) {
        const char *p = k == 0 ? name : second;
        while (*p) {
            const char *dot = strchr(p, '.');
            int len = dot ? dot - p : (int)strlen(p);
            q[n++] = len;
            memcpy(q + n, p, len);
            n += len;
            p += len + (dot ? 1 : 0);
        }
        q[n++] = 0;
        q[n++] = 0; q[n++] = 1; q[n++] = 0; q[n++] = 1; /* A, IN */
    }
    return n;
}

/* names IP N: N queries for names no policy allows, as fast as they go. */
static int names(const char *ip, int n) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    pthread_t t;
    pthread_create(&t, NULL, count_replies, &s);
    unsigned char q[512];
    int sent = 0;
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "n%d.flood.invalid", i);
        int len = dns_query(q, i & 0xffff, name, 1, NULL);
        if (sendto(s, q, len, 0, (struct sockaddr *)&a, sizeof a) == len) sent++;
    }
    void *replies;
    pthread_join(t, &replies);
    printf("sent=%d replies=%ld\n", sent, (long)replies);
    return 0;
}

/* dns2 IP NAME1 NAME2: one query with two questions; prints the reply's rcode. */
static int dns2(const char *ip, const char *n1, const char *n2) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char q[512], r[1500];
    int len = dns_query(q, 0x4242, n1, 2, n2);
    if (sendto(s, q, len, 0, (struct sockaddr *)&a, sizeof a) != len) return say(-1);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long n = recv(s, r, sizeof r, 0);
    if (n < 4) return say(-1);
    static const char *codes[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};
    int rc = r[3] & 0xf;
    printf("%s answers=%d\n", rc < 6 ? codes[rc] : "other", (r[6] << 8) | r[7]);
    return 0;
}

/* bigmmsg PORT ROUNDS: sendmmsg of 1024 messages of 1 MiB each to loopback PORT (UDP). */
static int bigmmsg(int port, int rounds) {
    struct sockaddr_in a = lo(port);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    size_t big = 1 << 20;
    char *data = calloc(1, big);
    struct iovec iov = {.iov_base = data, .iov_len = big};
    struct mmsghdr *m = calloc(1024, sizeof *m);
    for (int i = 0; i < 1024; i++) {
        m[i].msg_hdr.msg_name = &a;
        m[i].msg_hdr.msg_namelen = sizeof a;
        m[i].msg_hdr.msg_iov = &iov;
        m[i].msg_hdr.msg_iovlen = 1;
    }
    long r = 0;
    for (int i = 0; i < rounds; i++) r = sendmmsg(s, m, 1024, 0);
    return say(r);
}

/* ---- revocation -------------------------------------------------------------------------- */

/* hold A B SECONDS OUT: connections to loopback A and B (listeners of our own), kept busy;
 * OUT gets, for each, "up" or the error and when (seconds after start) it ended. */
static int hold(int pa, int pb, int seconds, const char *out) {
    int ports[2] = {pa, pb}, c[2], l[2];
    double ended[2] = {0, 0};
    const char *why[2] = {"up", "up"};
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in a = lo(ports[i]);
        int one = 1;
        l[i] = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        bind(l[i], (struct sockaddr *)&a, sizeof a);
        listen(l[i], 4);
        c[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c[i], (struct sockaddr *)&a, sizeof a) < 0) { why[i] = err_name(errno); ended[i] = -1; }
    }
    int peer[2] = {accept(l[0], NULL, NULL), accept(l[1], NULL, NULL)};
    (void)peer;
    double start = now();
    char path[4096];
    while (now() - start < seconds) {
        for (int i = 0; i < 2; i++) {
            if (ended[i] != 0) continue;
            char b;
            if (send(c[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) {
                why[i] = err_name(errno); ended[i] = now() - start;
            } else if (recv(c[i], &b, 1, MSG_DONTWAIT) == 0) {
                why[i] = "EOF"; ended[i] = now() - start;
            }
        }
        snprintf(path, sizeof path, "%s.new", out);
        FILE *f = fopen(path, "w");
        fprintf(f, "a=%s at=%.2f b=%s at=%.2f\n", why[0], ended[0], why[1], ended[1]);
        fclose(f);
        rename(path, out);
        usleep(20000);
    }
    return 0;
}

/* ---- fdtable: a thread with a descriptor table of its own ------------------------------ */

/* fdtable PORT own|shared: the main thread holds unix sockets at descriptors 100 and 101; a
 * second thread puts a UDP socket at 100 and a TCP socket at 101 and sends/connects to
 * loopback PORT. "own": the thread is cloned without CLONE_FILES (a thread with a copy of
 * the table: no capability needed, unlike unshare). Without PIDFD_THREAD (Linux 6.9) the
 * guard reads the main thread's table: the call must not be judged on the unix socket and
 * run on the inet one. Prints "udp=R tcp=R". */
struct fdt {
    int port;
    volatile int done;
    int e1, e2;
};

/* A system call without libc: -errno on failure, and no errno written. */
static long rsys(long n, long a1, long a2, long a3, long a4, long a5, long a6) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static int fdt_thread(void *p) {
    /* Raw system calls only: this thread has no TLS of its own (libc's errno is the main
     * thread's). */
    struct fdt *t = p;
    struct sockaddr_in a = lo(t->port);
    long u = rsys(SYS_socket, AF_INET, SOCK_DGRAM, 0, 0, 0, 0);
    long c = rsys(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    rsys(SYS_dup2, u, 100, 0, 0, 0, 0);
    rsys(SYS_dup2, c, 101, 0, 0, 0, 0);
    long r1 = rsys(SYS_sendto, 100, (long)"x", 1, 0, (long)&a, sizeof a);
    long r2 = rsys(SYS_connect, 101, (long)&a, sizeof a, 0, 0, 0);
    t->e1 = r1 >= 0 ? 0 : (int)-r1;
    t->e2 = r2 >= 0 ? 0 : (int)-r2;
    __atomic_store_n(&t->done, 1, __ATOMIC_SEQ_CST);
    rsys(SYS_exit, 0, 0, 0, 0, 0, 0);
    return 0;
}

static int fdtable(int port, const char *mode) {
    dup2(socket(AF_UNIX, SOCK_DGRAM, 0), 100);
    dup2(socket(AF_UNIX, SOCK_STREAM, 0), 101);
    struct fdt t = {.port = port};
    int flags = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    if (strcmp(mode, "own")) flags |= CLONE_FILES;
    size_t size = 1 << 16;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (clone(fdt_thread, stack + size, flags, &t) < 0) {
        printf("clone=%s\n", err_name(errno));
        return 0;
    }
    while (!__atomic_load_n(&t.done, __ATOMIC_SEQ_CST)) usleep(1000);
    printf("udp=%s tcp=%s\n", t.e1 ? err_name(t.e1) : "ok", t.e2 ? err_name(t.e2) : "ok");
    return 0;
}

int escape_main(int argc, char **argv) {
    const char *cmd = argv[1];
    const char *a2 = argc > 2 ? argv[2] : "", *a3 = argc > 3 ? argv[3] : "", *a4 = argc > 4 ? argv[4] : "";
    if (!strcmp(cmd, "swap")) return swap(a2, atoi(a3), atoi(a4));
    if (!strcmp(cmd, "notify")) return say(new_listener());
    if (!strcmp(cmd, "afterguard")) return afterguard(a2, a3, atoi(a4));
    if (!strcmp(cmd, "sock")) return say(socket(atoi(a2), atoi(a3), atoi(a4)));
    if (!strcmp(cmd, "sockopt")) return sockopt(a2);
    if (!strcmp(cmd, "cmsg")) return cmsg(a2, atoi(a3));
    if (!strcmp(cmd, "trickle")) return trickle(a2, atoi(a3), atoi(a4));
    if (!strcmp(cmd, "blocked")) return blocked(atoi(a2), atoi(a3));
    if (!strcmp(cmd, "names")) return names(a2, atoi(a3));
    if (!strcmp(cmd, "dns2")) return dns2(a2, a3, a4);
    if (!strcmp(cmd, "bigmmsg")) return bigmmsg(atoi(a2), atoi(a3));
    if (!strcmp(cmd, "unspec")) return unspec(atoi(a2));
    if (!strcmp(cmd, "sockopt32")) return sockopt32(a2);
    if (!strcmp(cmd, "execas") && argc > 3) return execas(argc, argv);
    if (!strcmp(cmd, "fdtable")) return fdtable(atoi(a2), a3);
    if (!strcmp(cmd, "hold")) return hold(atoi(a2), atoi(a3), atoi(a4), argc > 5 ? argv[5] : "/tmp/hold");
    return -1;
}
