/* A static HTTPS client that knows nothing of proxies: what a Go or Rust binary does.
 * It resolves HOST, connects, verifies the server as HOST against the default roots
 * (SSL_CERT_FILE when set) and sends one request.
 * Usage: tls_client HOST PORT METHOD PATH; prints the status code, `tls-error` or
 * `errnoN`. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static int dial(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    int fd = socket(res->ai_family, res->ai_socktype, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        int e = errno;
        freeaddrinfo(res);
        return -e;
    }
    freeaddrinfo(res);
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT METHOD PATH\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *method = argv[3], *path = argv[4];
    int fd = dial(host, argv[2]);
    if (fd < 0) {
        printf("errno%d\n", -fd);
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_default_verify_paths(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        printf("tls-error\n");
        return 1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path, host);
    if (SSL_write(ssl, req, n) != n) {
        printf("tls-error\n");
        return 1;
    }
    char resp[64] = {0};
    int got = 0, r;
    while (got < (int)sizeof resp - 1 && (r = SSL_read(ssl, resp + got, sizeof resp - 1 - got)) > 0)
        got += r;
    char status[4] = {0};
    if (sscanf(resp, "HTTP/1.%*d %3s", status) != 1) {
        printf("no-response\n");
        return 1;
    }
    printf("%s\n", status);
    return 0;
}
