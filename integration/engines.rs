//! Real engines drive the runtime: podman, dockerd and containerd (see engines module docs).

mod common;
