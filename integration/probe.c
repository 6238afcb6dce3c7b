/* An attacker's toolbox for confinement tests: each command tries one thing from inside the
 * container and prints "ok" or the errno name, exit status 0 either way (so a test can tell
 * "denied" from "the probe did not run"). Built static by the test harness. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
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

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe CMD [ARG]\n");
        return 2;
    }
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
    if (!strcmp(cmd, "connect")) {
        /* Listen on loopback in the container, then connect: only Landlock decides. */
        int port = atoi(arg);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
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
    if (!strcmp(cmd, "rawsock")) return report(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(cmd, "fork")) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        return report(p);
    }
    fprintf(stderr, "unknown probe %s\n", cmd);
    return 2;
}
