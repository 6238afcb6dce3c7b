# Node installer image (integration/kubernetes/): the runtime binary, the shipped policies and
# the install script that copies them onto a node and registers the containerd handler. Built
# here without any registry, from the cargo build and a local base holding a shell:
#   cargo build --release
#   tar -C <busybox-static rootfs> -c . | docker import - localhost/nemosandbox-base:latest
#   docker build -t localhost/nemosandbox-installer:latest .
# BASE is any image with /bin/sh, cp, mkdir, grep (and nsenter for RESTART_CONTAINERD=1).
ARG BASE=localhost/nemosandbox-base:latest
FROM ${BASE}
COPY target/release/nemosandbox /opt/nemosandbox/bin/nemosandbox
COPY policies/ /opt/nemosandbox/policies/
COPY integration/kubernetes/install.sh integration/kubernetes/containerd-config.toml integration/kubernetes/config.yaml /opt/nemosandbox/
ENTRYPOINT ["/bin/sh", "/opt/nemosandbox/install.sh"]
