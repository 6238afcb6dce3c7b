//! The network guard from inside real containers: every denial beside its allowed
//! twin, for init and exec'd processes, through the guard's resolver talking to a real DNS
//! server, for script entries, across a live policy update and with the guard killed.
//! Servers listen on loopback or in a test network namespace, never on any other address.

mod common;

use std::net::Ipv4Addr;

use common::net::*;
use common::probe::*;
use common::*;

/// A policy allowing `/bin/probe` (and only it) to reach loopback ports `allowed`.
fn net_policy(rt: &Runtime, allowed: &[u16]) -> String {
    let ports: Vec<String> = allowed.iter().map(u16::to_string).collect();
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

#[test]
fn network_guard_allows_listed_binary_and_destination_only() {
    let rt = Runtime::new();
    let pol = net_policy(
        &rt,
        &[18451, 18453, 18455, 18457, 18459, 18465, 18466, 18468],
    );
    // One endpoint in audit mode: anything may connect there, and each pass is recorded. One
    // binary glob matching nothing yet.
    std::fs::write(
        &pol,
        std::fs::read_to_string(&pol).unwrap().replace(
            "    binaries:",
            "      - { host: 127.0.0.1, port: 18467, enforcement: audit }\n    binaries:",
        ) + "      - { path: \"/tmp/late/*\" }\n",
    )
    .unwrap();
    let script = [
        p("listed", "probe connect 18451"),
        p("port", "probe connect 18452"),
        "cp /bin/probe /tmp/copy; ln -s /bin/probe /tmp/link; ".to_string(),
        p("copy", "/tmp/copy connect 18451"),
        // A binary matching a glob that appears after start: found when the lookup misses.
        "mkdir /tmp/late; cp /bin/probe /tmp/late/tool; ".to_string(),
        p("late", "/tmp/late/tool connect 18451"),
        p("link", "/tmp/link connect 18451"),
        p("tfo", "probe tfo 18453"),
        p("tfo-port", "probe tfo 18454"),
        p("mmsg", "probe mmsg 18455"),
        p("mmsg-port", "probe mmsg 18456"),
        p("nb", "probe nbconnect 18457"),
        p("nb-port", "probe nbconnect 18458"),
        p("dns", "probe udp 127.0.0.1 53"),
        p("unix", "probe unix"),
        p("race", "probe race 18459 18460 2000 | cut -d' ' -f1"),
        p("sh", "/tmp/copy udp 127.0.0.1 18455"),
        p("intr", "probe intr 18465"),
        p("many", "probe many 18468 8 100"),
        p("audit-mode", "/tmp/copy connect 18467"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let (out, audit) = run_keep(&rt, &pol, &b);
    expect(
        &out,
        &[
            ("listed", "ok"),
            ("port", "EACCES"),
            ("copy", "EACCES"),
            ("late", "ok"),
            ("link", "ok"),
            ("tfo", "ok"),
            ("tfo-port", "EACCES"),
            ("mmsg", "ok 2 1"),
            ("mmsg-port", "EACCES"),
            ("nb", "ok"),
            ("nb-port", "EACCES"),
            ("dns", "EACCES"),
            ("unix", "ok"),
            ("race", "ok"),
            ("sh", "EACCES"),
            // A blocking connect that cannot finish is interrupted as in the kernel, and
            // another thread's connect meanwhile is not held up behind it.
            ("intr", "EINTR ok"),
            // Eight threads connecting at once, 800 connects: every one goes through.
            ("many", "ok"),
            ("audit-mode", "ok"),
        ],
    );
    assert!(
        audit.contains("\"allowed (audit)\"") && audit.contains("127.0.0.1:18467"),
        "{audit}"
    );
}

#[test]
fn network_guard_holds_for_exec_and_fails_closed_without_the_guard() {
    let rt = Runtime::new();
    let pol = net_policy(&rt, &[18461]);
    // Init keeps trying the allowed port, so its result after the guard dies can be read. It
    // starts no program: once the guard is gone, no program can start.
    let b = bundle(&["probe", "every", "18463", "/tmp/last"]);
    host_network(&b);
    let pol = {
        let text = std::fs::read_to_string(&pol)
            .unwrap()
            .replace("ports: [18461]", "ports: [18461, 18463]");
        std::fs::write(&pol, text).unwrap();
        pol
    };
    let id = unique("guard");
    rt.ok(&create_args(&pol, &b, &id));
    rt.ok(&["start", &id]);
    wait_until(|| rt.status(&id) == "running");
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", id.as_str()];
        a.extend_from_slice(args);
        rt.run(&a)
    };
    let ok = exec(&["probe", "connect", "18461"]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");
    let denied = exec(&["probe", "connect", "18462"]);
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "EACCES");
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap_or_default();
    assert!(
        audit.contains("127.0.0.1:18462") && audit.contains("\"denied\""),
        "{audit}"
    );
    let init: i32 = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    let last = format!("/proc/{init}/root/tmp/last");
    wait_until(|| std::fs::read_to_string(&last).is_ok_and(|s| s.trim() == "ok"));

    let helper = helper_of(&id).expect("the guard runs in the helper process");
    nix_kill(helper);
    wait_until(|| !std::path::Path::new(&format!("/proc/{helper}")).exists());
    // The running container keeps running, and its connects now fail.
    wait_until(|| std::fs::read_to_string(&last).is_ok_and(|s| s.trim() == "ENOSYS"));
    assert_eq!(rt.status(&id), "running");

    // A new process cannot start unguarded.
    let out = exec(&["probe", "connect", "18461"]);
    assert!(!out.status.success(), "exec without a guard must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network guard"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

/// The guard pins the policy's binaries before the workload runs: an init that swaps an
/// allowed binary first thing is refused for it, however long pinning takes (a glob over
/// 15 000 files, listed first, holds it for most of a second here), while the binary it left
/// alone still connects. Answering the init before the pinning let the swapped file through.
#[test]
fn network_guard_pins_binaries_before_the_workload_runs() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         \x20   \"/work/**\": \"rwx\"\nnetwork_policies:\n  local:\n    endpoints:\n\
         \x20     - host: 127.0.0.1\n        ports: [18471]\n    binaries:\n\
         \x20     - { path: \"/opt/many/*\" }\n      - { path: /work/tool }\n\
         \x20     - { path: /work/good }\n",
    );
    let script = [
        "mv /work/evil /work/tool; ".to_string(),
        p("swapped", "/work/tool connect 18471"),
        p("kept", "/work/good connect 18471"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let r = b.path().join("rootfs");
    // Copies, not links: each its own file.
    std::fs::create_dir_all(r.join("work")).unwrap();
    for name in ["tool", "good", "evil"] {
        std::fs::copy(probe(), r.join("work").join(name)).unwrap();
    }
    let many = r.join("opt/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..15_000 {
        std::fs::write(many.join(format!("f{i}")), b"").unwrap();
    }
    let (out, _) = run_keep(&rt, &pol, &b);
    expect(&out, &[("swapped", "EACCES"), ("kept", "ok")]);
}

fn nix_kill(pid: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `run --keep` a bundle under `policy`: the container's output and its audit stream; then
/// delete it and check nothing is left.
fn run_keep(rt: &Runtime, policy: &str, b: &Bundle) -> (String, String) {
    let id = unique("net");
    let out = rt.run_kept_with(&["--policy", policy], b, &id);
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap_or_default();
    rt.remove(&id);
    assert_nothing_left(rt, &id);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "run failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, audit)
}

/// With a real upstream: the resolver answers only names an endpoint matches,
/// forwards those to the nameserver the image names, and only addresses it answered with
/// (public ones, unless `allowed_ips` says otherwise) can be reached.
#[test]
fn network_guard_resolver_answers_only_policy_names() {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let dns = TestDns::start(&net.path(), t(53), &nemo_test_names());
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  named:\n    endpoints:\n      - { host: ok.nemo.test, port: 18471 }\n\
         \x20     - { host: \"*.glob.nemo.test\", port: 18471 }\n\
         \x20     - { host: priv.nemo.test, port: 18471 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let script = [
        p("ip-first", "probe connect 18471 203.0.113.10"),
        p("name", "probe name ok.nemo.test 18471"),
        p("ip-after", "probe connect 18471 203.0.113.10"),
        p("name-port", "probe name ok.nemo.test 18472"),
        p("glob", "probe name a.glob.nemo.test 18471"),
        p("glob-deep", "probe name a.b.glob.nemo.test 18471"),
        p("other", "probe name other.nemo.test 18471"),
        p("other-ip", "probe connect 18471 203.0.113.12"),
        p("private", "probe name priv.nemo.test 18471"),
        "cp /bin/probe /tmp/copy; ".to_string(),
        p("copy", "/tmp/copy name ok.nemo.test 18471"),
        p("dns-out", "probe udp 203.0.113.53 53"),
        p("resolv", "grep -c nameserver /etc/resolv.conf"),
        p("upstream", "grep -c 203.0.113.53 /etc/resolv.conf"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    net.join(&b);
    let (out, audit) = run_keep(&rt, &pol, &b);
    expect(
        &out,
        &[
            ("ip-first", "EACCES"),
            ("name", "ok"),
            ("ip-after", "ok"),
            ("name-port", "EACCES"),
            ("glob", "ok"),
            ("glob-deep", "noname"),
            ("other", "noname"),
            ("other-ip", "EACCES"),
            ("private", "EACCES"),
            ("copy", "EACCES"),
            ("dns-out", "EACCES"),
            // The container sees one nameserver, the guard's, not the upstream.
            ("resolv", "1"),
            ("upstream", "0"),
        ],
    );
    // Refused names never left the container; allowed ones were forwarded.
    let asked = dns.asked();
    assert!(asked.iter().any(|n| n == "ok.nemo.test"), "{asked:?}");
    assert!(
        !asked
            .iter()
            .any(|n| n == "other.nemo.test" || n == "a.b.glob.nemo.test"),
        "{asked:?}"
    );
    // Each refusal is an audit event naming what was refused.
    for needle in [
        "other.nemo.test",
        "203.0.113.12:18471",
        "127.0.0.5:18471",
        "not named by allowed_ips",
        "/tmp/copy",
    ] {
        assert!(
            audit.contains(needle),
            "no audit event for {needle}: {audit}"
        );
    }
}

/// Node, from the host, bound into a busybox image: the interpreter of the script entries.
fn with_node(b: &Bundle) {
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for p in ["/usr/bin/node", "/lib/x86_64-linux-gnu", "/lib64"] {
            mounts.push(serde_json::json!({
                "destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]
            }));
        }
    });
}

/// Script entries: the policy lists `/app/ok.js`; node running that file may
/// connect, node running other code (another file, `-e`, injected options or libraries) may
/// not.
#[test]
fn network_guard_matches_script_entries_as_interpreter_and_file() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  app:\n    endpoints:\n      - { host: 127.0.0.1, port: 18491 }\n\
         \x20   binaries:\n      - { path: /app/ok.js }\n",
    );
    let code = NODE_CONNECT.replace('\n', " ");
    let script = [
        p("script", "node /app/ok.js 18491"),
        p("direct", "/app/ok.js 18491"),
        p("port", "node /app/ok.js 18492"),
        p("other-file", "node /app/other.js 18491"),
        p("inline", &format!("node -e \"{code}\" 18491")),
        p(
            "options",
            "NODE_OPTIONS=--no-warnings node /app/ok.js 18491",
        ),
        p(
            "preload",
            "LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6 node /app/ok.js 18491",
        ),
        p("probe", "probe connect 18491"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    with_node(&b);
    let app = b.path().join("rootfs/app");
    std::fs::create_dir_all(&app).unwrap();
    for f in ["ok.js", "other.js"] {
        std::fs::write(app.join(f), format!("#!/usr/bin/node\n{NODE_CONNECT}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(app.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (out, audit) = run_keep(&rt, &pol, &b);
    expect(
        &out,
        &[
            ("script", "ok"),
            ("direct", "ok"),
            ("port", "EACCES"),
            ("other-file", "EACCES"),
            ("inline", "EACCES"),
            ("options", "EACCES"),
            ("preload", "EACCES"),
            ("probe", "EACCES"),
        ],
    );
    assert!(
        audit.contains("NODE_OPTIONS") && audit.contains("LD_PRELOAD"),
        "{audit}"
    );
}

/// `policy update` adds and removes a preset's network policies in a running
/// container, returns once the guard runs them, refuses bad changes without touching what is
/// enforced, and fails (leaving the old policy in place) when the guard is gone.
#[test]
fn policy_update_changes_a_running_containers_egress() {
    let rt = Runtime::new();
    let base = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n",
    );
    let preset = localnet_preset(rt.root.path(), 18481);
    let preset = preset.to_str().unwrap();
    let b = bundle(&["sleep", "1000"]);
    host_network(&b);
    let id = unique("upd");
    rt.ok(&create_args(&base, &b, &id));
    rt.ok(&["start", &id]);
    wait_until(|| rt.status(&id) == "running");
    let connect = || {
        let out = rt.run(&["exec", &id, "probe", "connect", "18481"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let hash = |rt: &Runtime| {
        rt.state(&id)["annotations"]["dev.nemosandbox.policy.sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(connect(), "EACCES");
    let before = hash(&rt);

    let out = rt.ok(&["policy", "update", &id, "--preset", preset]);
    assert!(out.contains("network policy generation"), "{out}");
    assert_eq!(connect(), "ok");
    let st = rt.state(&id);
    assert!(
        st["annotations"]["dev.nemosandbox.policy.sources"]
            .as_str()
            .unwrap()
            .ends_with("localnet.yaml"),
        "{st}"
    );
    let added = hash(&rt);
    assert_ne!(added, before);

    // Bad changes fail, say why, and change nothing.
    for (args, why) in [
        (vec!["--preset", preset], "already applied"),
        (vec!["--preset", "no-such"], "unknown policy"),
        (vec!["--remove", "npm"], "not applied"),
        (vec!["--remove", &base], "baseline"),
    ] {
        let mut a = vec!["policy", "update", id.as_str()];
        a.extend(args);
        let err = rt.fails(&a);
        assert!(err.contains(why), "{a:?}: {err}");
    }
    assert_eq!(hash(&rt), added);
    assert_eq!(connect(), "ok");

    rt.ok(&["policy", "update", &id, "--remove", "localnet"]);
    assert_eq!(connect(), "EACCES");
    assert_eq!(hash(&rt), before, "removing the preset restores the policy");

    // No guard, no update: the command fails and what is recorded stays what was enforced.
    let helper = helper_of(&id).expect("the guard runs in the helper process");
    nix_kill(helper);
    wait_until(|| !std::path::Path::new(&format!("/proc/{helper}")).exists());
    let err = rt.fails(&["policy", "update", &id, "--preset", preset]);
    assert!(err.contains("network guard"), "{err}");
    assert_eq!(hash(&rt), before);
    let eff = std::fs::read(rt.own_dir(&id).effective()).unwrap();
    assert_eq!(nemosandbox::policy::merge::sha256_hex(&eff), before);
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}
