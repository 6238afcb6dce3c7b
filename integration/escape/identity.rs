use super::*;

const PY_CONNECT: &str = "import errno, socket, sys\n\
port = int(sys.argv[-1])\n\
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
l.bind(('127.0.0.1', port)); l.listen()\n\
c = socket.socket()\n\
try:\n    c.connect(('127.0.0.1', port)); print('ok')\n\
except OSError as e:\n    print(errno.errorcode.get(e.errno, e.errno))\n";

/// Attack 5: identity a process could forge after start. The policy allows `/app/ok.py`
/// (python3), `/app/ok.js` (node) and `/bin/probe-dyn` (a dynamically linked ELF). What
/// matters is what `execve` started, captured by the guard at the exec stop.
#[test]
fn identity_is_what_execve_started() {
    let rt = Runtime::new();
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  app:\n    endpoints:\n      - { host: 127.0.0.1, ports: [18661, 18662, 18663] }\n\
         \x20   binaries:\n      - { path: /app/ok.py }\n      - { path: /app/ok.js }\n      - { path: /bin/probe-dyn }\n",
    );
    // The evil script rewrites its own argv memory to read `python3 /app/ok.py 18661`, checks
    // that /proc/self/cmdline now says so, then connects.
    let evil = format!(
        "import ctypes\n\
         f = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n\
         start, end = int(f[45]), int(f[46])\n\
         want = b'python3\\0/app/ok.py\\x0018661\\0'\n\
         assert len(want) <= end - start, (len(want), end - start)\n\
         ctypes.memmove(start, want.ljust(end - start, b'\\0'), end - start)\n\
         assert b'/app/ok.py' in open('/proc/self/cmdline', 'rb').read()\n{PY_CONNECT}"
    );
    // The swapping script replaces itself with a link to the allowed one before connecting.
    let swapper = format!(
        "import os\nos.remove('/tmp/s.py'); os.symlink('/app/ok.py', '/tmp/s.py')\n{PY_CONNECT}"
    );
    let node_code = NODE_CONNECT.replace('\n', " ");
    let script = [
        q("py", "python3 /app/ok.py 18661"),
        q("py-direct", "/app/ok.py 18661"),
        q("py-u", "python3 -u /app/ok.py 18661"),
        q("py-stdin", "python3 - /app/ok.py 18661 < /app/ok.py"),
        q("py-i", "python3 -i /app/ok.py 18661 < /dev/null"),
        q("py-W", "python3 -W x /app/ok.py /tmp/evil.py 18661"),
        q("py-evil-argv", "python3 /tmp/evil.py 18661"),
        q("py-swap", "python3 /tmp/s.py 18661"),
        q("py-path", "PYTHONPATH=/tmp python3 /app/ok.py 18661"),
        q("py-user-site", "HOME=/tmp/h python3 /app/ok.py 18661"),
        q(
            "py-user-site-off",
            "HOME=/tmp/h python3 -s /app/ok.py 18661",
        ),
        q(
            "py-venv",
            "probe execas /tmp/v/bin/python3 /usr/bin/python3 /app/ok.py 18661",
        ),
        q(
            "py-argv0",
            "probe execas /usr/bin/python3 /usr/bin/python3 /app/ok.py 18661",
        ),
        q("node", "node /app/ok.js 18662"),
        q("node-opt", "node --no-warnings /app/ok.js 18662"),
        q("node-stdin", "node - /app/ok.js 18662 < /app/ok.js"),
        q(
            "node-print",
            &format!("node --print \"{node_code}\" /app/ok.js 18662 | tail -1"),
        ),
        q("node-loader", "node --loader=/tmp/l.mjs /app/ok.js 18662"),
        q(
            "node-exp-loader",
            "node --experimental-loader=/tmp/l.mjs /app/ok.js 18662",
        ),
        q("node-import", "node --import=/tmp/l.mjs /app/ok.js 18662"),
        q("node-env-file", "node --env-file=/tmp/env /app/ok.js 18662"),
        q("node-home", "HOME=/tmp/h node /app/ok.js 18662"),
        q("elf", "probe-dyn connect 18663"),
        q(
            "elf-preload",
            "LD_PRELOAD=/tmp/x.so PRELOAD_PORT=18661 probe-dyn connect 18663 | tr '\\n' ' '",
        ),
        q(
            "elf-libpath",
            "LD_LIBRARY_PATH=/tmp probe-dyn connect 18663",
        ),
        q(
            "elf-libpath-ro",
            "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu probe-dyn connect 18663",
        ),
        q(
            "elf-openssl",
            "OPENSSL_CONF=/tmp/ssl.cnf probe-dyn connect 18663",
        ),
        q("probe", "probe connect 18663"),
    ]
    .concat();
    // Each run gets fresh copies of the files the attacks change.
    let setup =
        "cp /app/evil.py /tmp/evil.py; cp /app/swap.py /tmp/s.py; cp /app/l.mjs /tmp/l.mjs; \
                 cp /app/env /tmp/env; cp /app/x.so /tmp/x.so; ";
    let b = bundle(&["sh", "-c", &format!("{setup}{script}")]);
    host_network(&b);
    with_interpreters(&b);
    let r = b.path().join("rootfs");
    install_binary(probe_dynamic(), &r.join("bin/probe-dyn"));
    std::fs::create_dir_all(r.join("app")).unwrap();
    let exe = |f: &str, content: &str| {
        std::fs::write(r.join("app").join(f), content).unwrap();
        std::fs::set_permissions(
            r.join("app").join(f),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    };
    exe("ok.py", &format!("#!/usr/bin/python3\n{PY_CONNECT}"));
    exe("ok.js", &format!("#!/usr/bin/node\n{NODE_CONNECT}"));
    exe("evil.py", &evil);
    exe("swap.py", &swapper);
    // Injected modules and env files could hold anything; the options alone are refused, so
    // these stay harmless and the allowed script's own connect shows the refusal.
    exe("l.mjs", "export {};\n");
    exe("env", "X=1\n");
    // Harmless here; what matters is that python would run it inside the allowed script.
    exe("evil.pth", "import os; os.environ['PTH_RAN'] = '1'\n");
    std::fs::copy(preload_library(), r.join("app/x.so")).unwrap();
    let want = [
        ("py", "ok"),
        ("py-direct", "ok"),
        ("py-u", "ok"),
        ("py-stdin", "EACCES"),
        ("py-i", "EACCES"),
        ("py-W", "EACCES"),
        ("py-evil-argv", "EACCES"),
        ("py-swap", "EACCES"),
        ("py-path", "EACCES"),
        ("py-user-site", "EACCES"),
        ("py-user-site-off", "ok"),
        ("py-venv", "EACCES"),
        ("py-argv0", "ok"),
        ("node", "ok"),
        ("node-opt", "ok"),
        ("node-stdin", "EACCES"),
        ("node-print", "EACCES"),
        ("node-loader", "EACCES"),
        ("node-exp-loader", "EACCES"),
        ("node-import", "EACCES"),
        ("node-env-file", "EACCES"),
        ("node-home", "EACCES"),
        ("elf", "ok"),
        ("elf-preload", "preload: EACCES EACCES"),
        ("elf-libpath", "EACCES"),
        ("elf-libpath-ro", "ok"),
        ("elf-openssl", "EACCES"),
        ("probe", "EACCES"),
    ];
    let out = run_bundle(&rt, Some(&pol), &b, &[]);
    expect(&out, &want);
    // The same from an exec'd process.
    let b2 = bundle(&["sleep", "1000"]);
    host_network(&b2);
    with_interpreters(&b2);
    let r2 = b2.path().join("rootfs");
    std::fs::remove_dir_all(r2.join("app")).ok();
    copy_dir(&r.join("app"), &r2.join("app"));
    install_binary(probe_dynamic(), &r2.join("bin/probe-dyn"));
    let c = Running::start(&rt, &pol, &[], &b2);
    let out = c.exec_sh(&format!("{setup}{script}"));
    expect(&out, &want);
    let audit = c.audit();
    for needle in [
        "standard input",
        "given -i",
        "given -W",
        "not read-only",
        "PYTHONPATH",
        "LD_PRELOAD",
        "--loader",
    ] {
        assert!(
            audit.contains(needle),
            "no audit reason {needle:?}: {audit}"
        );
    }
}

/// Like `p`, with the command's standard error dropped (interpreters' warnings).
fn q(label: &str, cmd: &str) -> String {
    format!("echo \"{label}: $({cmd} 2>/dev/null)\"; ")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Attack 6: a query with two questions, and an upstream answer that carries an address
/// for a name nobody asked.
#[test]
fn the_resolver_answers_one_question_with_the_asked_names_addresses_only() {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let _dns = TestDns::start_with_extra(
        &net.path(),
        t(53),
        &[("ok.nemo.test", t(20)), ("other.nemo.test", t(21))],
        &[("ok.nemo.test", "evil.nemo.test", t(66))],
    );
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  named:\n    endpoints:\n      - { host: ok.nemo.test, port: 18671 }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let id_hint = "RESOLVER";
    let script = [
        p(
            "two",
            &format!("probe dns2 {id_hint} ok.nemo.test other.nemo.test"),
        ),
        p("name", "probe name ok.nemo.test 18671"),
        p("asked-ip", "probe connect 18671 203.0.113.20"),
        p("extra-ip", "probe connect 18671 203.0.113.66"),
    ]
    .concat();
    let id = unique("dns");
    let resolver = nemosandbox::netguard::prepare::resolver_address(&id).to_string();
    let b = bundle(&["sh", "-c", &script.replace(id_hint, &resolver)]);
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    net.join(&b);
    let (out, audit) = rt.run_kept(&pol, &b, &id);
    expect(
        &out,
        &[
            ("two", "REFUSED answers=0"),
            ("name", "ok"),
            ("asked-ip", "ok"),
            ("extra-ip", "EACCES"),
        ],
    );
    assert!(audit.contains("exactly one question"), "{audit}");
}
