//! The attacker's probe (`integration/probe.c`, built static once per test binary) and the
//! bundles, policies and result parsing of the tests that run it inside containers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::*;

/// Compile `sources` (under integration/) with gcc and `flags` into `name` in the test
/// target directory, once per test run.
fn built(
    cell: &'static OnceLock<PathBuf>,
    name: &str,
    flags: &[&str],
    sources: &[&str],
    libs: &[&str],
) -> &'static Path {
    cell.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&tmp)
            .args(sources.iter().map(|s| dir.join(s)))
            .args(libs)
            .arg("-lpthread")
            .status()
            .expect("gcc (apt-get install gcc libc6-dev)");
        assert!(st.success(), "building {name} failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// The probe, static.
pub fn probe() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    built(
        &P,
        "probe",
        &["-static", "-O2"],
        &["probe.c", "probe_escape.c"],
        &[],
    )
}

/// The same probe linked dynamically: what the loader's variables act on.
pub fn probe_dynamic() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    built(
        &P,
        "probe-dyn",
        &["-O2"],
        &["probe.c", "probe_escape.c"],
        &[],
    )
}

/// A library whose constructor connects (`PRELOAD_PORT`), for `LD_PRELOAD` attacks.
pub fn preload_library() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    built(
        &P,
        "preload.so",
        &["-O2", "-shared", "-fPIC"],
        &["preload.c"],
        &[],
    )
}

/// A static HTTPS client linked with OpenSSL (`integration/tls_client.c`): a binary that
/// ignores proxy variables, as Go and Rust clients do.
pub fn tls_client() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    built(
        &P,
        "tls-client",
        &["-static", "-O2"],
        &["tls_client.c"],
        &["-lssl", "-lcrypto"],
    )
}

/// A busybox bundle with the probe and the files the conformance cases talk about.
pub fn bundle(args: &[&str]) -> Bundle {
    let b = Bundle::busybox(args);
    let r = b.path().join("rootfs");
    install_binary(probe(), &r.join("bin/probe"));
    for d in [
        "sandbox/.ssh",
        "var/log",
        "home/a/.config",
        "h/.ssh",
        "d/secret",
        "w",
        "t",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (f, content) in [
        ("sandbox/.ssh/id_rsa", "secret"),
        ("etc/shadow", "secret"),
        ("var/log/secret1", "secret"),
        ("var/log/other", "data"),
        ("home/a/.config/c", "secret"),
        ("home/a/other", "data"),
        ("h/.ssh/k.json", "secret"),
        ("h/a.json", "data"),
        ("d/secret/s", "data"),
        ("w/f", "data"),
        ("t/tool", "#!/bin/sh\necho tool-ran\n"),
    ] {
        std::fs::write(r.join(f), content).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("t/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    b
}

/// Share the host's network namespace: a new one has its loopback down, and only Landlock
/// should decide whether a loopback connect goes through.
pub fn host_network(b: &Bundle) {
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
    });
}

pub fn run_bundle(rt: &Runtime, policy: Option<&str>, b: &Bundle, env: &[(&str, &str)]) -> String {
    let id = unique("conf");
    let mut args: Vec<&str> = Vec::new();
    if let Some(p) = policy {
        args.extend(["--policy", p]);
    }
    args.extend(["run", "--bundle", b.path().to_str().unwrap(), &id]);
    let mut cmd = rt.command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_within(cmd, Duration::from_secs(60));
    assert_nothing_left(rt, &id);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "run failed ({:?}): {stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Lines `key: value` printed by scripts built with `probe_line`.
pub fn results(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Shell for one labelled probe: `label: <result>`.
pub fn p(label: &str, cmd: &str) -> String {
    format!("echo \"{label}: $({cmd} 2>&1)\"; ")
}

pub fn expect(out: &str, want: &[(&str, &str)]) {
    let r = results(out);
    // Every case reports on its own: one wrong answer does not hide the others.
    let wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| r.get(*k).map(String::as_str) != Some(*v))
        .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", r.get(*k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n  {}\nfull output:\n{out}",
        wrong.len(),
        want.len(),
        wrong.join("\n  ")
    );
}

/// A preset letting /bin/probe (only) reach 127.0.0.1:`port`, written to `dir/localnet.yaml`.
pub fn localnet_preset(dir: &Path, port: u16) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("localnet.yaml");
    std::fs::write(
        &path,
        format!(
            "preset: {{ name: localnet, description: probe to loopback }}\n\
             network_policies:\n  local:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {port} }}\n\
             \x20   binaries:\n      - {{ path: /bin/probe }}\n"
        ),
    )
    .unwrap();
    path
}

/// Bind the host's python3, node and curl (and the libraries they load) read-only into the
/// bundle, with `/usr/bin/python3` naming python3.11 as on the host.
pub fn with_interpreters(b: &Bundle) {
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for p in [
            "/usr/bin/node",
            "/usr/bin/python3.11",
            "/usr/bin/curl",
            "/usr/lib/python3.11",
            "/lib/x86_64-linux-gnu",
            "/lib64",
        ] {
            mounts.push(serde_json::json!({
                "destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]
            }));
        }
    });
    let usr_bin = b.path().join("rootfs/usr/bin");
    std::fs::create_dir_all(&usr_bin).unwrap();
    let _ = std::os::unix::fs::symlink("python3.11", usr_bin.join("python3"));
}
