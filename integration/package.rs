//! The Debian package: `scripts/build-deb.sh` packages the binary under test, and the package
//! installs on this host, runs, keeps an administrator's edit of a conffile across a
//! reinstall, and purges without a trace. Runs as root on Debian, with the real dpkg.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const PACKAGE: &str = "nemosandbox";
const INSTALLED: &str = "/usr/bin/nemosandbox";
const CONFIG: &str = "/etc/nemosandbox/config.yaml";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run with no stdin (a dpkg prompt must fail, not wait) and a deadline.
fn run(program: &str, args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo()).stdin(Stdio::null());
    output_within(cmd, scaled(limit))
}

fn ok(program: &str, args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(repo()).stdin(Stdio::null());
    ok_within(cmd, limit)
}

fn dpkg(args: &[&str]) -> String {
    ok("dpkg", args, Duration::from_secs(120))
}

/// dpkg's status of the package: empty when dpkg knows no such package.
fn package_status() -> String {
    let out = run(
        "dpkg-query",
        &["-W", "-f=${Status}", PACKAGE],
        Duration::from_secs(30),
    );
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::new()
    }
}

/// The line of `dpkg-deb -c` for `path`.
fn entry_of<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.ends_with(&format!(" .{path}")))
        .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// The package is on the host while this lives; dropping it (a failed assertion included)
/// purges it.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", PACKAGE], Duration::from_secs(120));
    }
}

#[test]
fn deb_installs_runs_and_purges() {
    // The host must not have the package, or files it would own: this test installs its own
    // and purges it at the end, which would remove an operator's installation.
    let status = package_status();
    assert!(
        status.is_empty() || status.ends_with("not-installed"),
        "a {PACKAGE} package is already installed on this machine (dpkg status: {status}); \
         the package test installs and purges its own, so remove it first: \
         dpkg --purge {PACKAGE}"
    );
    for p in [INSTALLED, "/etc/nemosandbox"] {
        assert!(
            !Path::new(p).exists(),
            "{p} exists but belongs to no package (an installation by hand or by the node \
             installer); the package test would overwrite it and its purge would remove it: \
             move it away first"
        );
    }

    // Build the package from the binary under test.
    let mut build = Command::new("bash");
    build
        .arg("scripts/build-deb.sh")
        .env("BIN", bin())
        .current_dir(repo())
        .stdin(Stdio::null());
    let out = output_within(build, scaled(Duration::from_secs(300)));
    assert!(
        out.status.success(),
        "build-deb.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb: PathBuf = repo().join(stdout.lines().last().expect("build-deb.sh printed nothing"));
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("{PACKAGE}_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );
    assert!(deb.is_file(), "{}", deb.display());
    let deb = deb.to_str().unwrap();

    // Metadata: no dependencies (the binary is static).
    let long = Duration::from_secs(60);
    assert_eq!(
        ok("dpkg-deb", &["-f", deb, "Package"], long).trim(),
        PACKAGE
    );
    assert_eq!(
        ok("dpkg-deb", &["-f", deb, "Version"], long).trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        ok("dpkg-deb", &["-f", deb, "Architecture"], long).trim(),
        "amd64"
    );
    assert_eq!(ok("dpkg-deb", &["-f", deb, "Depends"], long).trim(), "");

    // Contents.
    let listing = ok("dpkg-deb", &["-c", deb], long);
    let entry = |path: &str| entry_of(&listing, path).to_string();
    assert!(
        entry(INSTALLED).starts_with("-rwxr-xr-x root/root "),
        "{}",
        entry(INSTALLED)
    );
    for path in [
        "/usr/share/man/man8/nemosandbox.8.gz",
        "/usr/share/bash-completion/completions/nemosandbox",
        "/usr/share/zsh/vendor-completions/_nemosandbox",
        "/usr/share/fish/vendor_completions.d/nemosandbox.fish",
        CONFIG,
        "/usr/share/doc/nemosandbox/examples/policies/default.yaml",
        "/usr/share/doc/nemosandbox/copyright",
        "/usr/share/doc/nemosandbox/README.md",
    ] {
        assert!(
            entry(path).starts_with("-rw-r--r-- root/root "),
            "{}",
            entry(path)
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.contains("./usr/share/man/man8/nemosandbox-") && l.ends_with(".8.gz")),
        "a man page per subcommand:\n{listing}"
    );
    // Every file under /etc is a conffile.
    let conffiles = ok("dpkg-deb", &["--info", deb, "conffiles"], long);
    let in_etc: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_once(" ./etc/").map(|(_, p)| p))
        .collect();
    assert!(!in_etc.is_empty(), "{listing}");
    for p in &in_etc {
        let path = format!("/etc/{p}");
        assert!(
            conffiles.lines().any(|c| c == path),
            "{path} is not a conffile:\n{conffiles}"
        );
    }

    // Install.
    let _installed = Installed;
    dpkg(&["-i", deb]);
    assert_eq!(package_status(), "install ok installed");
    assert_eq!(
        std::fs::read(INSTALLED).unwrap(),
        std::fs::read(bin()).unwrap(),
        "the packaged binary is the one under test"
    );
    let ldd = run("ldd", &[INSTALLED], long);
    let ldd_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    println!("ldd {INSTALLED}: {}", ldd_text.trim());
    // glibc's ldd says "statically linked" of a static-pie binary (rustc's crt-static) and "not
    // a dynamic executable" of a non-PIE one; either way no interpreter may be named.
    assert!(
        ldd_text.contains("statically linked") || ldd_text.contains("not a dynamic executable"),
        "{ldd_text}"
    );
    assert!(
        !has_interpreter(&std::fs::read(INSTALLED).unwrap()),
        "{INSTALLED} names a dynamic loader (PT_INTERP)"
    );
    let page = std::fs::read("/usr/share/man/man8/nemosandbox.8.gz").unwrap();
    assert!(page.starts_with(&[0x1f, 0x8b]), "the man page is gzipped");

    // It runs, with the installed node configuration and policies.
    let doctor = run(INSTALLED, &["doctor"], long);
    assert_eq!(
        doctor.status.code(),
        Some(0),
        "doctor:\n{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    // The installed configuration is read: its policy_dirs are searched first.
    let own = "/etc/nemosandbox/policies/pkgtest.yaml";
    std::fs::write(
        own,
        "preset: { name: pkgtest, description: package test }\n",
    )
    .unwrap();
    let list = ok(INSTALLED, &["policy", "list"], long);
    let _ = std::fs::remove_file(own);
    assert!(
        list.lines()
            .any(|l| l.starts_with("pkgtest ") && l.contains(own)),
        "{list}"
    );
    let inside = ok(
        INSTALLED,
        &["sandbox", "--", "sh", "-c", "echo inside"],
        long,
    );
    assert!(inside.contains("inside"), "{inside}");

    // An administrator's edit of a conffile survives a reinstall.
    let edit = "\n# edited by the package test\n";
    let mut config = std::fs::read_to_string(CONFIG).unwrap();
    config.push_str(edit);
    std::fs::write(CONFIG, &config).unwrap();
    dpkg(&["-i", deb]);
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        config,
        "the edited conffile was replaced by the reinstall"
    );
    assert_eq!(package_status(), "install ok installed");

    // Purge leaves nothing of the package, configuration included.
    dpkg(&["--purge", PACKAGE]);
    for p in [
        INSTALLED,
        "/etc/nemosandbox",
        "/usr/share/doc/nemosandbox",
        "/usr/share/man/man8/nemosandbox.8.gz",
        "/usr/share/bash-completion/completions/nemosandbox",
    ] {
        assert!(!Path::new(p).exists(), "{p} is left after the purge");
    }
    let status = package_status();
    assert!(
        status.is_empty() || status.ends_with("not-installed"),
        "dpkg status after the purge: {status}"
    );
}

/// The static binary needs nothing from the userland it runs in: inside a runc container whose
/// root is busybox-static alone (no libc, no libseccomp, no loader), it passes `doctor` and runs
/// a container of its own. runc is the outer runtime so that nothing of nemosandbox confines the
/// outer container; it is privileged (all capabilities, no seccomp, the host's cgroups) as a
/// node installer or a runtime in Kubernetes-in-Docker is.
#[test]
fn the_static_binary_runs_in_a_busybox_userland() {
    let dir = TempDir::new("static-userland");
    let outer = dir.path().join("outer");
    let rootfs = outer.join("rootfs");
    make_busybox_rootfs(&rootfs);
    std::fs::copy(bin(), rootfs.join("nemosandbox")).unwrap();
    for lib in ["lib", "lib64", "usr/lib"] {
        assert!(!rootfs.join(lib).exists(), "the userland has no libraries");
    }
    // The inner bundle, inside the outer root.
    let inner = Bundle::busybox(&["sh", "-c", "echo inner-ran; exit 7"]);
    let status = Command::new("cp")
        .arg("-a")
        .arg(inner.path())
        .arg(rootfs.join("bundle"))
        .status()
        .unwrap();
    assert!(status.success());
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&outer)
        .status()
        .expect("runc (apt-get install runc)");
    assert!(spec.success());
    let cfg_path = outer.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let all_caps: Vec<String> = caps_all();
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "/nemosandbox doctor && /nemosandbox --root /tmp/state run --bundle /bundle inner; echo inner-exit=$?"
    ]);
    for set in ["bounding", "effective", "permitted"] {
        cfg["process"]["capabilities"][set] = serde_json::json!(all_caps);
    }
    cfg["process"]["noNewPrivileges"] = false.into();
    cfg["root"]["readonly"] = false.into();
    let linux = cfg["linux"].as_object_mut().unwrap();
    linux.remove("seccomp");
    linux.insert("maskedPaths".into(), serde_json::json!([]));
    linux.insert("readonlyPaths".into(), serde_json::json!([]));
    linux.insert(
        "resources".into(),
        serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]}),
    );
    let mounts = cfg["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/sys" && m["destination"] != "/sys/fs/cgroup");
    mounts.push(serde_json::json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "rw"]}));
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    let id = unique("static");
    let mut run = Command::new("runc");
    run.arg("--root")
        .arg(dir.path().join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&outer)
        .arg(&id)
        .stdin(Stdio::null());
    let out = output_within(run, scaled(Duration::from_secs(120)));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        text.contains("seccomp user notification"),
        "doctor ran: {text}"
    );
    assert!(
        text.contains("inner-ran") && text.contains("inner-exit=7"),
        "the inner container ran with its exit code: {text}"
    );
}

/// Every capability this process may pass on (its bounding set): a machine may withhold some.
fn caps_all() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, n)| format!("CAP_{n}"))
        .collect()
}
