//! Load + merge of a baseline and 10 presets: the policy work added to every `create`.
//! Target (issue 3): under 2 ms, and under 1% of the `create` path.
//!   cargo bench --bench policy

use criterion::{criterion_group, criterion_main, Criterion};

use nemosandbox::policy::builtin::BUILTIN;
use nemosandbox::policy::load_str;
use nemosandbox::policy::merge::merge;
use nemosandbox::policy::select::{effective, NodeConfig, Request, ANNOTATION_PRESETS};

/// Ten shipped presets.
fn presets() -> Vec<&'static str> {
    BUILTIN
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| !matches!(*n, "default" | "openclaw-sandbox" | "brew"))
        .collect()
}

fn text(name: &str) -> &'static str {
    BUILTIN
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, _)| *t)
        .unwrap()
}

fn bench(c: &mut Criterion) {
    assert_eq!(presets().len(), 10);
    c.bench_function("load+merge baseline + 10 presets from YAML", |b| {
        b.iter(|| {
            // From YAML text: what a policy directory's files cost.
            let base = load_str("builtin:openclaw-sandbox", text("openclaw-sandbox")).unwrap();
            let presets: Vec<_> = presets()
                .iter()
                .map(|p| load_str(p, text(p)).unwrap())
                .collect();
            let eff = merge(&base, &presets, None).unwrap();
            std::hint::black_box(eff.sha256())
        })
    });
    // The whole create-time path: node config (absent), selection from annotations, merge, hash.
    let mut node = NodeConfig::default();
    node.policy_dirs.clear();
    let req = Request {
        annotations: [(ANNOTATION_PRESETS.to_string(), presets().join(","))]
            .into_iter()
            .collect(),
        ..Request::default()
    };
    // Shipped documents come from their build-time JSON.
    c.bench_function(
        "select+merge+hash from annotations, shipped policies (create path)",
        |b| b.iter(|| std::hint::black_box(effective(&node, &req).unwrap().sha256())),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
