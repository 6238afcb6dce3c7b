//! Time a symlink guard adds to `create`: validate and freeze a directory of 100 links
//! (set the immutable attribute, read every link through the root), then undo it as `delete`
//! does. Target (issue 6): under 2 ms. Needs root (the immutable attribute).
//!   cargo bench --bench guard

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};

use nemosandbox::policy::model::SymlinkGuard;
use nemosandbox::symlinks::{clear_immutable, harden};

fn image() -> PathBuf {
    let root = std::env::temp_dir().join(format!("nemo-guard-bench-{}", std::process::id()));
    let dir = root.join("sandbox/.openclaw");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(root.join("sandbox/.openclaw-data")).unwrap();
    for i in 0..100 {
        let name = format!("link{i}.json");
        std::os::unix::fs::symlink(format!("/sandbox/.openclaw-data/{name}"), dir.join(&name))
            .unwrap();
    }
    root
}

fn bench(c: &mut Criterion) {
    let root = image();
    let guard = SymlinkGuard {
        dir: "/sandbox/.openclaw".into(),
        target_dir: "/sandbox/.openclaw-data".into(),
        required: None,
    };
    let dir = root.join("sandbox/.openclaw");
    let md = std::fs::metadata(&dir).unwrap();
    c.bench_function("symlink guard: 100 links, harden + clear", |b| {
        b.iter(|| {
            let o = harden(&guard, &root, &root).unwrap();
            assert_eq!(o.outcome, nemosandbox::symlinks::Stage::Hardened);
            clear_immutable(&dir, md.dev(), md.ino());
        })
    });
    std::fs::remove_dir_all(&root).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
