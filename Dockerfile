# Node installer image (integration/kubernetes/): the runtime binary (the shipped policies are
# built into it), the node configuration and the install script, which checks the node with
# `nemosandbox doctor`, copies the binary onto it and registers the containerd handler with
# `nemosandbox install containerd`. The binary is fully static, so the script can run it from
# this image. Built here without any registry, from the
# static build and a local base holding a shell:
#   scripts/build-static.sh
#   tar -C <busybox-static rootfs> -c . | docker import - localhost/nemosandbox-base:latest
#   docker build -t localhost/nemosandbox-installer:0.1.0 .
# The tag is the crate's version (Cargo.toml), as in integration/kubernetes/*.yaml.
# BASE is any image with /bin/sh, cp, mv, rm, rmdir, mkdir, chmod, cmp, wc and sleep (and
# nsenter for RESTART_CONTAINERD=1). BIN is the binary to ship, relative to the repository,
# which is the build context (.dockerignore lets only the default path through).
ARG BASE=localhost/nemosandbox-base:latest
FROM ${BASE}
ARG BIN=target/x86_64-unknown-linux-gnu/release/nemosandbox
COPY ${BIN} /opt/nemosandbox/bin/nemosandbox
COPY integration/kubernetes/install.sh integration/kubernetes/config.yaml /opt/nemosandbox/
ENTRYPOINT ["/bin/sh", "/opt/nemosandbox/install.sh"]
