//! Filesystem and process confinement from inside real containers: each denial
//! beside its allowed twin, in the init process and in exec'd processes, with a static probe
//! doing what an attacker would.

mod common;

use std::process::Command;
use std::time::Duration;

use common::probe::*;
use common::*;

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
    // (Asked of the file, not of the mount's type: the bundle itself may sit on a tmpfs.)
    let script = [
        p("tmp", "probe write /tmp/from-inside"),
        p("image", "cat /tmp/from-image"),
    ]
    .concat();
    let b = bundle(&["sh", "-c", &script]);
    std::fs::write(b.path().join("rootfs/tmp/from-image"), "image").unwrap();
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(&out, &[("tmp", "ok"), ("image", "image")]);
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
    ("rawsock", "EACCES"),
    ("ptrace", "EPERM"),
    ("procmem", "EACCES"),
    ("memfd", "ok"),
    ("fork", "ok"),
    ("tcp", "EACCES"),
    // The guard's notification filter, the always-denied filter, the socket filter and the
    // profile.
    ("filters", "4"),
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

/// With the host's pid namespace shared, only Landlock's signal scope (ABI 6) stands between
/// the container and host processes. On an older kernel the runtime says so at create
/// (best_effort) and the signal gets through: asserted, not skipped.
#[test]
fn signals_cannot_leave_the_containers_domain() {
    let rt = Runtime::new();
    let scoped = kernel().landlock_scopes();
    let (want, outcome) = if scoped {
        ("EPERM", "the host process was killed")
    } else {
        ("ok", "an unscoped kernel stopped the signal")
    };
    let mut host = Command::new("sleep").arg("1000").spawn().unwrap();
    let host_pid = host.id().to_string();
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
    let id = unique("sigrun");
    let cmd = rt.command(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&rt, &id);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    expect(&stdout, &[("host", want), ("own", "ok")]);
    assert_eq!(
        stderr.contains("scope_signal not enforced"),
        !scoped,
        "the warning must match the kernel: {stderr}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(host.try_wait().unwrap().is_none(), scoped, "{outcome}");
    let _ = host.kill();
    host.wait().unwrap();

    // An exec'd process of a container sharing the host pid namespace is scoped too.
    let mut host = Command::new("sleep").arg("1000").spawn().unwrap();
    let host_pid = host.id().to_string();
    let b = bundle(&["sleep", "1000"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let id = unique("sig");
    rt.start_sleeper(&b, &id);
    assert_eq!(
        rt.ok(&["exec", &id, "probe", "kill", &host_pid]).trim(),
        want
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(host.try_wait().unwrap().is_none(), scoped, "{outcome}");
    let _ = host.kill();
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
    let k = kernel();
    if k.landlock_abi >= 6 {
        // The same policy on the kernel's full ABI runs.
        run_bundle(
            &rt,
            Some(&pol),
            &b,
            &[("NEMOSANDBOX_LANDLOCK_ABI_MAX", "7")],
        );
        return;
    }
    // This kernel itself lacks the rights: refused without any cap, naming the kernel's ABI
    // and what it lacks, and nothing is left; best_effort of the same policy runs.
    let id = unique("hardk");
    let out = output_within(
        rt.command(&create_args(&pol, &b, &id)),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("Landlock ABI is {} and lacks", k.landlock_abi))
            && err.contains("scope_signal (ABI 6)")
            && !err.contains("capped"),
        "{err}"
    );
    assert_nothing_left(&rt, &id);
    let soft = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/w/**\": \"rwx\"\n\
         landlock:\n  compatibility: best_effort\n",
    );
    run_bundle(&rt, Some(&soft), &b, &[]);
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
    // scripts/setup.sh installs nodejs: a missing node is a broken set-up, not a pass.
    let out = Command::new("sh")
        .args(["-c", "command -v node"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node is not installed (apt-get install nodejs)"
    );
    let rt = Runtime::new();
    let out = rt.run(&["sandbox", "--", "node", "--version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with('v'));
}
