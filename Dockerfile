# Carrier image for installing nemosandbox on a node, built without any registry:
#   cargo build --release && docker build -t localhost/nemosandbox:dev .
# It holds the runtime binary and the shipped policies; `docker create` + `docker cp` (or an
# init container) copies them onto the host. The node installer (DaemonSet) builds on this.
FROM scratch
COPY target/release/nemosandbox /usr/local/bin/nemosandbox
COPY policies/ /usr/share/nemosandbox/policies/
COPY hooks/ /usr/share/nemosandbox/hooks/
