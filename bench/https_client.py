"""HTTPS benchmark client and server for bench/https.sh.

  client.py serve PORT CERT KEY        keep-alive HTTPS server on 127.0.0.1 (threads)
  client.py conn N PORT [PROXY_PORT]   N new TLS connections, one GET each
  client.py keep N PORT [PROXY_PORT]   N GETs on one keep-alive connection
The client prints `MODE median_us=… rate=…` (per request); PROXY_PORT tunnels through an
HTTP CONNECT proxy on 127.0.0.1.
"""
import http.client
import http.server
import socket
import socketserver
import ssl
import statistics
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise delayed ACKs dominate every row.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_GET(self):
        body = b"x" * 64
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler) as srv:
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        srv.serve_forever()


def connection(port, proxy):
    ctx = ssl.create_default_context()
    if proxy:
        c = http.client.HTTPSConnection("127.0.0.1", proxy, context=ctx, timeout=10)
        # The certificate names 127.0.0.1, which the tunnel target is.
        c.set_tunnel("127.0.0.1", port)
    else:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def get(c):
    c.request("GET", "/bench")
    r = c.getresponse()
    r.read()
    if r.status != 200:
        raise SystemExit(f"status {r.status}")


def main():
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    mode, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    proxy = int(sys.argv[4]) if len(sys.argv) > 4 else None
    times = []
    start = time.perf_counter()
    keep = connection(port, proxy) if mode == "keep" else None
    for _ in range(n):
        t = time.perf_counter()
        if keep:
            get(keep)
        else:
            c = connection(port, proxy)
            get(c)
            c.close()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    print(f"{mode} median_us={statistics.median(times) * 1e6:.1f} rate={n / total:.1f}")


main()
