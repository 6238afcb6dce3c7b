//! The network guard's red-team round, from inside real containers: each bypass an
//! adversarial review found, tried as a hostile workload would, in init and in an exec'd
//! process, beside its allowed twin. `scripts/escape-runc.sh` runs the same attacks under
//! runc, where they succeed.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::net::*;
use common::probe::*;
use common::*;

/// A policy letting /bin/probe (and only it) reach loopback `ports`, with a writable /tmp.
fn probe_policy(rt: &Runtime, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    policy(
        rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
             network_policies:\n  local:\n    endpoints:\n      - host: 127.0.0.1\n        ports: [{}]\n\
             \x20   binaries:\n      - {{ path: /bin/probe }}\n",
            ports.join(", ")
        ),
    )
}

fn kill9(pid: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A started container running `b` under `policy` (and runtime flags `extra`).
struct Running<'a> {
    rt: &'a Runtime,
    id: String,
}

impl<'a> Running<'a> {
    fn start(rt: &'a Runtime, policy: &str, extra: &[&str], b: &Bundle) -> Running<'a> {
        let id = unique("esc");
        let mut args = vec!["--policy", policy];
        args.extend_from_slice(extra);
        args.extend(["create", "--bundle", b.path().to_str().unwrap(), &id]);
        rt.ok(&args);
        rt.ok(&["start", &id]);
        wait_until(|| rt.status(&id) == "running");
        Running { rt, id }
    }
    fn init(&self) -> i32 {
        self.rt.state(&self.id)["pid"].as_i64().unwrap() as i32
    }
    /// A file in the container, read from the host.
    fn file(&self, path: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/root{path}", self.init())).unwrap_or_default()
    }
    /// `exec ID sh -c SCRIPT`: stdout.
    fn exec_sh(&self, script: &str) -> String {
        let out = self.rt.run(&["exec", &self.id, "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn audit(&self) -> String {
        std::fs::read_to_string(self.rt.audit_file(&self.id)).unwrap_or_default()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.rt.remove(&self.id);
        assert_nothing_left(self.rt, &self.id);
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not reached in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[path = "escape/bounds.rs"]
mod bounds;
#[path = "escape/descriptors.rs"]
mod descriptors;
#[path = "escape/identity.rs"]
mod identity;
#[path = "escape/revocation.rs"]
mod revocation;
#[path = "escape/sandbox.rs"]
mod sandbox;
