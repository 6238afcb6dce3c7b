//! The audit trail from real containers: denials kept in the node sink after the container
//! is gone, readable with `nemosandbox audit`; a flood of refused names bounded and merged;
//! a sink that cannot be written changing no decision; `policy explain` agreeing with the
//! guard case by case; `--follow` across a rotation; the workload told why a name was
//! refused.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::net::*;
use common::probe::*;
use common::*;

/// A node configuration whose audit sink is `dir/audit.jsonl` (rotated at `max_size`).
fn node_config(rt: &Runtime, dir: &Path, extra: &str) -> String {
    let cfg = rt.root.path().join(format!("{}.yaml", unique("node")));
    std::fs::write(
        &cfg,
        format!(
            "audit:\n  path: {}\n{extra}",
            dir.join("audit.jsonl").display()
        ),
    )
    .unwrap();
    cfg.to_string_lossy().into_owned()
}

/// `/bin/probe` may reach loopback `port`; nothing else may reach anything.
fn probe_policy(rt: &Runtime, port: u16) -> String {
    policy(
        rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
             network_policies:\n  local:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {port} }}\n\
             \x20   binaries:\n      - {{ path: /bin/probe }}\n"
        ),
    )
}

/// A bundle on the host's network with a resolv.conf, so the guard's resolver answers it (a
/// refused name never reaches the upstream named here).
fn guarded_bundle(args: &[&str]) -> Bundle {
    let b = bundle(args);
    host_network(&b);
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .unwrap();
    b
}

/// Create and start `b` as `id` under `pol`; its script writes `/tmp/out` and then
/// `/tmp/done`. Returns the init pid and what the script wrote.
fn start_and_read(rt: &Runtime, pol: &str, b: &Bundle, id: &str) -> (i64, String) {
    rt.ok(&create_args(pol, b, id));
    rt.ok(&["start", id]);
    let init: i64 = rt.state(id)["pid"].as_i64().unwrap();
    wait_until(|| Path::new(&format!("/proc/{init}/root/tmp/done")).exists());
    let out = std::fs::read_to_string(format!("/proc/{init}/root/tmp/out")).unwrap();
    (init, out)
}

/// `nemosandbox --config CFG audit ARGS…` as JSON records.
fn audit_json(rt: &Runtime, cfg: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--config", cfg, "audit", "--format", "json"];
    a.extend_from_slice(args);
    rt.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every line of `files` checked against docs/audit.schema.json by an independent validator.
fn assert_schema_valid(files: &[PathBuf]) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit.schema.json");
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  n = 0\n\
                  for f in sys.argv[2:]:\n\
                  \x20   for line in open(f):\n\
                  \x20       jsonschema.validate(json.loads(line), schema)\n\
                  \x20       n += 1\n\
                  print(n)\n";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .args(files)
        .output()
        .expect("python3 with jsonschema (apt-get install python3-jsonschema)");
    assert!(
        out.status.success(),
        "schema validation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n > 0, "no lines validated");
}

#[path = "audit/explain.rs"]
mod explain;
#[path = "audit/sink.rs"]
mod sink;
#[path = "audit/trail.rs"]
mod trail;
