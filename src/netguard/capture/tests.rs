use super::*;

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn script_argument_accepts_only_harmless_options() {
    let py = |a: &[&str]| script_argument(Family::Python, &v(a));
    assert_eq!(py(&["python3", "/app/ok.py"]).unwrap(), "/app/ok.py");
    assert_eq!(
        py(&["python3", "-u", "-B", "/app/ok.py"]).unwrap(),
        "/app/ok.py"
    );
    assert_eq!(py(&["python3", "-Bu", "ok.py"]).unwrap(), "ok.py");
    for bad in [
        &["python3", "-", "/app/ok.py"][..],
        &["python3", "-i", "/app/ok.py"],
        &["python3", "-W", "x", "/app/ok.py"],
        &["python3", "-c", "1"],
        &["python3", "-m", "http.server"],
        &["python3", "-X", "importtime", "/app/ok.py"],
        &["python3", "-Ic", "1"],
        &["python3", "--", "/app/ok.py"],
        &["python3"],
    ] {
        assert!(py(bad).is_err(), "{bad:?}");
    }
    let node = |a: &[&str]| script_argument(Family::Node, &v(a));
    assert_eq!(node(&["node", "/app/ok.js"]).unwrap(), "/app/ok.js");
    assert_eq!(
        node(&[
            "node",
            "--no-warnings",
            "--max-old-space-size=512",
            "/app/ok.js"
        ])
        .unwrap(),
        "/app/ok.js"
    );
    for bad in [
        &["node", "-", "/app/ok.js"][..],
        &["node", "--print=1", "/app/ok.js"],
        &["node", "--loader=/tmp/l.mjs", "/app/ok.js"],
        &["node", "--experimental-loader=/tmp/l.mjs", "/app/ok.js"],
        &["node", "--import=/tmp/x.mjs", "/app/ok.js"],
        &["node", "--env-file=/tmp/e", "/app/ok.js"],
        &["node", "-r", "/tmp/x.js", "/app/ok.js"],
        &["node", "-e", "1"],
        &["node", "--inspect", "/app/ok.js"],
    ] {
        assert!(node(bad).is_err(), "{bad:?}");
    }
    let plain = |a: &[&str]| script_argument(Family::Plain, &v(a));
    assert_eq!(plain(&["sh", "/app/x.sh"]).unwrap(), "/app/x.sh");
    assert!(plain(&["sh", "-x", "/app/x.sh"]).is_err());
    assert!(plain(&["bash", "-c", "curl x"]).is_err());
}

#[test]
fn head_keeps_options_and_the_script_only() {
    let c = b"python3\0-u\0/app/ok.py\0--secret\0arg\0";
    assert_eq!(head_of(c).unwrap(), v(&["python3", "-u", "/app/ok.py"]));
    let long = [b"python3\0".as_slice(), &vec![b'-'; 2000], b"\0"].concat();
    assert!(head_of(&long).is_none());
}

#[test]
fn injection_variables() {
    for k in [
        "LD_PRELOAD",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PYTHONPATH",
        "PYTHONINSPECT",
        "PYTHONWARNINGS",
        "BASH_ENV",
    ] {
        assert!(injection_var(k), "{k}");
    }
    for k in [
        "PATH",
        "HOME",
        "PYTHONUNBUFFERED",
        "NODE_ENV",
        "LD_LIBRARY_PATH",
        "LANG",
    ] {
        assert!(!injection_var(k), "{k}");
    }
    assert_eq!(Family::of("/usr/bin/python3.11"), Family::Python);
    assert_eq!(Family::of("node"), Family::Node);
    assert_eq!(Family::of("/bin/sh"), Family::Plain);
}

#[test]
fn pinned_requires_read_only_all_the_way() {
    // The host's /proc is read-write and /tmp usually too: nothing under them is pinned.
    let dir = crate::testutil::TempDir::new("pinned");
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let p = dir.path().join("f");
    let e = pinned(Path::new("/"), "/", "/", p.to_str().unwrap(), false).unwrap_err();
    assert!(e.contains("not read-only"), "{e}");
    assert!(pinned(Path::new("/"), "/chroot", "/", "/x", false).is_err());
}
