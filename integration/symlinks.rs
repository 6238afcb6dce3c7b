//! Symlink guards end to end: validated and frozen between create and start, tested
//! from inside the container as root and as the policy's user, with every invalid layout, a
//! racing host process, a tmpfs root and a volume.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const GUARD: &str = "/sandbox/.openclaw";
const TARGET: &str = "/sandbox/.openclaw-data";

/// A policy guarding GUARD, with `extra` lines for the guard.
fn guard_policy(rt: &Runtime, extra: &str) -> String {
    policy(
        rt,
        &format!(
            "version: 1\nfilesystem_policy:\n  read_write: [/sandbox]\n  permissions:\n    \"/**\": \"r-x\"\n\
             symlink_guards:\n  - dir: {GUARD}\n    target_dir: {TARGET}\n{extra}"
        ),
    )
}

/// A bundle whose image has a valid guarded layout: two links into the target directory.
fn guarded_bundle(args: &[&str]) -> Bundle {
    let b = Bundle::busybox(args);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("sandbox/.openclaw")).unwrap();
    std::fs::create_dir_all(r.join("sandbox/.openclaw-data")).unwrap();
    for name in ["config.json", "agents.json"] {
        std::fs::write(
            r.join("sandbox/.openclaw-data").join(name),
            format!("{name}-data"),
        )
        .unwrap();
        symlink(
            format!("{TARGET}/{name}"),
            r.join("sandbox/.openclaw").join(name),
        )
        .unwrap();
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/sandbox:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nagent:x:1000:\n").unwrap();
    b
}

fn guard_annotation(rt: &Runtime, id: &str) -> String {
    rt.state(id)["annotations"][format!("dev.nemosandbox.symlink-guard.{GUARD}")]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

const TAMPER: &str = "cat /sandbox/.openclaw/config.json; echo; \
    ln -sfn /etc/passwd /sandbox/.openclaw/config.json 2>/dev/null && echo REPLACED; \
    rm -f /sandbox/.openclaw/agents.json 2>/dev/null && echo REMOVED; \
    mv /sandbox/.openclaw/agents.json /sandbox/.openclaw/x 2>/dev/null && echo RENAMED; \
    ln -s /etc/shadow /sandbox/.openclaw/new 2>/dev/null && echo ADDED; \
    readlink /sandbox/.openclaw/config.json";

fn assert_untampered(out: &str) {
    assert!(
        out.contains("config.json-data"),
        "reading through the link: {out}"
    );
    for verb in ["REPLACED", "REMOVED", "RENAMED", "ADDED"] {
        assert!(!out.contains(verb), "{verb}: {out}");
    }
    assert!(out.contains(&format!("{TARGET}/config.json")), "{out}");
}

#[test]
fn valid_layout_is_hardened_and_cannot_be_changed_from_inside() {
    let rt = Runtime::new();
    for (extra, who) in [("", "root"), ("process:\n  run_as_user: agent\n", "agent")] {
        let pol = guard_policy(&rt, extra);
        let b = guarded_bundle(&["sleep", "1000"]);
        let id = unique("guard");
        rt.ok(&create_args(&pol, &b, &id));
        assert_eq!(guard_annotation(&rt, &id), "hardened", "{who}");
        rt.ok(&["start", &id]);
        let out = rt.ok(&["exec", &id, "sh", "-c", TAMPER]);
        assert_untampered(&out);
        // Not even the host can swap the link while the container lives.
        let link = b.path().join("rootfs/sandbox/.openclaw/config.json");
        assert!(std::fs::remove_file(&link).is_err(), "immutable");
        let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap();
        assert!(
            audit.contains("\"kind\":\"symlink\"") && audit.contains("\"decision\":\"hardened\""),
            "{audit}"
        );
        rt.remove(&id);
        assert_nothing_left(&rt, &id);
        // delete cleared the attribute: the files can be removed again.
        std::fs::remove_file(&link).unwrap();
    }
}

#[test]
fn invalid_layouts_fail_create_and_leave_nothing() {
    let rt = Runtime::new();
    let pol = guard_policy(&rt, "");
    type Breaker = fn(&Path);
    let cases: [(&str, Breaker, &str); 5] = [
        (
            "wrong target",
            |r| symlink("/etc/passwd", r.join("sandbox/.openclaw/evil")).unwrap(),
            "points to \"/etc/passwd\", expected \"/sandbox/.openclaw-data/evil\"",
        ),
        (
            "relative target",
            |r| symlink("../.openclaw-data/x", r.join("sandbox/.openclaw/x")).unwrap(),
            "expected \"/sandbox/.openclaw-data/x\"",
        ),
        (
            "other name",
            |r| {
                symlink(
                    "/sandbox/.openclaw-data/config.json",
                    r.join("sandbox/.openclaw/alias"),
                )
                .unwrap()
            },
            "link /sandbox/.openclaw/alias",
        ),
        (
            "dir is a symlink",
            |r| {
                std::fs::remove_dir_all(r.join("sandbox/.openclaw")).unwrap();
                symlink("/sandbox/.openclaw-data", r.join("sandbox/.openclaw")).unwrap()
            },
            "is a symlink, not a directory",
        ),
        (
            "missing",
            |r| std::fs::remove_dir_all(r.join("sandbox/.openclaw")).unwrap(),
            "does not exist (required: true)",
        ),
    ];
    for (what, breaker, want) in cases {
        let b = guarded_bundle(&["true"]);
        breaker(&b.path().join("rootfs"));
        let id = unique("badguard");
        let err = rt.fails(&create_args(&pol, &b, &id));
        assert!(err.contains(want), "{what}: {err}");
        assert_nothing_left(&rt, &id);
        // No attribute left behind on a failed create.
        let dir = b.path().join("rootfs/sandbox/.openclaw");
        if dir.is_dir() && !dir.is_symlink() {
            std::fs::write(dir.join("probe-writable"), "x").unwrap();
        }
    }
    // required: false and no directory: skipped, and the container runs.
    let pol = guard_policy(&rt, "    required: false\n");
    let b = guarded_bundle(&["sleep", "1000"]);
    std::fs::remove_dir_all(b.path().join("rootfs/sandbox/.openclaw")).unwrap();
    let id = unique("skip");
    rt.ok(&create_args(&pol, &b, &id));
    assert!(
        guard_annotation(&rt, &id).starts_with("skipped"),
        "{}",
        guard_annotation(&rt, &id)
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}

#[test]
fn a_link_swapped_during_create_never_reaches_a_started_container() {
    let rt = Runtime::new();
    let pol = guard_policy(&rt, "");
    let b = guarded_bundle(&["sleep", "1000"]);
    let link = b.path().join("rootfs/sandbox/.openclaw/config.json");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let racer = {
        let (stop, link, swaps) = (stop.clone(), link.clone(), swaps.clone());
        std::thread::spawn(move || {
            let tmp = link.with_file_name(".swap");
            let mut bad = false;
            while !stop.load(Ordering::Relaxed) {
                let target = if bad {
                    "/etc/shadow".to_string()
                } else {
                    format!("{TARGET}/config.json")
                };
                let _ = std::fs::remove_file(&tmp);
                // Immutable directory: both fail while a container holds it; that is the point.
                if symlink(&target, &tmp).is_ok() && std::fs::rename(&tmp, &link).is_ok() {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                bad = !bad;
            }
            let _ = std::fs::remove_file(&tmp);
        })
    };
    let (mut started, mut refused) = (0, 0);
    for _ in 0..30 {
        let id = unique("race");
        let out = rt.run(&create_args(&pol, &b, &id));
        if out.status.success() {
            rt.ok(&["start", &id]);
            let seen = rt.ok(&["exec", &id, "readlink", "/sandbox/.openclaw/config.json"]);
            assert_eq!(seen.trim(), format!("{TARGET}/config.json"));
            // The racer cannot change it now.
            std::thread::sleep(Duration::from_millis(20));
            let again = rt.ok(&["exec", &id, "readlink", "/sandbox/.openclaw/config.json"]);
            assert_eq!(again.trim(), format!("{TARGET}/config.json"));
            started += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("symlink guard"), "{err}");
            refused += 1;
        }
        rt.remove(&id);
        assert_nothing_left(&rt, &id);
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!("race: {started} started with the right link, {refused} refused, {swaps} swaps");
    // The race happened: the link moved while containers were created, and creates caught it.
    // A link that moves under validation is refused too, so every create may be refused; one
    // that started held the right link (checked above).
    assert!(swaps > 30, "the racer swapped the link {swaps} times");
    assert!(refused > 0, "{started} started, {refused} refused");
}

#[test]
fn tmpfs_root_and_volume_outcomes() {
    let rt = Runtime::new();
    let pol = guard_policy(&rt, "");
    // The image root on a tmpfs: the attribute is supported there (Linux ≥ 6.0).
    let b = guarded_bundle(&["sleep", "1000"]);
    let tmpfs = TempDir::new("guard-tmpfs");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(tmpfs.path())
        .status()
        .unwrap();
    assert!(st.success());
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(b.path().join("rootfs/."))
        .arg(tmpfs.path())
        .status()
        .unwrap();
    assert!(copy.success());
    b.edit(|c| c["root"]["path"] = tmpfs.path().to_string_lossy().into_owned().into());
    let id = unique("tmpfsguard");
    rt.ok(&create_args(&pol, &b, &id));
    assert_eq!(guard_annotation(&rt, &id), "hardened");
    rt.ok(&["start", &id]);
    assert_untampered(&rt.ok(&["exec", &id, "sh", "-c", TAMPER]));
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
    let _ = std::process::Command::new("umount")
        .arg(tmpfs.path())
        .status();

    // The guarded directory on a volume: frozen by the read-only bind and Landlock, but the
    // attribute step is reported as failed: `partial`, saying why.
    let b = guarded_bundle(&["sleep", "1000"]);
    let vol = TempDir::new("guard-vol");
    let src = b.path().join("rootfs/sandbox");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(vol.path())
        .status()
        .unwrap();
    std::fs::remove_dir_all(src.join(".openclaw")).unwrap();
    std::fs::create_dir(src.join(".openclaw")).unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/sandbox",
            "type": "bind",
            "source": vol.path(),
            "options": ["rbind", "rw"]
        }))
    });
    let id = unique("volguard");
    rt.ok(&create_args(&pol, &b, &id));
    let ann = guard_annotation(&rt, &id);
    assert!(ann.starts_with("partial: immutable"), "{ann}");
    rt.ok(&["start", &id]);
    assert_untampered(&rt.ok(&["exec", &id, "sh", "-c", TAMPER]));
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}
