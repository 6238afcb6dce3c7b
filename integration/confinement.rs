//! Filesystem and process confinement from inside real containers (SPEC §5, §6): each denial
//! beside its allowed twin, in the init process and in exec'd processes, with a static probe
//! doing what an attacker would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The probe, compiled once per test run.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/probe.c");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("gcc (apt-get install gcc libc6-dev)");
        assert!(st.success(), "building the probe failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// A busybox bundle with the probe and the files the conformance cases talk about.
fn bundle(args: &[&str]) -> Bundle {
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
fn host_network(b: &Bundle) {
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "network");
    });
}

/// Write a policy document next to the runtime root and return its path.
fn policy(rt: &Runtime, yaml: &str) -> String {
    let p = rt.root.path().join(format!("{}.yaml", unique("policy")));
    std::fs::write(&p, yaml).unwrap();
    p.to_string_lossy().into_owned()
}

/// A baseline with just a permission map (plus x on /bin so the probe and sh can run).
fn map_policy(rt: &Runtime, map: &[(&str, &str)]) -> String {
    let mut y =
        String::from("version: 1\nfilesystem_policy:\n  permissions:\n    \"/bin/**\": \"r-x\"\n");
    for (k, v) in map {
        y.push_str(&format!("    \"{k}\": \"{v}\"\n"));
    }
    policy(rt, &y)
}

/// `run` a shell script in a fresh container under `policy` (None = built-in default).
fn run_script(rt: &Runtime, policy: Option<&str>, script: &str) -> String {
    let b = bundle(&["sh", "-c", script]);
    run_bundle(rt, policy, &b, &[])
}

fn run_bundle(rt: &Runtime, policy: Option<&str>, b: &Bundle, env: &[(&str, &str)]) -> String {
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
fn results(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Shell for one labelled probe: `label: <result>`.
fn p(label: &str, cmd: &str) -> String {
    format!("echo \"{label}: $({cmd} 2>&1)\"; ")
}

fn expect(out: &str, want: &[(&str, &str)]) {
    let r = results(out);
    for (k, v) in want {
        assert_eq!(
            r.get(*k).map(String::as_str),
            Some(*v),
            "{k}: want {v:?}; full output:\n{out}"
        );
    }
}

/// One conformance case: run `probes` (label, shell command, expected result) in a container
/// under the permission `map`.
fn check_case(rt: &Runtime, map: &[(&str, &str)], probes: &[(&str, &str, &str)]) {
    let pol = map_policy(rt, map);
    let script: String = probes.iter().map(|(l, cmd, _)| p(l, cmd)).collect();
    let out = run_script(rt, Some(&pol), &script);
    let want: Vec<(&str, &str)> = probes.iter().map(|(l, _, w)| (*l, *w)).collect();
    expect(&out, &want);
}

#[test]
fn conformance_cases_inside_containers() {
    let rt = Runtime::new();
    let tmpfs = "grep -c ' /tmp tmpfs' /proc/mounts";
    // 1: root read-only, fresh writable /tmp.
    check_case(
        &rt,
        &[("/**", "r--")],
        &[
            ("tmp", "probe write /tmp/a", "ok"),
            ("etc", "probe write /etc/x", "EROFS"),
            ("read", "probe read /etc/passwd | cut -c1-2", "ok"),
            ("tmpfs", tmpfs, "1"),
        ],
    );
    // 2: restrictive: only system dirs, no /tmp, nothing else of the image.
    check_case(
        &rt,
        &[],
        &[
            ("etc", "test -d /etc && echo visible", "visible"),
            ("etc-read", "probe read /etc/passwd", "EACCES"),
            (
                "tmp",
                "test -e /tmp && echo present || echo absent",
                "absent",
            ),
            (
                "sandbox",
                "test -e /sandbox && echo present || echo absent",
                "absent",
            ),
        ],
    );
    // 3: /tmp named read-only: no tmpfs, not writable.
    check_case(
        &rt,
        &[("/**", "r--"), ("/tmp/**", "r--")],
        &[
            ("tmpfs", tmpfs, "0"),
            ("tmp", "probe write /tmp/a", "EROFS"),
        ],
    );
    // 4: /tmp read-write is the image's /tmp, bound (the file shows up in the image).
    let pol = map_policy(&rt, &[("/**", "r--"), ("/tmp/**", "rw-")]);
    let script = [p("tmp", "probe write /tmp/from-inside"), p("tmpfs", tmpfs)].concat();
    let b = bundle(&["sh", "-c", &script]);
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(&out, &[("tmp", "ok"), ("tmpfs", "0")]);
    assert!(b.path().join("rootfs/tmp/from-inside").exists());
    // 5: masked directory under a writable root.
    check_case(
        &rt,
        &[("/**", "rwx"), ("/sandbox/.ssh/", "---")],
        &[
            ("key", "probe read /sandbox/.ssh/id_rsa", "ENOENT"),
            ("list", "ls -A /sandbox/.ssh | wc -l", "0"),
            (
                "plant",
                "probe write /sandbox/.ssh/authorized_keys",
                "EROFS",
            ),
            ("sandbox", "probe write /sandbox/ok", "ok"),
        ],
    );
    // 6: masked file: an empty read-only file over it.
    check_case(
        &rt,
        &[("/**", "r--"), ("/etc/shadow", "---")],
        &[
            ("shadow", "probe read /etc/shadow", "ok 0"),
            ("shadow-write", "probe append /etc/shadow", "EACCES"),
            ("passwd", "probe read /etc/passwd | cut -c1-2", "ok"),
        ],
    );
    // 7: last-component glob: each match masked, the directory readable.
    check_case(
        &rt,
        &[("/**", "r--"), ("/var/log/secret*", "---")],
        &[
            ("secret", "probe read /var/log/secret1", "ok 0"),
            ("other", "probe read /var/log/other", "ok 4"),
            ("dir", "ls /var/log | wc -l", "2"),
        ],
    );
    // 8: the deeper literal prefix wins over a broader glob.
    check_case(
        &rt,
        &[
            ("/h/**", "rwx"),
            ("/h/**/*.json", "rwx"),
            ("/h/.ssh/**", "---"),
        ],
        &[
            ("ssh-json", "probe read /h/.ssh/k.json", "ENOENT"),
            ("json", "probe read /h/a.json", "ok 4"),
        ],
    );
    // 9: read-only child under a read-write parent.
    check_case(
        &rt,
        &[("/d/**", "rw-"), ("/d/secret/**", "r--")],
        &[
            ("parent", "probe write /d/new", "ok"),
            ("child", "probe write /d/secret/s", "EROFS"),
            ("child-read", "probe read /d/secret/s", "ok 4"),
        ],
    );
    // 10: mid-path glob: every existing match masked.
    check_case(
        &rt,
        &[("/**", "r--"), ("/home/*/.config/**", "---")],
        &[
            ("config", "probe read /home/a/.config/c", "ENOENT"),
            ("home", "probe read /home/a/other", "ok 4"),
        ],
    );
    // 11: write without read.
    check_case(
        &rt,
        &[("/**", "r--"), ("/w/**", "-w-")],
        &[
            ("write", "probe write /w/new", "ok"),
            ("read", "probe read /w/f", "EACCES"),
            ("elsewhere", "probe read /var/log/other", "ok 4"),
        ],
    );
    // 12: execute only with x.
    check_case(
        &rt,
        &[("/**", "r--"), ("/t/**", "r-x")],
        &[("tool", "/t/tool", "tool-ran")],
    );
    check_case(
        &rt,
        &[("/**", "r--"), ("/t/**", "r--")],
        &[("tool", "probe exec /t/tool", "EACCES")],
    );
    // 13: a malformed permission string: lint error, no container.
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/x\": \"rwxoops\"\n",
    );
    let b = bundle(&["true"]);
    let id = unique("bad");
    let err = rt.fails(&[
        "--policy",
        &pol,
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(err.contains(".yaml:4:"), "{err}");
    assert_nothing_left(&rt, &id);
}

/// The checks every process of a default-policy container must pass.
fn default_checks() -> String {
    [
        p("root", "probe write /etc/x"),
        p("tmp", "probe write /tmp/x"),
        p("io_uring", "probe io_uring"),
        p("bpf", "probe bpf"),
        p("userfaultfd", "probe userfaultfd"),
        p("userns", "probe userns"),
        p("rawsock", "probe rawsock"),
        p("ptrace", "probe ptrace 1"),
        p("procmem", "probe append /proc/1/mem"),
        p("memfd", "probe memfd"),
        p("fork", "probe fork"),
        p("tcp", "probe connect 8080"),
        p(
            "filters",
            "grep Seccomp_filters /proc/self/status | cut -f2",
        ),
    ]
    .concat()
}

const DEFAULT_EXPECT: &[(&str, &str)] = &[
    ("root", "EROFS"),
    ("tmp", "ok"),
    ("io_uring", "EPERM"),
    ("bpf", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("userns", "EPERM"),
    ("rawsock", "EPERM"),
    ("ptrace", "EPERM"),
    ("procmem", "EACCES"),
    ("memfd", "ok"),
    ("fork", "ok"),
    ("tcp", "EACCES"),
    ("filters", "3"),
];

#[test]
fn default_policy_confines_init_and_exec_alike() {
    let rt = Runtime::new();
    let out = run_script(&rt, None, &default_checks());
    expect(&out, DEFAULT_EXPECT);

    let b = bundle(&["sleep", "1000"]);
    let id = unique("confexec");
    rt.start_sleeper(&b, &id);
    let out = rt.ok(&["exec", &id, "sh", "-c", &default_checks()]);
    expect(&out, DEFAULT_EXPECT);
    // An exec'd process without a shell in between, too.
    assert_eq!(
        rt.ok(&["exec", &id, "probe", "write", "/etc/y"]).trim(),
        "EROFS"
    );
    assert_eq!(rt.ok(&["exec", &id, "probe", "io_uring"]).trim(), "EPERM");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn exec_processes_get_the_same_layout_and_landlock_rights() {
    let rt = Runtime::new();
    let pol = map_policy(
        &rt,
        &[
            ("/**", "r--"),
            ("/etc/shadow", "---"),
            ("/w/**", "-w-"),
            ("/t/**", "r--"),
        ],
    );
    let b = bundle(&["sleep", "1000"]);
    let id = unique("execfs");
    rt.ok(&create_args(&pol, &b, &id));
    rt.ok(&["start", &id]);
    let script = [
        p("shadow", "probe read /etc/shadow"),
        p("passwd", "probe read /etc/passwd | cut -c1-2"),
        p("w-read", "probe read /w/f"),
        p("w-write", "probe write /w/new"),
        p("t-exec", "probe exec /t/tool"),
        p("root", "probe write /etc/x"),
    ]
    .concat();
    // The exec'd process does not even need the policy flags: the plan is the container's.
    let out = rt.ok(&["exec", &id, "sh", "-c", &script]);
    expect(
        &out,
        &[
            ("shadow", "ok 0"),
            ("passwd", "ok"),
            ("w-read", "EACCES"),
            ("w-write", "ok"),
            ("t-exec", "EACCES"),
            ("root", "EROFS"),
        ],
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn tcp_connect_is_limited_to_the_policy_ports() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n\
         network_policies:\n  local:\n    endpoints:\n      - host: 127.0.0.1\n        port: 18443\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let b = bundle(&[
        "sh",
        "-c",
        &[
            p("listed", "probe connect 18443"),
            p("other", "probe connect 18444"),
        ]
        .concat(),
    ]);
    host_network(&b);
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(&out, &[("listed", "ok"), ("other", "EACCES")]);
}

#[test]
fn signals_cannot_leave_the_containers_domain() {
    let rt = Runtime::new();
    let mut host = Command::new("sleep").arg("1000").spawn().unwrap();
    let host_pid = host.id().to_string();
    // Share the host's pid namespace, so only Landlock stands between the two.
    let b = bundle(&[
        "sh",
        "-c",
        &[
            p("host", &format!("probe kill {host_pid}")),
            "sleep 100 & ".to_string(),
            p("own", "probe kill $!"),
        ]
        .concat(),
    ]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let out = run_bundle(&rt, None, &b, &[]);
    expect(&out, &[("host", "EPERM"), ("own", "ok")]);
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host process was killed"
    );

    // An exec'd process of a container sharing the host pid namespace is scoped too.
    let b = bundle(&["sleep", "1000"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let id = unique("sig");
    rt.start_sleeper(&b, &id);
    assert_eq!(
        rt.ok(&["exec", &id, "probe", "kill", &host_pid]).trim(),
        "EPERM"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host process was killed"
    );
    host.kill().unwrap();
    host.wait().unwrap();
}

#[test]
fn exec_can_signal_the_containers_own_processes() {
    let rt = Runtime::new();
    let b = bundle(&["sleep", "1000"]);
    let id = unique("sigown");
    rt.start_sleeper(&b, &id);
    // Pid 1 of the container's own pid namespace: an exec'd process may signal it.
    assert_eq!(rt.ok(&["exec", &id, "probe", "kill", "1"]).trim(), "ok");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn hard_requirement_refuses_a_kernel_without_the_needed_abi() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/w/**\": \"rwx\"\n\
         landlock:\n  compatibility: hard_requirement\n",
    );
    let b = bundle(&["true"]);
    let id = unique("hard");
    let mut cmd = rt.command(&create_args(&pol, &b, &id));
    cmd.env("NEMOSANDBOX_LANDLOCK_ABI_MAX", "5");
    let out = output_within(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hard_requirement") && err.contains("scope_signal (ABI 6)"),
        "{err}"
    );
    assert_nothing_left(&rt, &id);
    // The same policy on the full ABI runs.
    run_bundle(
        &rt,
        Some(&pol),
        &b,
        &[("NEMOSANDBOX_LANDLOCK_ABI_MAX", "7")],
    );
}

#[test]
fn best_effort_degrades_with_the_abi_and_says_so() {
    let rt = Runtime::new();
    let script = [
        p("tcp", "probe connect 18080"),
        p("tmp", "probe write /tmp/x"),
        p("etc", "probe read /etc/passwd | cut -c1-2"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    // ABI 3 has no TCP rules; the network guard still refuses the connect, the rest holds.
    let id = unique("abi3");
    let mut cmd = rt.command(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    cmd.env("NEMOSANDBOX_LANDLOCK_ABI_MAX", "3");
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    expect(&stdout, &[("tcp", "EACCES"), ("tmp", "ok"), ("etc", "ok")]);
    assert!(stderr.contains("tcp_connect not enforced"), "{stderr}");
    assert_nothing_left(&rt, &id);
    let out = run_bundle(&rt, None, &b, &[]);
    expect(&out, &[("tcp", "EACCES")]);
}

#[test]
fn run_as_user_from_the_containers_passwd() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n\
         process:\n  run_as_user: agent\n  run_as_group: agents\n",
    );
    let b = bundle(&["sleep", "1000"]);
    let r = b.path().join("rootfs");
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1500:1500::/home/a:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nagents:x:1600:\n").unwrap();
    let id = unique("user");
    rt.ok(&create_args(&pol, &b, &id));
    rt.ok(&["start", &id]);
    let status_path = format!("/proc/{}/status", rt.state(&id)["pid"]);
    wait_until(|| std::fs::read_to_string(&status_path).is_ok_and(|s| s.contains("Name:\tsleep")));
    let status = std::fs::read_to_string(&status_path).unwrap();
    assert!(status.contains("Uid:\t1500\t1500"), "{status}");
    assert!(status.contains("Gid:\t1600\t1600"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    // exec'd processes run as the policy's user, whatever the engine asked for.
    let out = rt.ok(&["exec", "--user", "0:0", &id, "sh", "-c", "id -u; id -g"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1500", "1600"]);
    let env = std::fs::read_to_string(format!("/proc/{}/environ", rt.state(&id)["pid"])).unwrap();
    assert!(env.split('\0').any(|e| e == "HOME=/home/a"), "{env}");
    rt.remove(&id);
    assert_nothing_left(&rt, &id);

    // A name the container does not know fails create, naming the file.
    let pol = policy(&rt, "version: 1\nprocess:\n  run_as_user: ghost\n");
    let id = unique("ghost");
    let err = rt.fails(&create_args(&pol, &b, &id));
    assert!(
        err.contains("\"ghost\"") && err.contains("/etc/passwd"),
        "{err}"
    );
    assert_nothing_left(&rt, &id);
}

#[test]
fn node_runs_under_the_default_profile_via_sandbox() {
    let Ok(out) = Command::new("sh").args(["-c", "command -v node"]).output() else {
        return;
    };
    if !out.status.success() {
        eprintln!("node is not installed on this host: skipped");
        return;
    }
    let rt = Runtime::new();
    let out = rt.run(&["sandbox", "--", "node", "--version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with('v'));
}

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
    let pol = net_policy(&rt, &[18451, 18453, 18455, 18457, 18459]);
    let script = [
        p("listed", "probe connect 18451"),
        p("port", "probe connect 18452"),
        "cp /bin/probe /tmp/copy; ln -s /bin/probe /tmp/link; ".to_string(),
        p("copy", "/tmp/copy connect 18451"),
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
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    host_network(&b);
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(
        &out,
        &[
            ("listed", "ok"),
            ("port", "EACCES"),
            ("copy", "EACCES"),
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
        ],
    );
}

fn helper_of(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (comm.trim() == "nemosandbox-hlp" && String::from_utf8_lossy(&cmd).contains(id))
            .then_some(pid)
    })
}

#[test]
fn network_guard_holds_for_exec_and_fails_closed_without_the_guard() {
    let rt = Runtime::new();
    let pol = net_policy(&rt, &[18461]);
    // Init keeps trying the allowed port, so its result after the guard dies can be read.
    let b = bundle(&[
        "sh",
        "-c",
        "while true; do probe connect 18463 > /tmp/last.new; mv /tmp/last.new /tmp/last; sleep 0.2; done",
    ]);
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
    let audit =
        std::fs::read_to_string(rt.root.path().join(&id).join("audit.jsonl")).unwrap_or_default();
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

fn nix_kill(pid: i32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
