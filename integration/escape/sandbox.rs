use super::*;

/// `sandbox` shares the host's network and sees its files: no host daemon's unix socket (under
/// `/run`, or abstract) can be reached from it, the runtime's state is not visible, and a
/// socket of its own works.
#[test]
fn the_sandbox_reaches_no_host_daemon_and_sees_no_runtime_state() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
    let rt = Runtime::new();
    // Another container's state under the same runtime root.
    let b = bundle(&["sleep", "1000"]);
    let other = unique("other");
    rt.ok(&["create", "--bundle", b.path().to_str().unwrap(), &other]);
    // Host daemons: one under /run, one elsewhere on the host (a read-only path inside the
    // sandbox), a datagram one, and an abstract one.
    let name = unique("daemon");
    let run_path = format!("/run/{name}.sock");
    let dir = std::path::PathBuf::from(format!("/var/lib/{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    /// Removes the host paths the test made, also when it fails.
    struct Cleanup(Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let _cleanup = Cleanup(vec![dir.clone(), format!("/run/{name}.sock").into()]);
    let var_path = dir.join("d.sock");
    let dgram_path = dir.join("g.sock");
    let run_daemon = UnixListener::bind(&run_path).unwrap();
    let var_daemon = UnixListener::bind(&var_path).unwrap();
    let dgram_daemon = UnixDatagram::bind(&dgram_path).unwrap();
    let abstract_daemon =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    for l in [&run_daemon, &var_daemon, &abstract_daemon] {
        l.set_nonblocking(true).unwrap();
    }
    dgram_daemon.set_nonblocking(true).unwrap();
    let state = rt.root.path().join(&other);
    let script = dir.join("attack.py");
    std::fs::write(
        &script,
        format!(
            r#"import os, socket, threading
def step(name, f):
    try:
        r = f()
        print(name + ':', 'ok' if r is None else r)
    except OSError as e:
        print(name + ':', 'errno%d' % e.errno)
def c(a):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(a); return 'ok'
    except OSError as e:
        return 'errno%d' % e.errno
def send(a):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b'x', a)
step('run', lambda: c('{run_path}'))
step('host', lambda: c('{var}'))
os.chdir('{dir}')
step('relative', lambda: c('d.sock'))
os.chdir('/')
step('abstract', lambda: c('\0{name}'))
step('dgram', lambda: send('{dgram}'))
keep = []
def own():
    s = socket.socket(socket.AF_UNIX); keep.append(s); s.bind('/tmp/own.sock'); s.listen(4096)
    return c('/tmp/own.sock')
step('own', own)
def own_dgram():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('/tmp/own.dgram')
    send('/tmp/own.dgram')
step('own-dgram', own_dgram)
def listen_abstract():
    s = socket.socket(socket.AF_UNIX); keep.append(s); s.bind('\0own-{name}'); s.listen()
step('listen-abstract', listen_abstract)
step('own-abstract', lambda: c('\0own-{name}'))
os.symlink('{var}', '/tmp/link.sock')
step('link', lambda: c('/tmp/link.sock'))
# The name flips between the sandbox's own socket and a link to the host's while connects run.
stop = False
def flip():
    while not stop:
        try:
            os.symlink('{var}', '/tmp/flip.tmp'); os.rename('/tmp/flip.tmp', '/tmp/flip.sock')
            os.symlink('/tmp/own.sock', '/tmp/flip.tmp'); os.rename('/tmp/flip.tmp', '/tmp/flip.sock')
        except OSError:
            pass
t = threading.Thread(target=flip); t.start()
results = [c('/tmp/flip.sock') for _ in range(1500)]
stop = True; t.join()
print('flip-own:', 'some' if results.count('ok') > 0 else 'none')
def listen_any():
    t = socket.socket(); t.bind(('0.0.0.0', 0)); t.listen()
step('listen-any', listen_any)
step('bind-port', lambda: socket.socket().bind(('0.0.0.0', 18089)))
def listen_loopback():
    t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()
step('listen-loopback', listen_loopback)
step('reuseport', lambda: socket.socket().setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1))
# A full datagram peer, and a socket flipped between blocking and not while it sends there:
# the guard must never wait in the call itself (the sandbox's every later call would wait).
def wedge():
    import subprocess, time
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); keep.append(r); r.bind('/tmp/full')
    w = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); w.setblocking(False)
    try:
        while True:
            w.sendto(b'x' * 512, '/tmp/full')
    except OSError:
        pass
    def toggle():
        while True:
            w.setblocking(True); w.setblocking(False)
    def sends():
        while True:
            try:
                w.sendto(b'x', '/tmp/full')
            except OSError:
                pass
    for f in (toggle, sends):
        threading.Thread(target=f, daemon=True).start()
    time.sleep(2)
    try:
        subprocess.run(['true'], timeout=10)
        return 'alive'
    except subprocess.TimeoutExpired:
        return 'wedged'
step('wedge', wedge)
print('run-entries:', len(os.listdir('/run')))
print('runtime-state:', os.path.exists('{state}'), flush=True)
os._exit(0)
"#,
            var = var_path.display(),
            dir = dir.display(),
            dgram = dgram_path.display(),
            state = state.display(),
        ),
    )
    .unwrap();
    let unix_fence = nemosandbox::netguard::fence::unix_hooks();
    // Without network policies the sandbox has its own network namespace; with them it
    // shares the host's (a preset that allows nothing local).
    for egress in [false, true] {
        let mut argv = vec![];
        if egress {
            argv.extend(["--preset", "github"]);
        }
        argv.extend(["sandbox", "--", "python3", script.to_str().unwrap()]);
        let out = rt.run(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut want = vec![
            ("listen-loopback", "ok"),
            ("run-entries", "0"),
            ("runtime-state", "False"),
            ("host", "errno13"),
            ("relative", "errno13"),
            ("link", "errno13"),
            ("dgram", "errno13"),
        ];
        if unix_fence {
            // The sandbox's own sockets, on its own /tmp, work.
            want.extend([
                ("wedge", "alive"),
                ("run", "errno2"),
                ("own", "ok"),
                ("own-dgram", "ok"),
                ("flip-own", "some"),
            ]);
        } else {
            // Without the kernel's unix hooks no unix socket can be made at all.
            want.extend([
                ("run", "errno13"),
                ("own", "errno13"),
                ("own-dgram", "errno13"),
                ("flip-own", "none"),
                ("listen-abstract", "errno13"),
                ("own-abstract", "errno13"),
            ]);
        }
        if egress {
            want.extend([
                ("listen-any", "errno13"),
                ("bind-port", "errno1"),
                ("abstract", "errno13"),
                ("listen-abstract", "errno13"),
                ("own-abstract", "errno13"),
                ("reuseport", "errno1"),
            ]);
        } else {
            want.extend([
                ("listen-any", "ok"),
                ("bind-port", "ok"),
                ("reuseport", "ok"),
            ]);
            if unix_fence {
                want.extend([
                    ("abstract", "errno111"),
                    ("listen-abstract", "ok"),
                    ("own-abstract", "ok"),
                ]);
            }
        }
        eprintln!("egress={egress}:\n{stdout}");
        expect(&stdout, &want);
        for (what, l) in [
            ("/run", &run_daemon),
            ("/var/lib", &var_daemon),
            ("abstract", &abstract_daemon),
        ] {
            assert!(l.accept().is_err(), "the {what} daemon got a connection");
        }
        assert!(
            dgram_daemon.recv(&mut [0u8; 8]).is_err(),
            "a datagram arrived"
        );
    }
    rt.remove(&other);
}

/// The sandbox's root is the host's, read-only, its working directory writable: a host
/// daemon's socket in the working directory (under a 0700 directory, the socket itself 0666)
/// is not the sandbox's to connect, and a filesystem the host mounts after start (a USB stick,
/// an engine's overlay) neither appears inside nor gets written there.
#[test]
fn the_sandbox_reaches_no_host_socket_in_its_working_directory_or_on_later_mounts() {
    use std::io::{BufRead, Write};
    use std::os::unix::net::UnixListener;
    let rt = Runtime::new();
    let name = unique("work");
    let dir = std::path::PathBuf::from(format!("/var/lib/{name}"));
    let late = dir.join("late");
    let private = dir.join("private");
    std::fs::create_dir_all(&late).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0.join("late"), nix::mount::MntFlags::MNT_DETACH);
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    // A shared mount, as systemd makes every host mount: what the host mounts below it
    // propagates to copies that are its slaves.
    let bind = |flags: nix::mount::MsFlags| {
        nix::mount::mount(Some(&dir), &dir, None::<&str>, flags, None::<&str>).unwrap()
    };
    bind(nix::mount::MsFlags::MS_BIND);
    bind(nix::mount::MsFlags::MS_SHARED);
    let daemon = UnixListener::bind(private.join("d.sock")).unwrap();
    std::fs::set_permissions(
        private.join("d.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    daemon.set_nonblocking(true).unwrap();
    let script = r#"import socket, sys
def step(name, f):
    try:
        r = f()
        print(name + ':', 'ok' if r is None else r, flush=True)
    except OSError as e:
        print(name + ':', 'errno%d' % e.errno, flush=True)
step('work-host', lambda: socket.socket(socket.AF_UNIX).connect('private/d.sock'))
print('ready', flush=True)
sys.stdin.readline()
step('late-connect', lambda: socket.socket(socket.AF_UNIX).connect('late/l.sock'))
step('late-write', lambda: open('late/x', 'w').close())
"#;
    std::fs::write(dir.join("attack.py"), script).unwrap();
    let mut cmd = rt.command(&["sandbox", "--", "python3", "attack.py"]);
    cmd.current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout += &line;
        stdout += "\n";
        if line == "ready" {
            break;
        }
    }
    // The host mounts a filesystem below the sandbox's working directory and listens there.
    nix::mount::mount(
        Some("tmpfs"),
        &late,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let late_daemon = UnixListener::bind(late.join("l.sock")).unwrap();
    late_daemon.set_nonblocking(true).unwrap();
    writeln!(stdin, "go").unwrap();
    for line in lines {
        stdout += &line.unwrap();
        stdout += "\n";
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success());
    // With the unix hooks (Linux 6.7) the later mount is simply not there (ENOENT); without
    // them the sandbox may not create unix sockets at all (EACCES), and says so at start.
    let hooks = kernel().unix_hooks;
    expect(
        &stdout,
        &[
            ("work-host", "errno13"),
            ("late-connect", if hooks { "errno2" } else { "errno13" }),
            // The working directory is writable (include_workdir): the file lands in the
            // directory the host's later mount covers, not in that mount.
            ("late-write", "ok"),
        ],
    );
    assert!(
        !late.join("x").exists(),
        "the sandbox wrote into the host's later mount"
    );
    assert_eq!(
        stderr.contains("no cgroup unix socket hooks"),
        !hooks,
        "the warning must match the kernel"
    );
    assert!(daemon.accept().is_err(), "the host daemon got a connection");
    assert!(late_daemon.accept().is_err(), "the late daemon got one");
    assert!(
        !late.join("x").exists(),
        "the sandbox wrote on the host's later mount"
    );
}

/// Landlock grants are what their paths named at create: a grant directory under a writable
/// parent, swapped for a link to `/`, gives a later `exec` no extra rights.
#[test]
fn a_grant_swapped_for_a_link_gives_later_execs_nothing() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/sandbox/**\": \"rw-\"\n    \"/sandbox/tools/**\": \"rwx\"\n",
    );
    let b = bundle(&["sleep", "1000"]);
    let r = b.path().join("rootfs");
    std::fs::create_dir_all(r.join("sandbox/tools")).unwrap();
    for f in ["sandbox/tools/ok", "sandbox/evil"] {
        std::fs::copy(probe(), r.join(f)).unwrap();
    }
    let c = Running::start(&rt, &pol, &[], &b);
    let run = |argv: &[&str]| {
        let mut a = vec!["exec", c.id.as_str()];
        a.extend_from_slice(argv);
        rt.run(&a).status.success()
    };
    assert!(
        run(&["/sandbox/tools/ok", "memfd"]),
        "the grant's own program runs"
    );
    assert!(
        !run(&["/sandbox/evil", "memfd"]),
        "no execute right outside the grant"
    );
    c.exec_sh("rm -rf /sandbox/tools && ln -s / /sandbox/tools && echo swapped");
    assert!(
        std::fs::read_link(format!("/proc/{}/root/sandbox/tools", c.init())).is_ok(),
        "the workload swapped the grant for a link"
    );
    assert!(
        !run(&["/sandbox/evil", "memfd"]),
        "the link gave the exec execute rights on /"
    );
    assert!(
        run(&["/bin/probe", "memfd"]),
        "the rest of the layout is unchanged"
    );
}
