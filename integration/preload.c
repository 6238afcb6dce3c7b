/* A library the attacker preloads into an allowed binary: its constructor connects to the
 * loopback port in PRELOAD_PORT (a listener of its own) and prints the outcome, from inside
 * the allowed process. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

__attribute__((constructor)) static void preloaded(void) {
    const char *p = getenv("PRELOAD_PORT");
    if (!p) return;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(p))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 4);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(c, (struct sockaddr *)&a, sizeof a);
    printf("preload: %s\n", rc == 0 ? "ok" : strerrorname_np(errno));
    fflush(stdout);
}
