//! The `oci` baseline runs a spec as runc does, checked side by side with runc on the same
//! bundle; and the runc-compatibility fixes that hold under every baseline (hooks, poststop,
//! cgroup v1 mounts, disableOOMKiller, duplicate gids, recursive mount attributes, the
//! seccomp listener).

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::probe::results;
use common::*;

/// Run the bundle to completion under runc; its stdout.
fn runc(b: &Bundle) -> String {
    let root = TempDir::new("runc-root");
    let mut cmd = Command::new("runc");
    cmd.arg("--root")
        .arg(root.path())
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(unique("runc"));
    let out = output_within(cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the bundle to completion under nemosandbox with `policy`; its stdout.
fn nemo(rt: &Runtime, policy: &str, b: &Bundle) -> String {
    let id = unique("oci");
    let out = rt.run(&[
        "--policy",
        policy,
        "run",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(
        out.status.success() || !out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a workload sees of its confinement: no_new_privs, seccomp filters, a writable root,
/// the spec's masked and read-only paths, and whether mkdir is allowed.
const PROBE: &str = "grep -E '^(NoNewPrivs|Seccomp_filters)' /proc/self/status | tr '\\t' ' '; \
    touch /root-probe 2>/dev/null && echo root: writable || echo root: read-only; \
    mkdir /dev/shm/d 2>/dev/null && echo mkdir: ok || echo mkdir: denied; \
    for p in /proc/kcore /proc/timer_list /proc/keys /sys/firmware; do \
      if [ -d $p ]; then echo masked $p: $(ls $p | wc -l); else echo masked $p: $(cat $p 2>/dev/null | wc -c); fi; done; \
    for p in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do \
      echo read-only $p: $(awk -v p=$p '$5 == p {print substr($6, 1, 2)}' /proc/self/mountinfo); done";

#[test]
fn the_oci_baseline_behaves_as_runc_where_default_confines() {
    let rt = Runtime::new();
    for (readonly, nnp, seccomp) in [(false, false, true), (true, true, false)] {
        let b = Bundle::busybox(&["sh", "-c", PROBE]);
        if seccomp {
            b.with_mkdir_denying_seccomp();
        }
        b.edit(|c| {
            c["root"]["readonly"] = readonly.into();
            c["process"]["noNewPrivileges"] = nnp.into();
        });
        let want = runc(&b);
        let got = nemo(&rt, "oci", &b);
        eprintln!("runc:\n{want}\noci:\n{got}");
        assert!(want.contains("NoNewPrivs"), "runc ran: {want}");
        assert_eq!(got, want, "readonly={readonly} nnp={nnp} seccomp={seccomp}");
        let r = results(&got);
        assert_eq!(r["root"], if readonly { "read-only" } else { "writable" });
        assert_eq!(r["NoNewPrivs"], if nnp { "1" } else { "0" });
        assert_eq!(r["Seccomp_filters"], if seccomp { "1" } else { "0" });
        assert_eq!(r["mkdir"], if seccomp { "denied" } else { "ok" });

        // The same bundle under the default baseline: the deliberate differences.
        let d = results(&nemo(&rt, "default", &b));
        assert_eq!(d["root"], "read-only");
        assert_eq!(d["NoNewPrivs"], "1");
        assert!(d["Seccomp_filters"].parse::<u32>().unwrap() > 1, "{d:?}");
    }
}

#[test]
fn only_the_node_or_the_flags_choose_oci_and_it_takes_no_presets() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["true"]);
    b.edit(|c| c["annotations"] = serde_json::json!({"dev.nemosandbox.policy": "oci"}));
    let id = unique("oci-ann");
    let e = rt.fails(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    assert!(e.contains("only by the node configuration"), "{e}");
    assert_nothing_left(&rt, &id);

    let b = Bundle::busybox(&["true"]);
    let e = rt.fails(&[
        "--policy",
        "oci",
        "--preset",
        "npm",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    assert!(e.contains("takes no presets (npm)"), "{e}");
    assert_nothing_left(&rt, &id);

    let out = rt.ok(&["--policy", "oci", "policy", "explain"]);
    assert!(out.contains("UNCONFINED"), "{out}");
    // The allowed twin: the flag chooses it, and the container runs.
    rt.ok(&create_args("oci", &b, &id));
    rt.ok(&["start", &id]);
    wait_until(|| rt.status(&id) == "stopped");
    rt.ok(&["delete", &id]);
    assert_nothing_left(&rt, &id);
}

/// A hook script that saves its stdin as `dir/NAME.json`.
fn recorder(dir: &Path) -> String {
    let script = dir.join("record.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > \"$0.$1.json\"\nreadlink /proc/$PPID/exe > \"$0.$1.exe\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script.to_str().unwrap().to_string()
}

#[test]
fn hooks_get_the_engines_bundle_and_a_failing_poststop_does_not_block_delete() {
    for policy in ["default", "oci"] {
        let rt = Runtime::new();
        let out = TempDir::new("hooks");
        let rec = recorder(out.path());
        let b = Bundle::busybox(&["true"]);
        let kinds = [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ];
        b.edit(|c| {
            let mut hooks = serde_json::Map::new();
            for k in kinds {
                hooks.insert(
                    k.into(),
                    serde_json::json!([{"path": rec, "args": [rec, k], "timeout": 10}]),
                );
            }
            // A poststop hook that cannot run: runc warns and deletes all the same.
            hooks["poststop"]
                .as_array_mut()
                .unwrap()
                .insert(0, serde_json::json!({"path": "/no/such/hook"}));
            c["hooks"] = serde_json::Value::Object(hooks);
        });
        let id = unique("hooks");
        rt.ok(&create_args(policy, &b, &id));
        rt.ok(&["start", &id]);
        wait_until(|| rt.status(&id) == "stopped");
        rt.ok(&["delete", &id]);
        assert_nothing_left(&rt, &id);
        let bundle = b.path().canonicalize().unwrap();
        for k in kinds {
            let f = format!("{rec}.{k}.json");
            let state: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&f)
                    .unwrap_or_else(|e| panic!("{policy}: hook {k} did not run: {e}")),
            )
            .unwrap();
            assert_eq!(
                state["bundle"],
                bundle.to_str().unwrap(),
                "{policy}: hook {k} got {state}"
            );
            assert_eq!(state["id"], id.as_str());
        }
        // The runtime that ran the hooks: under `oci` a sealed in-memory copy of itself, so a
        // container process can reach no writable runtime binary (CVE-2019-5736).
        let exe = std::fs::read_to_string(format!("{rec}.createRuntime.exe")).unwrap();
        if policy == "oci" {
            assert!(exe.starts_with("/memfd:nemosandbox"), "{exe}");
        } else {
            assert!(exe.contains("nemosandbox"), "{exe}");
        }
    }
}

#[test]
fn cgroup_v1_hierarchies_are_read_only_scoped_and_honour_disable_oom_killer() {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("cgroup v2 host: nothing of v1 to check");
        return;
    }
    let script = "echo max > /sys/fs/cgroup/pids/pids.max 2>/dev/null && echo pids: writable || echo pids: read-only; \
        ls /sys/fs/cgroup/systemd/release_agent >/dev/null 2>&1 && echo release_agent: visible || echo release_agent: hidden; \
        echo oom: $(awk '/oom_kill_disable/ {print $2}' /sys/fs/cgroup/memory/memory.oom_control)";
    let rt = Runtime::new();
    for (ro, policy) in [(true, "default"), (true, "oci"), (false, "oci")] {
        let b = Bundle::busybox(&["sh", "-c", script]);
        b.edit(|c| {
            for m in c["mounts"].as_array_mut().unwrap() {
                if m["type"] == "cgroup" && !ro {
                    let opts = m["options"].as_array_mut().unwrap();
                    opts.retain(|o| o != "ro");
                }
            }
            c["linux"]["resources"]["memory"] = serde_json::json!({"disableOOMKiller": true});
        });
        let want = runc(&b);
        let got = nemo(&rt, policy, &b);
        eprintln!("{policy} ro={ro}: runc:\n{want}\nnemosandbox:\n{got}");
        let r = results(&got);
        assert_eq!(r["pids"], if ro { "read-only" } else { "writable" });
        assert_eq!(r["release_agent"], "hidden");
        assert_eq!(r["oom"], "1");
        assert_eq!(got, want);
    }
}

#[test]
fn duplicate_additional_gids_are_refused() {
    let rt = Runtime::new();
    let b = Bundle::busybox(&["id", "-G"]);
    b.edit(|c| c["process"]["user"]["additionalGids"] = serde_json::json!([10, 20, 10]));
    let id = unique("gids");
    let e = rt.fails(&create_args("default", &b, &id));
    assert!(
        e.contains("process.user.additionalGids: gid 10 is listed twice"),
        "{e}"
    );
    assert_nothing_left(&rt, &id);
    // The allowed twin.
    b.edit(|c| c["process"]["user"]["additionalGids"] = serde_json::json!([10, 20]));
    let out = nemo(&rt, "default", &b);
    assert_eq!(out.trim(), "0 10 20");
}

#[test]
fn recursive_mount_attributes_apply_as_under_runc() {
    let src = TempDir::new("rattr");
    std::fs::create_dir(src.path().join("sub")).unwrap();
    let sub = src.path().join("sub");
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub)
        .status()
        .unwrap()
        .success());
    let script = "awk '$5 ~ /^\\/mnt/ {print $5 \": \" $6}' /proc/self/mountinfo";
    let rt = Runtime::new();
    for opts in [
        "rro,rnosuid,rnodev,rnoexec",
        "rnoatime,rnodiratime",
        "rrelatime",
        "rstrictatime",
        "rdev,rsuid,rexec,rrw",
    ] {
        let b = Bundle::busybox(&["sh", "-c", script]);
        std::fs::create_dir_all(b.path().join("rootfs/mnt")).unwrap();
        b.edit(|c| {
            let mut o: Vec<serde_json::Value> = vec!["rbind".into()];
            o.extend(opts.split(',').map(serde_json::Value::from));
            c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
                "destination": "/mnt", "type": "bind", "source": src.path(), "options": o
            }));
        });
        let want = runc(&b);
        assert!(want.contains("/mnt/sub"), "{want}");
        for policy in ["oci", "default"] {
            let got = nemo(&rt, policy, &b);
            assert_eq!(got, want, "{policy} {opts}");
        }
        if opts.starts_with("rro") {
            assert!(want.contains("/mnt/sub: ro,nosuid,nodev,noexec"), "{want}");
        }
    }
    let _ = Command::new("umount").arg(&sub).status();
}

/// Mount destinations reached through the image's symlinks are resolved inside the rootfs,
/// with missing directories made there, as runc does: a symlink pointing out of the image
/// (relative or absolute) neither creates nor mounts anything on the host. The vendored
/// libcontainer makes destinations itself (`vendor/libcontainer/NEMOSANDBOX-PATCH.md`), so
/// each runtime gets a bundle of its own in which nothing of the destinations exists yet.
#[test]
fn mount_destinations_through_image_symlinks_stay_in_the_rootfs() {
    // A name that exists neither on the host nor in the image.
    let name = unique("mnt-made");
    let host_side = Path::new("/tmp").join(&name);
    let script = format!("awk '$5 ~ /(fresh|{name})/ {{print $5}}' /proc/self/mountinfo | sort");
    let fresh = || {
        let b = Bundle::busybox(&["sh", "-c", &script]);
        let rootfs = b.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        // Relative: climbs past the image's root; absolute: names the host's /tmp.
        std::os::unix::fs::symlink("../../../../../../../../tmp", rootfs.join("up")).unwrap();
        std::os::unix::fs::symlink("/tmp", rootfs.join("abs")).unwrap();
        b.edit(|c| {
            let m = c["mounts"].as_array_mut().unwrap();
            for dest in [
                "/fresh/a/b".to_string(),
                format!("/up/{name}/made/deep"),
                format!("/abs/{name}/x"),
            ] {
                m.push(
                    serde_json::json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}),
                );
            }
        });
        b
    };
    let want = runc(&fresh());
    for inside in [
        "/fresh/a/b".to_string(),
        format!("/tmp/{name}/made/deep"),
        format!("/tmp/{name}/x"),
    ] {
        assert!(want.lines().any(|l| l == inside), "{inside} not in {want}");
    }
    assert!(!host_side.exists(), "runc made {}", host_side.display());
    let rt = Runtime::new();
    for policy in ["oci", "default"] {
        let b = fresh();
        let got = nemo(&rt, policy, &b);
        assert_eq!(got, want, "{policy}");
        assert!(!host_side.exists(), "{policy} made {}", host_side.display());
        // The directories were made inside the image instead.
        let rootfs = b.path().join("rootfs");
        assert!(
            rootfs.join(format!("tmp/{name}/made/deep")).is_dir(),
            "{policy}"
        );
        assert!(rootfs.join(format!("tmp/{name}/x")).is_dir(), "{policy}");
    }

    // Refused, with nothing of the container left and nothing made outside the image: a
    // destination under a regular file, and one through a link to a missing directory
    // (libcontainer refuses what runc would make).
    for (what, dest) in [
        ("notdir", "/notdir/x".to_string()),
        ("dangling", format!("/gone/{name}")),
    ] {
        let bad = Bundle::busybox(&["true"]);
        let rootfs = bad.path().join("rootfs");
        std::fs::write(rootfs.join("notdir"), "").unwrap();
        std::os::unix::fs::symlink(
            format!("../../../../../tmp/{name}/sub"),
            rootfs.join("gone"),
        )
        .unwrap();
        bad.edit(|c| {
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        });
        let id = unique(what);
        let err = rt.fails(&["run", "--bundle", bad.path().to_str().unwrap(), &id]);
        assert!(!err.is_empty(), "{what}");
        assert_nothing_left(&rt, &id);
        assert!(!host_side.exists(), "{what} made {}", host_side.display());
    }
}

/// Accept one connection on `path`: the message and how many descriptors came with it.
fn listen_once(path: &Path) -> std::thread::JoinHandle<(String, usize)> {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let r = nix::sys::socket::recvmsg::<()>(
            c.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let fds = r
            .cmsgs()
            .unwrap()
            .map(|m| match m {
                nix::sys::socket::ControlMessageOwned::ScmRights(f) => f.len(),
                _ => 0,
            })
            .sum();
        let n = r.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
    })
}

#[test]
fn a_seccomp_listener_gets_the_fd_under_oci_and_is_refused_by_confining_baselines() {
    let rt = Runtime::new();
    let dir = TempDir::new("listener");
    let sock = dir.path().join("l.sock");
    let b = Bundle::busybox(&["sh", "-c", "grep Seccomp_filters /proc/self/status"]);
    b.edit(|c| {
        c["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "from-the-test",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let id = unique("listener");
    let e = rt.fails(&create_args("default", &b, &id));
    assert!(e.contains("linux.seccomp.listenerPath"), "{e}");
    assert_nothing_left(&rt, &id);

    let got = listen_once(&sock);
    let out = nemo(&rt, "oci", &b);
    let (msg, fds) = got.join().unwrap();
    assert_eq!(out.trim(), "Seccomp_filters:\t1");
    assert_eq!(fds, 1, "{msg}");
    let state: serde_json::Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(state["metadata"], "from-the-test");
    assert_eq!(state["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(
        state["state"]["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
}
