//! Conformance table of the loader and the merge/selection rules.

use std::collections::HashMap;

use super::builtin::{Library, BUILTIN};
use super::merge::{merge, MergeError};
use super::model::*;
use super::select::{
    select, NodeConfig, Request, SelectError, ANNOTATION_POLICY, ANNOTATION_PRESETS,
};
use super::*;

const NET: &str = "version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - host: api.telegram.org\n        port: 443\n";

/// Expected outcome: valid, or an error on this line containing this text.
type Expect = Result<(), (usize, &'static str)>;

/// (case, document, expected)
fn table() -> Vec<(&'static str, String, Expect)> {
    let bins = "    binaries:\n      - { path: /usr/bin/node }\n";
    let with_ep = |ep: &str| {
        format!("version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - {ep}\n{bins}")
    };
    vec![
        ("minimal baseline", "version: 1\n".into(), Ok(())),
        ("empty document", "".into(), Err((1, "mapping"))),
        ("not a mapping", "- a\n- b\n".into(), Err((1, "mapping"))),
        ("missing version", "landlock: {compatibility: best_effort}\n".into(), Err((1, "version"))),
        ("version 2", "version: 2\n".into(), Err((1, "version must be 1"))),
        ("version as string", "version: \"1\"\n".into(), Err((1, "version"))),
        ("unknown top-level key", "version: 1\nfoo: bar\n".into(), Err((2, "unknown field `foo`"))),
        ("unknown nested key", "version: 1\nlandlock:\n  compatibility: best_effort\n  strict: true\n".into(), Err((4, "unknown field `strict`"))),
        ("bad compatibility", "version: 1\nlandlock:\n  compatibility: sometimes\n".into(), Err((3, "unknown variant `sometimes`"))),
        ("hard_requirement", "version: 1\nlandlock: {compatibility: hard_requirement}\n".into(), Ok(())),
        ("yaml syntax error", "version: 1\nfilesystem_policy: [\n".into(), Err((3, ""))),
        ("duplicate key", "version: 1\nversion: 1\n".into(), Err((2, "duplicate"))),
        ("entry without binaries", NET.to_string(), Err((3, "binaries"))),
        ("entry with empty binaries", format!("{NET}    binaries: []\n"), Err((7, "at least one binary"))),
        ("valid network entry", with_ep("{ host: api.telegram.org, port: 443 }"), Ok(())),
        ("ports list", with_ep("{ host: api.telegram.org, ports: [443, 8443] }"), Ok(())),
        ("port and ports", with_ep("{ host: a.example.com, port: 443, ports: [443] }"), Err((5, "either `port` or `ports`"))),
        ("no port", with_ep("{ host: a.example.com }"), Err((5, "`port` or `ports`"))),
        ("port out of range", with_ep("{ host: a.example.com, port: 70000 }"), Err((5, "port"))),
        ("port zero", with_ep("{ host: a.example.com, port: 0 }"), Err((5, "out of range"))),
        ("bare star host", with_ep("{ host: \"*\", port: 443 }"), Err((5, "every destination"))),
        ("bare double star host", with_ep("{ host: \"**\", port: 443 }"), Err((5, "every destination"))),
        ("top-level wildcard", with_ep("{ host: \"*.com\", port: 443 }"), Err((5, "top-level wildcard"))),
        ("label glob", with_ep("{ host: \"*.cdn.telegram.org\", port: 443 }"), Ok(())),
        ("deep label glob", with_ep("{ host: \"**.telegram.org\", port: 443 }"), Ok(())),
        ("mid wildcard", with_ep("{ host: \"api.*.org\", port: 443 }"), Err((5, "first label"))),
        ("ip literal host", with_ep("{ host: 10.1.2.3, port: 5432 }"), Ok(())),
        ("rules without protocol", with_ep("{ host: a.example.com, port: 443, rules: [{allow: {method: GET, path: /x}}] }"), Err((5, "need `protocol`"))),
        ("rules with access", with_ep("{ host: a.example.com, port: 443, protocol: rest, access: full, rules: [{allow: {method: GET}}] }"), Err((5, "cannot be used together"))),
        ("empty rules", with_ep("{ host: a.example.com, port: 443, protocol: rest, rules: [] }"), Err((5, "rules: []"))),
        ("rest rules", with_ep("{ host: a.example.com, port: 443, protocol: rest, rules: [{allow: {method: GET, path: \"/bot*/**\"}}] }"), Ok(())),
        ("unknown protocol", with_ep("{ host: a.example.com, port: 443, protocol: ftp }"), Err((5, "unknown variant `ftp`"))),
        ("bad enforcement", with_ep("{ host: a.example.com, port: 443, enforcement: maybe }"), Err((5, "unknown variant `maybe`"))),
        ("audit enforcement", with_ep("{ host: a.example.com, port: 443, enforcement: audit }"), Ok(())),
        ("bad access", with_ep("{ host: a.example.com, port: 443, access: everything }"), Err((5, "unknown variant"))),
        ("tls terminate is a warning", with_ep("{ host: a.example.com, port: 443, tls: terminate }"), Ok(())),
        ("bad cidr", with_ep("{ host: db.internal.example, port: 5432, allowed_ips: [10.0.0.0/33] }"), Err((5, "prefix length"))),
        ("good cidr", with_ep("{ host: db.internal.example, port: 5432, allowed_ips: [10.0.0.0/8, \"fd00::/8\"] }"), Ok(())),
        ("relative binary", "version: 1\nnetwork_policies:\n  t:\n    endpoints: [{host: a.example.com, port: 1}]\n    binaries: [{path: node}]\n".into(), Err((5, "absolute"))),
        ("binary glob", "version: 1\nnetwork_policies:\n  t:\n    endpoints: [{host: a.example.com, port: 1}]\n    binaries: [{path: \"/usr/bin/python3*\"}]\n".into(), Ok(())),
        ("binary with extra key", "version: 1\nnetwork_policies:\n  t:\n    endpoints: [{host: a.example.com, port: 1}]\n    binaries: [{path: /bin/x, sha: abc}]\n".into(), Err((5, "unknown field `sha`"))),
        ("relative read_only", "version: 1\nfilesystem_policy:\n  read_only: [usr]\n".into(), Err((3, "absolute"))),
        ("dotdot path", "version: 1\nfilesystem_policy:\n  read_write: [/tmp/../etc]\n".into(), Err((3, "'..'"))),
        ("read_write root", "version: 1\nfilesystem_policy:\n  read_write: [/]\n".into(), Err((3, "whole root"))),
        ("malformed permission", "version: 1\nfilesystem_policy:\n  permissions:\n    \"/x\": rwxoops\n".into(), Err((4, "[r-][w-][x-]"))),
        ("permission wrong order", "version: 1\nfilesystem_policy:\n  permissions:\n    \"/x\": xwr\n".into(), Err((4, "[r-][w-][x-]"))),
        ("permissions ok", "version: 1\nfilesystem_policy:\n  include_workdir: true\n  permissions:\n    \"/**\": r-x\n    \"/sandbox/.ssh/\": \"---\"\n    \"~/.config/**\": rw-\n".into(), Ok(())),
        ("run_as_user 0", "version: 1\nprocess:\n  run_as_user: 0\n".into(), Err((3, "root"))),
        ("run_as_user root", "version: 1\nprocess:\n  run_as_user: root\n".into(), Err((3, "root"))),
        ("run_as_user name", "version: 1\nprocess:\n  run_as_user: sandbox\n  run_as_group: 1000\n".into(), Ok(())),
        ("exec allowlist", "version: 1\nexec_policy:\n  allowlist:\n    - { pattern: \"**/git\" }\n  safe_builtins: true\n".into(), Ok(())),
        ("exec relative pattern", "version: 1\nexec_policy:\n  allowlist:\n    - { pattern: git }\n".into(), Err((4, "absolute"))),
        ("symlink guard", "version: 1\nsymlink_guards:\n  - { dir: /sandbox/.openclaw, target_dir: /sandbox/.openclaw-data }\n".into(), Ok(())),
        ("symlink guard same dirs", "version: 1\nsymlink_guards:\n  - { dir: /a, target_dir: /a/ }\n".into(), Err((3, "same"))),
        ("preset without version", "preset: {name: x, description: d}\nnetwork_policies:\n  x:\n    endpoints: [{host: x.example.com, port: 443}]\n    binaries: [{path: /bin/x}]\n".into(), Ok(())),
        ("preset with version 3", "version: 3\npreset: {name: x}\n".into(), Err((1, "version must be 1"))),
        ("preset header unknown key", "preset: {name: x, owner: me}\n".into(), Err((1, "unknown field `owner`"))),
        ("wrong type for list", "version: 1\nfilesystem_policy:\n  read_only: /usr\n".into(), Err((3, "invalid type"))),
    ]
}

#[test]
fn conformance_table() {
    let cases = table();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (name, doc, want) in cases {
        let got = load_str("case.yaml", &doc);
        match (want, got) {
            (Ok(()), Ok(_)) => {}
            (Ok(()), Err(e)) => panic!("{name}: expected valid, got:\n{e}"),
            (Err((line, text)), Ok(_)) => {
                panic!("{name}: expected error at line {line} containing {text:?}, got Ok")
            }
            (Err((line, text)), Err(e)) => {
                let d = &e.0[0];
                assert!(
                    d.to_string().starts_with(&format!("case.yaml:{line}:")),
                    "{name}: wrong place: {e}"
                );
                assert!(
                    e.to_string().contains(text),
                    "{name}: expected {text:?} in: {e}"
                );
            }
        }
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let doc = "version: 1\nfilesystem_policy:\n  read_only: [rel]\n  permissions:\n    \"/x\": bad\nprocess:\n  run_as_user: 0\n";
    let e = load_str("f.yaml", doc).unwrap_err();
    assert_eq!(e.0.len(), 3, "{e}");
    let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![3, 5, 7]);
}

#[test]
fn warnings_do_not_fail() {
    let doc = "version: 1\nnetwork_policies:\n  t:\n    endpoints:\n      - { host: a.example.com, port: 443, tls: terminate }\n      - { host: b.example.com, port: 443, protocol: grpc, rules: [{allow: {method: GET}}] }\n    binaries: [{path: /bin/x}]\n";
    let l = load_str("w.yaml", doc).unwrap();
    assert_eq!(l.warnings.len(), 2);
    assert!(l.warnings[0].to_string().contains("w.yaml:5:"));
    assert!(l.warnings.iter().any(|w| w.message.contains("deprecated")));
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("host/port/binary level")));
}

#[test]
fn nemoclaw_shaped_files_load_unchanged() {
    let baseline = r#"
version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
  read_write: [/sandbox, /tmp, /dev/null]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:
  nvidia:
    name: nvidia
    endpoints:
      - host: integrate.api.nvidia.com
        port: 443
        protocol: rest
        enforcement: enforce
        tls: terminate
        rules:
          - allow: { method: "*", path: "/**" }
    binaries:
      - { path: /usr/local/bin/openclaw }
      - { path: /usr/local/bin/node }
"#;
    let l = load_str("openclaw-sandbox.yaml", baseline).unwrap();
    assert_eq!(l.doc.network_policies["nvidia"].binaries.len(), 2);
    let preset = r#"
preset:
  name: telegram
  description: "Telegram Bot API access"
network_policies:
  telegram:
    name: telegram
    endpoints:
      - host: api.telegram.org
        port: 443
        access: full
    binaries:
      - { path: "/usr/local/bin/node" }
"#;
    assert!(load_str("telegram.yaml", preset).unwrap().is_preset());
}

#[test]
fn every_shipped_policy_parses_lints_clean_and_lists_binaries() {
    let lib = Library::default();
    for (name, _, _) in BUILTIN {
        let l = lib
            .get(name)
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let l7 = |w: &Diagnostic| w.message.contains("host/port/binary level");
        assert!(l.warnings.iter().all(l7), "{name}: {:?}", l.warnings);
        for (id, np) in &l.doc.network_policies {
            assert!(!np.binaries.is_empty(), "{name}/{id} has no binaries");
        }
        // The build-time JSON and the YAML text are the same document.
        let (_, text, _) = BUILTIN.iter().find(|(n, _, _)| n == name).unwrap();
        assert_eq!(
            load_str("yaml", text).unwrap().doc,
            l.doc,
            "{name}: JSON and YAML differ"
        );
        let is_baseline = *name == "default" || *name == "openclaw-sandbox";
        assert_eq!(l.is_preset(), !is_baseline, "{name}");
    }
    // Interpreters behind wrapper scripts are listed.
    let npm = lib.get("npm").unwrap().unwrap();
    let bins: Vec<&str> = npm.doc.network_policies["npm"]
        .binaries
        .iter()
        .map(|b| b.path.as_str())
        .collect();
    assert!(bins.contains(&"/usr/bin/node") && bins.contains(&"/usr/local/bin/node"));
    let pypi = lib.get("pypi").unwrap().unwrap();
    let bins: Vec<&str> = pypi.doc.network_policies["pypi"]
        .binaries
        .iter()
        .map(|b| b.path.as_str())
        .collect();
    assert!(bins.contains(&"/usr/bin/python3*") && bins.contains(&"/usr/local/bin/python3*"));
    for required in [
        "npm",
        "pypi",
        "github",
        "huggingface",
        "telegram",
        "discord",
        "slack",
        "jira",
        "outlook",
        "docker",
        "brew",
    ] {
        assert!(lib.get(required).is_some(), "{required} not shipped");
    }
}

fn loaded(origin: &str, text: &str) -> Loaded {
    load_str(origin, text).unwrap()
}

fn preset(name: &str, host: &str) -> Loaded {
    loaded(
        name,
        &format!("preset: {{name: {name}}}\nnetwork_policies:\n  shared:\n    endpoints: [{{host: {host}, port: 443}}]\n    binaries: [{{path: /bin/{name}}}]\n  {name}:\n    endpoints: [{{host: {host}, port: 443}}]\n    binaries: [{{path: /bin/{name}}}]\n"),
    )
}

#[test]
fn merge_later_key_replaces_and_says_so() {
    let base = loaded("base", "version: 1\n");
    let eff = merge(
        &base,
        &[preset("a", "a.example.com"), preset("b", "b.example.com")],
        None,
    )
    .unwrap();
    let shared = &eff.network_policies["shared"];
    assert_eq!(shared.from, "b");
    assert_eq!(shared.replaced, vec!["a".to_string()]);
    assert_eq!(shared.policy.endpoints[0].host, "b.example.com");
    assert_eq!(eff.sources, vec!["base", "a", "b"]);
    // Deterministic: the same inputs give the same hash; a different order does not.
    let again = merge(
        &base,
        &[preset("a", "a.example.com"), preset("b", "b.example.com")],
        None,
    )
    .unwrap();
    assert_eq!(eff.sha256(), again.sha256());
    let swapped = merge(
        &base,
        &[preset("b", "b.example.com"), preset("a", "a.example.com")],
        None,
    )
    .unwrap();
    assert_ne!(eff.sha256(), swapped.sha256());
}

#[test]
fn merge_lists_union_permissions_later_wins_stricter_landlock() {
    let base = loaded("base", "version: 1\nfilesystem_policy:\n  read_only: [/usr]\n  permissions: {\"/x\": r--}\nlandlock: {compatibility: best_effort}\nexec_policy:\n  allowlist: [{pattern: /usr/bin/git}]\n");
    let p1 = loaded("p1", "preset: {name: p1}\nfilesystem_policy:\n  read_only: [/usr, /opt]\n  permissions: {\"/x\": rw-}\nlandlock: {compatibility: hard_requirement}\nexec_policy:\n  allowlist: [{pattern: /usr/bin/git}, {pattern: /usr/bin/make}]\n  safe_builtins: false\n");
    let p2 = loaded(
        "p2",
        "preset: {name: p2}\nlandlock: {compatibility: best_effort}\n",
    );
    let eff = merge(&base, &[p1, p2], None).unwrap();
    let ro: Vec<&str> = eff
        .filesystem_policy
        .read_only
        .iter()
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(ro, vec!["/usr", "/opt"]);
    assert_eq!(eff.filesystem_policy.permissions["/x"].value, "rw-");
    assert_eq!(eff.filesystem_policy.permissions["/x"].from, "p1");
    assert_eq!(
        eff.landlock.value,
        Compatibility::HardRequirement,
        "a later best_effort must not weaken"
    );
    let ex = eff.exec_policy.unwrap();
    assert_eq!(ex.allowlist.len(), 2);
    assert!(!ex.safe_builtins);
}

#[test]
fn merge_process_only_from_baseline_or_node() {
    let base = loaded("base", "version: 1\nprocess: {run_as_user: sandbox}\n");
    let bad = loaded("p", "preset: {name: p}\nprocess: {run_as_user: other}\n");
    assert_eq!(
        merge(&base, &[bad], None).unwrap_err(),
        MergeError::PresetSetsProcess("p".into())
    );
    let node = ProcessPolicy {
        run_as_user: Some(IdOrName::Id(1000)),
        run_as_group: None,
    };
    let eff = merge(&base, &[], Some(&node)).unwrap();
    assert_eq!(eff.process.unwrap().from, "node-config");
    assert!(matches!(
        merge(&preset("a", "a.example.com"), &[], None),
        Err(MergeError::PresetAsBaseline(_))
    ));
    assert!(matches!(
        merge(&base, std::slice::from_ref(&base), None),
        Err(MergeError::BaselineAsPreset(_))
    ));
}

#[test]
fn baseline_without_filesystem_gets_the_default_layout() {
    let eff = merge(&loaded("base", "version: 1\n"), &[], None).unwrap();
    let rw: Vec<&str> = eff
        .filesystem_policy
        .read_write
        .iter()
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(rw, vec!["/tmp", "/var/tmp", "/dev/shm"]);
    assert!(eff.filesystem_policy.include_workdir);
    assert_eq!(eff.filesystem_policy.permissions["/**"].value, "r-x");
}

fn req(annotations: &[(&str, &str)]) -> Request {
    Request {
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Request::default()
    }
}

fn node(text: &str) -> NodeConfig {
    let mut n = NodeConfig::parse("config.yaml", text).unwrap();
    n.policy_dirs.clear();
    n
}

#[test]
fn selection_without_annotations_is_the_default_baseline() {
    let s = select(&node(""), &req(&[])).unwrap();
    assert_eq!(s.baseline.origin, "builtin:default");
    assert!(s.presets.is_empty());
}

#[test]
fn selection_adds_annotation_presets_after_node_presets() {
    let n = node("presets: [github]\n");
    let s = select(&n, &req(&[(ANNOTATION_PRESETS, "npm, pypi,github")])).unwrap();
    let names: Vec<&str> = s
        .presets
        .iter()
        .chain(&s.selected)
        .map(|p| p.doc.preset.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, vec!["github", "npm", "pypi"]);
}

#[test]
fn selection_refuses_unknown_disallowed_and_files() {
    let e = select(&node(""), &req(&[(ANNOTATION_PRESETS, "npm,nosuch")])).unwrap_err();
    assert!(
        matches!(&e, SelectError::Unknown { name, .. } if name == "nosuch"),
        "{e}"
    );
    let n = node("allowed_presets: [npm]\n");
    let e = select(&n, &req(&[(ANNOTATION_PRESETS, "pypi")])).unwrap_err();
    assert_eq!(e, SelectError::NotAllowed("pypi".into()));
    assert!(select(&n, &req(&[(ANNOTATION_PRESETS, "npm")])).is_ok());
    let e = select(&node(""), &req(&[(ANNOTATION_PRESETS, "/etc/passwd")])).unwrap_err();
    assert!(matches!(e, SelectError::FilesNotAllowed { .. }), "{e}");
    let e = select(&node(""), &req(&[(ANNOTATION_POLICY, "../x")])).unwrap_err();
    assert!(matches!(e, SelectError::FilesNotAllowed { .. }), "{e}");
}

#[test]
fn annotations_cannot_replace_a_fixed_baseline() {
    let n = node("baseline: openclaw-sandbox\n");
    let e = select(&n, &req(&[(ANNOTATION_POLICY, "default")])).unwrap_err();
    assert!(matches!(e, SelectError::BaselineFixed(..)), "{e}");
    let s = select(&n, &req(&[(ANNOTATION_POLICY, "openclaw-sandbox")])).unwrap();
    assert_eq!(s.baseline.origin, "builtin:openclaw-sandbox");
    // Without a fixed baseline, the annotation chooses one the node allows by name: by
    // default only the built-in `default`.
    let e = select(&node(""), &req(&[(ANNOTATION_POLICY, "openclaw-sandbox")])).unwrap_err();
    assert_eq!(
        e,
        SelectError::BaselineNotAllowed("openclaw-sandbox".into())
    );
    assert!(e.to_string().contains("allowed_baselines"), "{e}");
    assert!(select(&node(""), &req(&[(ANNOTATION_POLICY, "default")])).is_ok());
    let n = node("allowed_baselines: [default, openclaw-sandbox]\n");
    let s = select(&n, &req(&[(ANNOTATION_POLICY, "openclaw-sandbox")])).unwrap();
    assert_eq!(s.baseline.origin, "builtin:openclaw-sandbox");
    // A runtime flag fixes it too.
    let r = Request {
        flag_policy: Some("default".into()),
        ..req(&[(ANNOTATION_POLICY, "openclaw-sandbox")])
    };
    assert!(matches!(
        select(&node(""), &r),
        Err(SelectError::BaselineFixed(..))
    ));
}

#[test]
fn audit_mode_from_annotations_needs_the_node_gate() {
    let dir = std::env::temp_dir().join(format!("nemo-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("loose.yaml"),
        "preset: {name: loose}\nnetwork_policies:\n  l:\n    endpoints: [{host: x.example.com, port: 443, enforcement: audit}]\n    binaries: [{path: /bin/x}]\n",
    )
    .unwrap();
    let mut n = node("");
    n.policy_dirs = vec![dir.clone()];
    let e = select(&n, &req(&[(ANNOTATION_PRESETS, "loose")])).unwrap_err();
    assert!(matches!(e, SelectError::AuditNotAllowed(_)), "{e}");
    n.allow_audit_mode = true;
    assert!(select(&n, &req(&[(ANNOTATION_PRESETS, "loose")])).is_ok());
    // A policy directory overrides a built-in of the same name.
    std::fs::write(
        dir.join("npm.yaml"),
        "preset: {name: npm, description: local}\n",
    )
    .unwrap();
    let s = select(&n, &req(&[(ANNOTATION_PRESETS, "npm")])).unwrap();
    assert_eq!(
        s.selected[0]
            .doc
            .preset
            .as_ref()
            .unwrap()
            .description
            .as_deref(),
        Some("local")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn node_config_is_strict() {
    let e = NodeConfig::parse(
        "config.yaml",
        "allowed_presets: [npm]\nallow_everything: true\n",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("config.yaml:2:"), "{e}");
    assert_eq!(
        NodeConfig::parse("config.yaml", "").unwrap(),
        NodeConfig::default()
    );
}

/// A deterministic mutation run over the shipped policies and the conformance documents (the
/// cargo-fuzz target explores further): truncations, byte flips and splices never panic.
#[test]
fn loader_survives_mutations() {
    let mut seeds: Vec<Vec<u8>> = BUILTIN
        .iter()
        .map(|(_, t, _)| t.as_bytes().to_vec())
        .collect();
    seeds.extend(table().into_iter().map(|(_, d, _)| d.into_bytes()));
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials: &[u8] = b":-[]{}&*!|>'\"#%@`,?\n\t ";
    for seed in &seeds {
        for _ in 0..60 {
            let mut d = seed.clone();
            for _ in 0..(1 + next() % 4) {
                if d.is_empty() {
                    break;
                }
                let i = (next() as usize) % d.len();
                match next() % 4 {
                    0 => d[i] = specials[(next() as usize) % specials.len()],
                    1 => d.truncate(i),
                    2 => d.insert(i, specials[(next() as usize) % specials.len()]),
                    _ => {
                        let j = (next() as usize) % d.len();
                        let chunk: Vec<u8> = d[i.min(j)..i.max(j)].to_vec();
                        d.splice(i..i, chunk);
                    }
                }
            }
            fuzz_one(&d);
        }
    }
}

#[test]
fn annotation_presets_only_narrow_the_filesystem() {
    use crate::layout::{Rights, RuleSet};
    use std::path::Path;
    let dir = crate::testutil::TempDir::new("nemo-narrow");
    std::fs::write(
        dir.path().join("open.yaml"),
        "preset: {name: open}\nfilesystem_policy:\n  include_workdir: true\n  read_write: [/etc, /usr]\n  permissions:\n    \"/etc/shadow\": \"rwx\"\n    \"/usr/bin/**\": \"r--\"\n",
    )
    .unwrap();
    let base = "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n    \"/etc/shadow\": \"---\"\n";
    std::fs::write(dir.path().join("base.yaml"), base).unwrap();
    let mut n = node("allowed_baselines: [base]\n");
    n.policy_dirs = vec![dir.path().to_path_buf()];
    let r = req(&[(ANNOTATION_POLICY, "base"), (ANNOTATION_PRESETS, "open")]);
    let eff = crate::policy::select::effective(&n, &r).unwrap();
    assert!(!eff.filesystem_policy.include_workdir);
    let rules = RuleSet::from_policy(&eff.filesystem_policy, Path::new("/"), None, "").unwrap();
    let at = |p: &str| rules.decide(Path::new(p)).rights;
    assert_eq!(at("/etc/shadow"), Rights::NONE, "the mask holds");
    assert_eq!(at("/etc/passwd"), Rights::RX, "read_write gives nothing");
    assert_eq!(at("/usr/bin/env"), Rights::R, "narrowing works: no execute");
    assert_eq!(at("/tmp/x"), Rights::ALL);
    // The same preset chosen by the node applies as written.
    let flags = Request {
        flag_presets: vec!["open".into()],
        ..req(&[(ANNOTATION_POLICY, "base")])
    };
    let eff = crate::policy::select::effective(&n, &flags).unwrap();
    let rules = RuleSet::from_policy(&eff.filesystem_policy, Path::new("/"), None, "").unwrap();
    assert_eq!(rules.decide(Path::new("/etc/shadow")).rights, Rights::ALL);
}

#[test]
fn annotation_presets_cannot_widen_exec_or_replace_network_policies() {
    let dir = crate::testutil::TempDir::new("nemo-narrow-exec");
    let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    w(
        "base.yaml",
        "version: 1\nexec_policy:\n  allowlist:\n    - { pattern: /usr/bin/git }\nnetwork_policies:\n  api:\n    endpoints: [{ host: api.example.com, port: 443 }]\n    binaries: [{ path: /usr/bin/curl }]\n",
    );
    w("plain.yaml", "version: 1\n");
    w(
        "wide.yaml",
        "preset: {name: wide}\nexec_policy:\n  allowlist:\n    - { pattern: /usr/bin/** }\n  shells: [/usr/bin/python3]\n",
    );
    w(
        "takeover.yaml",
        "preset: {name: takeover}\nnetwork_policies:\n  api:\n    endpoints: [{ host: api.example.com, port: 443 }]\n    binaries: [{ path: /usr/bin/** }]\n",
    );
    let mut n = node("allowed_baselines: [base, plain]\n");
    n.policy_dirs = vec![dir.path().to_path_buf()];
    let eff = |base: &str, preset: &str| {
        crate::policy::select::effective(
            &n,
            &req(&[(ANNOTATION_POLICY, base), (ANNOTATION_PRESETS, preset)]),
        )
    };
    let e = eff("base", "wide").unwrap().exec_policy.unwrap();
    let patterns: Vec<&str> = e
        .allowlist
        .iter()
        .map(|p| p.value.pattern.as_str())
        .collect();
    assert_eq!(patterns, ["/usr/bin/git"], "the node's gate is not widened");
    assert!(e.shells.is_empty());
    // With no gate of the node's, turning one on narrows.
    let e = eff("plain", "wide").unwrap().exec_policy.unwrap();
    assert_eq!(e.allowlist.len(), 1);
    let err = eff("base", "takeover").unwrap_err().to_string();
    assert!(
        err.contains("\"api\"") && err.contains("cannot replace"),
        "{err}"
    );
}

#[test]
fn the_unconfined_baseline_is_the_nodes_choice_alone() {
    use super::select::{effective, OCI_BASELINE};
    // The node or the flag chooses it: nothing to merge, marked unconfined.
    let e = effective(&node("baseline: oci\n"), &req(&[])).unwrap();
    assert!(e.unconfined);
    assert!(e.network_policies.is_empty() && e.exec_policy.is_none());
    let flag = Request {
        flag_policy: Some(OCI_BASELINE.into()),
        ..req(&[(ANNOTATION_POLICY, OCI_BASELINE)])
    };
    assert!(effective(&node(""), &flag).unwrap().unconfined);
    // A workload cannot opt out, even where annotations may choose baselines.
    let n = node("allowed_baselines: [default, oci]\n");
    let e = effective(&n, &req(&[(ANNOTATION_POLICY, OCI_BASELINE)])).unwrap_err();
    assert_eq!(e, SelectError::OciByAnnotation);
    // Under a fixed oci, another baseline by annotation is refused as for any fixed one.
    let e = effective(
        &node("baseline: oci\n"),
        &req(&[(ANNOTATION_POLICY, "default")]),
    )
    .unwrap_err();
    assert!(matches!(e, SelectError::BaselineFixed(..)), "{e}");
    // No presets beside it, from any source.
    for (cfg, ann) in [
        ("baseline: oci\npresets: [npm]\n", vec![]),
        ("baseline: oci\n", vec![(ANNOTATION_PRESETS, "pypi")]),
    ] {
        let e = effective(&node(cfg), &req(&ann)).unwrap_err();
        assert!(matches!(e, SelectError::OciWithPresets(_)), "{e}");
    }
    // Every other baseline stays confined.
    assert!(!effective(&node(""), &req(&[])).unwrap().unconfined);
}
