/* An attacker's toolbox for confinement tests: each command tries one thing from inside the
 * container and prints "ok" or the errno name, exit status 0 either way (so a test can tell
 * "denied" from "the probe did not run"). Built static by the test harness. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long rc) {
    if (rc >= 0) {
        puts("ok");
        return 0;
    }
    const char *n = strerrorname_np(errno);
    puts(n ? n : "errno?");
    return 0;
}


static struct sockaddr_in loop_addr(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int listener(int port, int fastopen) {
    struct sockaddr_in a = loop_addr(port);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1, q = 8;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fastopen) setsockopt(l, IPPROTO_TCP, TCP_FASTOPEN, &q, sizeof q);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 64) < 0) return -1;
    return l;
}

static int accepted(int l) {
    int n = 0, c;
    while ((c = accept(l, NULL, NULL)) >= 0) { n++; close(c); }
    return n;
}

/* The race: one thread flips the destination port between an allowed and a refused one
 * while the main thread connects; no connection may reach the refused port's listener. */
static struct sockaddr_in race_addr;
static volatile int race_stop;
static int race_ports[2];
static void *flipper(void *unused) {
    (void)unused;
    unsigned i = 0;
    volatile unsigned short *port = &race_addr.sin_port;
    while (!race_stop) *port = htons(race_ports[i++ & 1]);
    return NULL;
}

/* intr: a connect that cannot finish (the listener's accept queue is full) is interrupted by
 * SIGALRM, while another thread's connect goes through. */
static int intr_port;
static const char *intr_other = "not-run";
static void on_alarm(int sig) { (void)sig; }
static void *other_connect(void *unused) {
    (void)unused;
    usleep(200000);
    struct sockaddr_in a = loop_addr(intr_port + 1);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    intr_other = connect(c, (struct sockaddr *)&a, sizeof a) == 0 ? "ok" : strerrorname_np(errno);
    return NULL;
}

/* many: threads connecting at once, each N times; counts the connects that succeeded. */
static int many_port, many_n;
static volatile int many_ok;
static void *many_worker(void *unused) {
    (void)unused;
    struct sockaddr_in a = loop_addr(many_port);
    for (int i = 0; i < many_n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a) == 0) __sync_fetch_and_add(&many_ok, 1);
        close(c);
    }
    return NULL;
}

/* dns, dnsflood: raw queries to the container's nameserver (the guard's resolver). */
static int resolver_socket(void) {
    char line[256], ns[64] = "";
    FILE *f = fopen("/etc/resolv.conf", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "nameserver %63s", ns) == 1) break;
    if (f) fclose(f);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    if (!ns[0] || inet_pton(AF_INET, ns, &a.sin_addr) != 1) return -1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return -1;
    return s;
}

/* A query for NAME (type A), with an EDNS OPT record when edns is set. */
static int dns_query(unsigned char *q, unsigned short id, const char *name, int edns) {
    unsigned char h[12] = {id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns ? 1 : 0};
    memcpy(q, h, 12);
    int n = 12;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        int len = dot ? (int)(dot - p) : (int)strlen(p);
        q[n++] = len;
        memcpy(q + n, p, len);
        n += len;
        p += len + (dot ? 1 : 0);
    }
    q[n++] = 0;
    unsigned char tail[4] = {0, 1, 0, 1};
    memcpy(q + n, tail, 4);
    n += 4;
    if (edns) {
        unsigned char opt[11] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
        memcpy(q + n, opt, 11);
        n += 11;
    }
    return n;
}

/* Skip a (possibly compressed) name at r[i]. */
static int skip_name(const unsigned char *r, int n, int i) {
    while (i < n && r[i]) {
        if ((r[i] & 0xc0) == 0xc0) return i + 2;
        i += r[i] + 1;
    }
    return i + 1;
}

/* Print the reply's rcode and its Extended DNS Error, if any: "rcode=5 ede=15:text". */
static void dns_print(const unsigned char *r, int n) {
    if (n < 12) { puts("short"); return; }
    int rcode = r[3] & 0xf, qd = r[4] << 8 | r[5];
    int rrs = (r[6] << 8 | r[7]) + (r[8] << 8 | r[9]) + (r[10] << 8 | r[11]);
    int i = 12;
    for (int k = 0; k < qd; k++) i = skip_name(r, n, i) + 4;
    char ede[300] = "none";
    for (int k = 0; k < rrs && i < n; k++) {
        i = skip_name(r, n, i);
        if (i + 10 > n) break;
        int type = r[i] << 8 | r[i + 1], len = r[i + 8] << 8 | r[i + 9];
        int d = i + 10;
        if (type == 41) {
            for (int o = d; o + 4 <= d + len && o + 4 <= n;) {
                int code = r[o] << 8 | r[o + 1], olen = r[o + 2] << 8 | r[o + 3];
                if (code == 15 && olen >= 2 && o + 4 + olen <= n)
                    snprintf(ede, sizeof ede, "%d:%.*s", r[o + 4] << 8 | r[o + 5], olen - 2,
                             (const char *)r + o + 6);
                o += 4 + olen;
            }
        }
        i = d + len;
    }
    printf("rcode=%d ede=%s\n", rcode, ede);
}

int escape_main(int argc, char **argv);

static const char *race_target;

/* bindrace's other thread: make a link to the target and rename it over the socket's name. */
static void *link_swapper(void *unused) {
    (void)unused;
    for (;;) {
        unlink("/tmp/br.link");
        if (symlink(race_target, "/tmp/br.link") == 0) rename("/tmp/br.link", "/tmp/br.sock");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe CMD [ARG]\n");
        return 2;
    }
    int escaped = escape_main(argc, argv);
    if (escaped >= 0) return escaped;
    const char *cmd = argv[1], *arg = argc > 2 ? argv[2] : "";
    if (!strcmp(cmd, "read")) {
        int fd = open(arg, O_RDONLY);
        if (fd < 0) return report(-1);
        char buf[4096];
        long n = read(fd, buf, sizeof buf);
        if (n < 0) return report(-1);
        printf("ok %ld\n", n);
        return 0;
    }
    if (!strcmp(cmd, "write")) {
        int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return report(-1);
        return report(write(fd, "x", 1));
    }
    if (!strcmp(cmd, "append")) {
        int fd = open(arg, O_WRONLY | O_APPEND);
        if (fd < 0) return report(-1);
        return report(write(fd, "x", 1));
    }
    if (!strcmp(cmd, "exec")) {
        char *const av[] = {(char *)arg, "--help", NULL};
        execv(arg, av);
        return report(-1);
    }
    if (!strcmp(cmd, "kill")) return report(kill(atoi(arg), SIGTERM));
    if (!strcmp(cmd, "connect") || !strcmp(cmd, "name")) {
        /* connect PORT [IP]: listen on IP (default loopback) in the container, then connect.
         * name NAME PORT: the same at the address the container's resolver gives for NAME. */
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (!strcmp(cmd, "name")) {
            struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
            int rc = getaddrinfo(arg, NULL, &hints, &res);
            if (rc != 0) {
                printf("noname\n");
                return 0;
            }
            a.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
            a.sin_port = htons(atoi(argv[3]));
        } else {
            a.sin_port = htons(atoi(arg));
            if (argc > 3) inet_pton(AF_INET, argv[3], &a.sin_addr);
        }
        int l = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0) {
            printf("setup-failed ");
            return report(-1);
        }
        int c = socket(AF_INET, SOCK_STREAM, 0);
        return report(connect(c, (struct sockaddr *)&a, sizeof a));
    }
    if (!strcmp(cmd, "every")) {
        /* every PORT FILE: forever, connect to a loopback listener of our own on PORT every
         * 200 ms and write the result to FILE (atomically), without starting any program. */
        int l = listener(atoi(arg), 0);
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.new", argv[3]);
        for (;;) {
            struct sockaddr_in a = loop_addr(atoi(arg));
            int c = socket(AF_INET, SOCK_STREAM, 0);
            int rc = connect(c, (struct sockaddr *)&a, sizeof a);
            const char *r = rc == 0 ? "ok" : strerrorname_np(errno);
            close(c);
            accepted(l);
            FILE *f = fopen(tmp, "w");
            if (f) { fprintf(f, "%s\n", r); fclose(f); rename(tmp, argv[3]); }
            usleep(200000);
        }
    }
    if (!strcmp(cmd, "io_uring")) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        return report(syscall(SYS_io_uring_setup, 4, &p));
    }
    if (!strcmp(cmd, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(cmd, "userfaultfd")) return report(syscall(SYS_userfaultfd, 0));
    if (!strcmp(cmd, "memfd")) return report(memfd_create("probe", 0));
    if (!strcmp(cmd, "userns")) return report(unshare(CLONE_NEWUSER));
    if (!strcmp(cmd, "ptrace")) return report(ptrace(PTRACE_ATTACH, atoi(arg), 0, 0));
    if (!strcmp(cmd, "dns")) {
        /* dns NAME: one query with EDNS; prints the rcode and any Extended DNS Error. */
        int s = resolver_socket();
        if (s < 0) return report(-1);
        unsigned char q[512], r[1500];
        int n = dns_query(q, 0x4242, arg, 1);
        if (send(s, q, n, 0) < 0) return report(-1);
        int got = recv(s, r, sizeof r, 0);
        if (got < 0) return report(-1);
        dns_print(r, got);
        return 0;
    }
    if (!strcmp(cmd, "dnsflood")) {
        /* dnsflood N: N queries for distinct names, one at a time; prints how many were
         * answered REFUSED. */
        int s = resolver_socket(), total = atoi(arg), refused = 0;
        if (s < 0) return report(-1);
        unsigned char q[512], r[1500];
        char name[64];
        for (int k = 0; k < total; k++) {
            snprintf(name, sizeof name, "f%d.flood.invalid", k);
            int n = dns_query(q, k & 0xffff, name, 0);
            if (send(s, q, n, 0) < 0) continue;
            int got = recv(s, r, sizeof r, 0);
            if (got >= 4 && (r[3] & 0xf) == 5) refused++;
        }
        printf("refused %d\n", refused);
        return 0;
    }
    if (!strcmp(cmd, "rawsock")) return report(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(cmd, "fork")) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        return report(p);
    }
    if (!strcmp(cmd, "udp")) {
        /* udp IP PORT: one datagram with a destination (sendto). */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, arg, &a.sin_addr);
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        return report(sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a));
    }
    if (!strcmp(cmd, "mmsg")) {
        /* mmsg PORT: two datagrams to loopback in one sendmmsg; prints how many went. */
        struct sockaddr_in a = loop_addr(atoi(arg));
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct iovec iov = {.iov_base = "x", .iov_len = 1};
        struct mmsghdr m[2];
        memset(m, 0, sizeof m);
        for (int i = 0; i < 2; i++) {
            m[i].msg_hdr.msg_name = &a;
            m[i].msg_hdr.msg_namelen = sizeof a;
            m[i].msg_hdr.msg_iov = &iov;
            m[i].msg_hdr.msg_iovlen = 1;
        }
        int n = sendmmsg(s, m, 2, 0);
        if (n < 0) return report(-1);
        printf("ok %d %u\n", n, m[1].msg_len);
        return 0;
    }
    if (!strcmp(cmd, "tfo")) {
        /* tfo PORT: TCP fast open (sendto with MSG_FASTOPEN) to a loopback listener. */
        int l = listener(atoi(arg), 1);
        if (l < 0) { printf("setup-failed "); return report(-1); }
        struct sockaddr_in a = loop_addr(atoi(arg));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        return report(sendto(c, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a));
    }
    if (!strcmp(cmd, "nbconnect")) {
        /* nbconnect PORT: non-blocking connect, poll, SO_ERROR. */
        int l = listener(atoi(arg), 0);
        if (l < 0) { printf("setup-failed "); return report(-1); }
        struct sockaddr_in a = loop_addr(atoi(arg));
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
            return report(-1);
        struct pollfd p = {.fd = c, .events = POLLOUT};
        poll(&p, 1, 5000);
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        return report(err ? -1 : 0);
    }
    if (!strcmp(cmd, "unix")) {
        /* unix [DIR]: a unix stream socket in DIR (/tmp), connected to. */
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s/probe-%d.sock", *arg ? arg : "/tmp",
                 getpid());
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0) {
            printf("setup-failed ");
            return report(-1);
        }
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        int rc = connect(c, (struct sockaddr *)&a, sizeof a);
        unlink(a.sun_path);
        return report(rc);
    }
    if (!strcmp(cmd, "peercred")) {
        /* peercred UID: a server bound here as root, a client of uid UID: the uid the server
           sees (SO_PEERCRED) must be the client's, whoever made the calls. */
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "/tmp/peer-%d.sock", getpid());
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || chmod(a.sun_path, 0777) < 0 ||
            listen(l, 1) < 0) {
            printf("setup-failed ");
            return report(-1);
        }
        pid_t child = fork();
        if (child == 0) {
            if (setgid(atoi(arg)) < 0 || setuid(atoi(arg)) < 0) _exit(2);
            int c = socket(AF_UNIX, SOCK_STREAM, 0);
            _exit(connect(c, (struct sockaddr *)&a, sizeof a) < 0 ? 3 : 0);
        }
        int st = 0;
        waitpid(child, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("client-failed-%d\n", WEXITSTATUS(st));
            return 0;
        }
        int s = accept(l, NULL, NULL);
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (s < 0 || getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return report(-1);
        unlink(a.sun_path);
        printf("uid=%d\n", (int)cred.uid);
        return 0;
    }
    if (!strcmp(cmd, "bindrace")) {
        /* bindrace TARGET N: bind /tmp/br.sock N times with umask 0 while another thread keeps
           swapping that name for a link to TARGET: TARGET's mode must never change. */
        umask(0);
        race_target = arg;
        pthread_t t;
        pthread_create(&t, NULL, link_swapper, NULL);
        int n = atoi(argv[3]);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strcpy(a.sun_path, "/tmp/br.sock");
        for (int i = 0; i < n; i++) {
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            bind(s, (struct sockaddr *)&a, sizeof a);
            close(s);
            unlink(a.sun_path);
        }
        return report(0);
    }
    if (!strcmp(cmd, "race")) {
        /* race ALLOWED REFUSED N */
        race_ports[0] = atoi(arg);
        race_ports[1] = atoi(argv[3]);
        int n = atoi(argv[4]);
        int la = listener(race_ports[0], 0), lr = listener(race_ports[1], 0);
        if (la < 0 || lr < 0) { printf("setup-failed "); return report(-1); }
        race_addr = loop_addr(race_ports[0]);
        pthread_t t;
        pthread_create(&t, NULL, flipper, NULL);
        int ok = 0, reached = 0;
        for (int i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&race_addr, sizeof race_addr) == 0) ok++;
            close(c);
            reached += accepted(lr);
            accepted(la);
        }
        race_stop = 1;
        pthread_join(t, NULL);
        usleep(100000);
        reached += accepted(lr);
        accepted(la);
        /* Both outcomes must have happened, or the race was not run. */
        printf("%s allowed=%d refused=%d refused-reached=%d\n",
               reached ? "BREACH" : (ok > 0 && ok < n ? "ok" : "no-race"), ok, n - ok, reached);
        return 0;
    }
    if (!strcmp(cmd, "many")) {
        /* many PORT THREADS N: prints "ok" when all THREADS*N connects succeeded. */
        many_port = atoi(arg);
        int threads = atoi(argv[3]);
        many_n = atoi(argv[4]);
        int l = listener(many_port, 0);
        if (l < 0) { printf("setup-failed "); return report(-1); }
        listen(l, 4096); /* a deeper queue: no SYN may be dropped while we drain it */
        pthread_t t[64];
        int joined[64] = {0}, left = threads < 64 ? threads : 64;
        for (int i = 0; i < left; i++) pthread_create(&t[i], NULL, many_worker, NULL);
        for (int running = left; running > 0;) {
            accepted(l);
            for (int i = 0; i < left; i++)
                if (!joined[i] && pthread_tryjoin_np(t[i], NULL) == 0) { joined[i] = 1; running--; }
            usleep(1000);
        }
        accepted(l);
        if (many_ok == threads * many_n) puts("ok");
        else printf("only %d of %d\n", many_ok, threads * many_n);
        return 0;
    }
    if (!strcmp(cmd, "intr")) {
        /* intr PORT: PORT's listener has backlog 0 and never accepts; PORT+1's accepts. */
        intr_port = atoi(arg);
        struct sockaddr_in a = loop_addr(intr_port);
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 0) < 0 ||
            listener(intr_port + 1, 0) < 0) {
            printf("setup-failed ");
            return report(-1);
        }
        int first = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(first, (struct sockaddr *)&a, sizeof a) < 0) return report(-1);
        struct sigaction sa = {.sa_handler = on_alarm};
        sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: the connect must see EINTR */
        pthread_t t;
        pthread_create(&t, NULL, other_connect, NULL);
        alarm(1);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        int r = connect(c, (struct sockaddr *)&a, sizeof a);
        const char *mine = r == 0 ? "ok" : strerrorname_np(errno);
        pthread_join(t, NULL);
        printf("%s %s\n", mine, intr_other);
        return 0;
    }
    fprintf(stderr, "unknown probe %s\n", cmd);
    return 2;
}
