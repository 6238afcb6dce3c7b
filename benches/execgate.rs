//! Exec gate decision time for a 10-segment chain (parse, resolve each program inside the
//! root, match the allowlist). Target (issue 7): under 200 µs.
//!   cargo bench --bench execgate

use criterion::{criterion_group, criterion_main, Criterion};

use nemosandbox::execgate::eval::{evaluate, Context};
use nemosandbox::execgate::PrefixFs;

fn bench(c: &mut Criterion) {
    // The host's own tree stands for a container root: /usr/bin has ls, cat, env.
    let allowlist = vec!["/usr/bin/*".to_string()];
    // Landlock granting no writes: the host's own files count as unchangeable.
    let fs = PrefixFs::new(std::path::Path::new("/"), Some(Vec::new()));
    let shells = nemosandbox::execgate::shell_ids(&fs, &[]);
    let ctx = Context {
        allowlist: &allowlist,
        safe_builtins: true,
        path_var: Some("/usr/local/bin:/usr/bin:/bin"),
        cwd: "/tmp".into(),
        home: "/root".into(),
        shells: &shells,
        exec_env: &[],
        env: &[],
        stdin_socket: false,
    };
    let script = "cd /tmp && ls -l && cat x | sort && true && test -n a && [ a ] && pwd && cd / && ls 'a b' ; env";
    let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    assert!(evaluate(&argv, &ctx, &fs).is_ok());
    c.bench_function("exec gate: 10-segment chain", |b| {
        b.iter(|| std::hint::black_box(evaluate(&argv, &ctx, &fs).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
