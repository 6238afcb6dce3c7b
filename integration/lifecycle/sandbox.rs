use std::process::Command;

use super::*;
use common::probe::expect;

/// A host directory for `sandbox` tests: not under `/tmp` or `/var/tmp`, which the sandbox
/// mounts afresh.
struct HostDir(PathBuf);

impl HostDir {
    fn new(name: &str) -> HostDir {
        let p = Path::new("/var/lib/nemosandbox-tests").join(unique(name));
        std::fs::create_dir_all(&p).unwrap();
        HostDir(p)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sandbox ARGS…` run from `dir`.
fn sandbox_in(rt: &Runtime, dir: &Path, args: &[&str]) -> Command {
    let mut all = vec!["sandbox"];
    all.extend(args);
    let mut cmd = rt.command(&all);
    cmd.current_dir(dir);
    cmd
}

/// Shell for one write attempt: `label: ok` or `label: denied`.
fn write_case(label: &str, path: &str) -> String {
    format!("touch {path} 2>/dev/null && echo '{label}: ok' || echo '{label}: denied'; ")
}

/// The working directory is writable (the default policy's `include_workdir`), so are the
/// `--rw` paths; `--ro` keeps a path under them read-only, and everything else of the host
/// stays read-only. `--clear-env`/`--env` choose the environment, `--cwd` the directory.
#[test]
fn sandbox_writes_the_workdir_and_rw_paths_only() {
    let rt = Runtime::new();
    let proj = HostDir::new("proj");
    let data = HostDir::new("data");
    let other = HostDir::new("other");
    std::fs::create_dir(proj.0.join("keep")).unwrap();
    std::fs::create_dir_all(proj.0.join(".git/hooks")).unwrap();
    std::fs::create_dir_all(proj.0.join(".git/objects")).unwrap();
    std::fs::write(proj.0.join(".git/config"), "").unwrap();
    let script = [
        write_case("workdir", "new"),
        // What the caller's next git command would run on the host stays read-only.
        write_case("git-hook", ".git/hooks/pre-commit"),
        write_case("git-config", ".git/config"),
        write_case("git-object", ".git/objects/o"),
        write_case("ro-in-workdir", "keep/x"),
        write_case("rw", &format!("{}/y", data.0.display())),
        write_case("other", &format!("{}/z", other.0.display())),
        write_case("etc", "/etc/nemo-sbx"),
        write_case("var-tmp", "/var/tmp/nemo-sbx"),
        "echo \"foo: ${FOO:-unset}\"; echo \"secret: ${SECRET:-unset}\"; echo \"pwd: $(pwd)\"; exit 3".into(),
    ]
    .concat();
    let rw = data.0.to_str().unwrap();
    let mut cmd = sandbox_in(
        &rt,
        &proj.0,
        &[
            "--rw",
            rw,
            "--ro",
            "keep",
            "--clear-env",
            "--env",
            "FOO",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.env("FOO", "f").env("SECRET", "s");
    let out = output_within(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect(
        &stdout,
        &[
            ("workdir", "ok"),
            ("git-hook", "denied"),
            ("git-config", "denied"),
            ("git-object", "ok"),
            ("ro-in-workdir", "denied"),
            ("rw", "ok"),
            ("other", "denied"),
            ("etc", "denied"),
            ("var-tmp", "ok"),
            ("foo", "f"),
            ("secret", "unset"),
            ("pwd", proj.0.to_str().unwrap()),
        ],
    );
    // Written on the host, by the caller; the scratch directory is the sandbox's own.
    let new = std::fs::metadata(proj.0.join("new")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&new), 0);
    assert!(data.0.join("y").exists());
    assert!(!proj.0.join("keep/x").exists() && !other.0.join("z").exists());
    assert!(!Path::new("/var/tmp/nemo-sbx").exists());

    // --cwd: that directory, writable in its turn; the caller's own stays read-only.
    let script = [
        write_case("cwd", "c"),
        write_case("caller-dir", &format!("{}/c", proj.0.display())),
        "echo \"pwd: $(pwd)\"".into(),
    ]
    .concat();
    let cmd = sandbox_in(&rt, &proj.0, &["--cwd", rw, "--", "sh", "-c", &script]);
    let out = output_within(cmd, Duration::from_secs(60));
    expect(
        &String::from_utf8_lossy(&out.stdout),
        &[
            ("cwd", "ok"),
            ("caller-dir", "denied"),
            ("pwd", data.0.to_str().unwrap()),
        ],
    );

    // Refused before anything is made: a path that does not exist, a link (an earlier run
    // may have planted it, to /etc), a directory above what the sandbox mounts afresh.
    std::os::unix::fs::symlink("/etc", proj.0.join("build")).unwrap();
    for (args, says) in [
        (vec!["--rw", "/nonexistent-nemo"], "--rw /nonexistent-nemo"),
        (
            vec!["--rw", "build"],
            "--rw build: is or passes through a symbolic link",
        ),
        (
            vec!["--cwd", "build"],
            "--cwd build: is or passes through a symbolic link",
        ),
        (
            vec!["--rw", "/var"],
            "--rw /var: it is /var/tmp or above it",
        ),
        (vec!["--rw", "/etc"], "--rw /etc: it is in or above /etc"),
    ] {
        let mut all = args.clone();
        all.extend(["--", "touch", "/etc/nemo-sbx"]);
        let out = output_within(sandbox_in(&rt, &proj.0, &all), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    assert!(!Path::new("/etc/nemo-sbx").exists());
    assert_no_sandbox_left(&rt);
}

/// A tmux server of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cwd: &Path, command: &str) -> Tmux {
        let t = Tmux {
            socket: unique("tmux"),
        };
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "30",
                command,
            ])
            .current_dir(cwd)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux did not start");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        assert!(self.cmd(&args).status().unwrap().success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (at most `limit`) until the screen shows `text`.
    fn shows(&self, text: &str, limit: Duration) {
        assert!(
            self.showed_within(text, limit),
            "{text:?} not on screen within {limit:?}:\n{}",
            self.screen()
        );
    }

    fn showed_within(&self, text: &str, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while !self.screen().contains(text) {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

/// An interactive shell in a sandbox, typed at as a person would in a terminal: it has a
/// terminal of its own (job control, `tty`, the window's size, resizes), Ctrl-C interrupts
/// the running command and not the sandbox, the exit code is the shell's, and the caller's
/// terminal is back in its own mode afterwards.
#[test]
fn sandbox_in_a_terminal_behaves_like_the_plain_shell() {
    let rt = Runtime::new();
    let dir = HostDir::new("tty");
    let exit = dir.0.join("exit");
    let modes = dir.0.join("modes");
    let command = format!(
        "{} --root {} sandbox -- sh 2>{}; echo EXIT=$? > {}; stty -a > {}; sleep 60",
        bin(),
        rt.root.path().display(),
        dir.0.join("stderr").display(),
        exit.display(),
        modes.display(),
    );
    let tmux = Tmux::start(&dir.0, &command);
    let limit = scaled(Duration::from_secs(10));
    tmux.shows("#", limit);
    tmux.keys(&["echo hello-$((6*7)); tty; stty size", "Enter"]);
    // Each answer is waited for: the shell prints them one after the other.
    tmux.shows("hello-42", limit);
    tmux.shows("/dev/pts/0", limit);
    tmux.shows("30 120", limit);
    let screen = tmux.screen();
    assert!(!screen.contains("job control turned off"), "{screen}");
    // Ctrl-C ends the command in the sandbox's foreground, well before its 100 s.
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo after-$?", "Enter"]);
    tmux.shows("after-130", limit);
    // A resize reaches the sandbox's terminal.
    assert!(tmux
        .cmd(&["resize-window", "-t", "t", "-x", "100", "-y", "25"])
        .status()
        .unwrap()
        .success());
    // Asked again until the new size shows: the resize travels as a signal to the runtime.
    let asked = std::time::Instant::now();
    loop {
        tmux.keys(&["stty size", "Enter"]);
        if tmux.showed_within("25 100", Duration::from_secs(1)) {
            break;
        }
        assert!(asked.elapsed() < limit, "{}", tmux.screen());
    }
    tmux.keys(&["exit 5", "Enter"]);
    wait_until(|| std::fs::read_to_string(&modes).is_ok_and(|m| m.contains("icanon")));
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "EXIT=5");
    let modes = std::fs::read_to_string(&modes).unwrap();
    assert!(
        modes.contains(" icanon") && modes.contains(" echo ") && !modes.contains("-icanon"),
        "the caller's terminal was left in raw mode: {modes}"
    );
    // Warnings about what an older kernel lacks may come; no error.
    let stderr = std::fs::read_to_string(dir.0.join("stderr")).unwrap();
    assert!(
        !stderr.contains("level=error") && !stderr.contains("nemosandbox:"),
        "{stderr}"
    );
    let sockets: Vec<_> = std::fs::read_dir(rt.root.path().join(".nemosandbox"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".console"))
        .collect();
    assert!(sockets.is_empty(), "console socket left: {sockets:?}");
}
