//! The 13 conformance cases of the layout on the plan, against a real image tree in a temporary
//! directory (the same cases run from inside containers in `integration/confinement.rs`).

use std::fs;
use std::path::Path;

use oci_spec::runtime::{MountBuilder, Spec};

use super::plan::{plan, Action, Base, Plan};
use super::rules::{Rights, RuleSet};
use super::tree::ContainerTree;
use crate::testutil::TempDir;

type Image = TempDir;

fn image() -> Image {
    let img = TempDir::new("nemo-layout");
    let root = img.0.clone();
    for d in [
        "bin",
        "usr/bin",
        "lib",
        "etc",
        "tmp",
        "proc",
        "dev",
        "sandbox/.ssh",
        "var/log",
        "home/a/.config",
        "home/b/.config",
        "home/c",
        "h/.ssh",
        "d/secret",
        "w",
        "t",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in [
        "bin/sh",
        "etc/shadow",
        "etc/passwd",
        "sandbox/.ssh/id",
        "var/log/secret1",
        "var/log/secret2",
        "var/log/other",
        "home/a/.config/x",
        "h/.ssh/k.json",
        "h/a.json",
        "d/secret/s",
        "d/x",
        "w/f",
        "t/bin",
    ] {
        fs::write(root.join(f), "data").unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.join("sbin")).unwrap();
    img
}

fn tree(img: &Image) -> ContainerTree {
    let m = |dest: &str, typ: &str| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(typ)
            .build()
            .unwrap()
    };
    ContainerTree::new(
        &img.0,
        &[
            m("/proc", "proc"),
            m("/dev", "tmpfs"),
            m("/dev/pts", "devpts"),
        ],
    )
}

fn plan_of(img: &Image, map: &[(&str, &str)]) -> Plan {
    plan(&RuleSet::from_map(map).unwrap(), &tree(img)).unwrap()
}

fn steps(p: &Plan) -> Vec<(String, &'static str)> {
    p.steps
        .iter()
        .map(|s| {
            let kind = match s.action {
                Action::BindRw { .. } => "rw",
                Action::BindRo { .. } => "ro",
                Action::MaskDir => "mask-dir",
                Action::MaskFile => "mask-file",
                Action::MaskSpecial => "mask-special",
                Action::Tmpfs => "tmpfs",
                Action::Symlink { .. } => "symlink",
            };
            (s.dest.to_string_lossy().into_owned(), kind)
        })
        .collect()
}

fn s(dest: &str, kind: &'static str) -> (String, &'static str) {
    (dest.to_string(), kind)
}

/// What Landlock grants on `path`: the union of the grants on it and its ancestors.
fn landlock(p: &Plan, path: &str) -> Rights {
    let path = Path::new(path);
    p.grants
        .iter()
        .filter(|g| path.starts_with(&g.path) && (g.dir || g.path == path))
        .fold(Rights::NONE, |acc, g| acc.union(g.rights))
}

#[test]
fn case01_read_only_everything() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--")]);
    assert_eq!(p.base, Base::Permissive);
    assert!(!p.root_writable);
    assert_eq!(steps(&p), vec![s("/tmp", "tmpfs")]);
    assert_eq!(landlock(&p, "/etc/passwd"), Rights::R);
    assert_eq!(landlock(&p, "/dev/null"), Rights::RW);
    assert_eq!(landlock(&p, "/tmp/x"), Rights::RW);
    let mut spec = Spec::default();
    let mut root = spec.root().clone().unwrap();
    root.set_path(img.0.clone());
    spec.set_root(Some(root));
    let own = crate::container_dir::ContainerDir::new(img.0.join("own"));
    fs::create_dir(&own).unwrap();
    super::apply(&p, &mut spec, &own).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let dests: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    assert!(dests.contains(&"/tmp".to_string()) && dests.contains(&"/proc".to_string()));
}

#[test]
fn case02_empty_map_is_restrictive() {
    let img = image();
    let p = plan_of(&img, &[]);
    assert_eq!(p.base, Base::Restrictive);
    assert_eq!(
        steps(&p),
        vec![
            s("/usr", "ro"),
            s("/bin", "ro"),
            s("/lib", "ro"),
            s("/sbin", "symlink"),
            s("/etc", "ro"),
        ]
    );
    assert_eq!(landlock(&p, "/etc/passwd"), Rights::NONE);
}

#[test]
fn case03_tmp_read_only_means_no_tmpfs() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/tmp/**", "r--")]);
    assert_eq!(steps(&p), vec![]);
}

#[test]
fn case04_tmp_read_write_is_a_bind() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/tmp/**", "rw-")]);
    assert_eq!(steps(&p), vec![s("/tmp", "rw")]);
    assert_eq!(landlock(&p, "/tmp/x"), Rights::RW);
}

#[test]
fn case05_masked_directory_under_writable_root() {
    let img = image();
    let p = plan_of(&img, &[("/**", "rwx"), ("/sandbox/.ssh/", "---")]);
    assert!(p.root_writable);
    assert_eq!(
        steps(&p),
        vec![s("/tmp", "tmpfs"), s("/sandbox/.ssh", "mask-dir")]
    );
}

#[test]
fn case06_masked_file_gets_an_empty_file() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/etc/shadow", "---")]);
    assert_eq!(
        steps(&p),
        vec![s("/tmp", "tmpfs"), s("/etc/shadow", "mask-file")]
    );
}

#[test]
fn case07_last_component_glob_masks_each_match() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/var/log/secret*", "---")]);
    assert_eq!(
        steps(&p),
        vec![
            s("/tmp", "tmpfs"),
            s("/var/log/secret1", "mask-file"),
            s("/var/log/secret2", "mask-file"),
        ]
    );
    assert_eq!(p.matches.len(), 1);
    assert_eq!(landlock(&p, "/var/log/other"), Rights::R);
}

#[test]
fn case08_deeper_literal_prefix_wins() {
    let img = image();
    let map = [
        ("/h/**", "rwx"),
        ("/h/**/*.json", "rwx"),
        ("/h/.ssh/**", "---"),
    ];
    let rules = RuleSet::from_map(&map).unwrap();
    assert_eq!(
        rules.decide(Path::new("/h/.ssh/k.json")).rights,
        Rights::NONE
    );
    assert_eq!(rules.decide(Path::new("/h/a.json")).rights, Rights::ALL);
    let p = plan_of(&img, &map);
    let st = steps(&p);
    assert!(st.contains(&s("/h", "rw")), "{st:?}");
    assert!(st.contains(&s("/h/.ssh", "mask-dir")), "{st:?}");
    assert!(!st.iter().any(|(d, _)| d == "/h/.ssh/k.json"), "{st:?}");
}

#[test]
fn case09_read_only_child_after_read_write_parent() {
    let img = image();
    let p = plan_of(&img, &[("/d/**", "rw-"), ("/d/secret/**", "r--")]);
    let st = steps(&p);
    let rw = st.iter().position(|x| *x == s("/d", "rw")).unwrap();
    let ro = st.iter().position(|x| *x == s("/d/secret", "ro")).unwrap();
    assert!(rw < ro, "{st:?}");
    assert_eq!(landlock(&p, "/d/secret/s"), Rights::RW.minus(Rights::NONE));
}

#[test]
fn case10_mid_path_glob_masks_each_existing_match() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/home/*/.config/**", "---")]);
    assert_eq!(
        steps(&p),
        vec![
            s("/tmp", "tmpfs"),
            s("/home/a/.config", "mask-dir"),
            s("/home/b/.config", "mask-dir"),
        ]
    );
}

#[test]
fn case11_write_without_read() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r--"), ("/w/**", "-w-")]);
    assert_eq!(steps(&p), vec![s("/tmp", "tmpfs"), s("/w", "rw")]);
    assert_eq!(landlock(&p, "/w/f"), Rights::W);
    assert_eq!(landlock(&p, "/etc/passwd"), Rights::R);
    assert_eq!(landlock(&p, "/dev/null"), Rights::RW);
}

#[test]
fn case12_execute_only_with_x() {
    let img = image();
    let with_x = plan_of(&img, &[("/**", "r--"), ("/t/**", "r-x")]);
    assert_eq!(landlock(&with_x, "/t/bin"), Rights::RX);
    assert_eq!(landlock(&with_x, "/bin/sh"), Rights::R);
    let without = plan_of(&img, &[("/**", "r--"), ("/t/**", "r--")]);
    assert_eq!(landlock(&without, "/t/bin"), Rights::R);
}

#[test]
fn case13_malformed_rights_are_refused() {
    assert!(RuleSet::from_map(&[("/x", "rwxoops")]).is_err());
    let e = crate::policy::load_str(
        "t.yaml",
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/x\": \"rwxoops\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("t.yaml:4:"), "{e}");
}

#[test]
fn exceptions_push_rights_down_to_siblings_only() {
    let img = image();
    let p = plan_of(&img, &[("/**", "r-x"), ("/t/**", "r--")]);
    // `/` cannot carry x (it would reach /t): its other children do.
    assert_eq!(landlock(&p, "/"), Rights::R);
    assert_eq!(landlock(&p, "/bin/sh"), Rights::RX);
    assert_eq!(landlock(&p, "/t/bin"), Rights::R);
}

#[test]
fn default_policy_plan() {
    let img = image();
    let eff = crate::policy::builtin::load_builtin_named("default");
    let eff = crate::policy::merge::merge(&eff, &[], None).unwrap();
    let rules =
        RuleSet::from_policy(&eff.filesystem_policy, Path::new("/sandbox"), None, "root").unwrap();
    let p = plan(&rules, &tree(&img)).unwrap();
    assert_eq!(p.base, Base::Permissive);
    assert_eq!(steps(&p), vec![s("/sandbox", "rw"), s("/tmp", "rw")]);
    assert_eq!(landlock(&p, "/bin/sh"), Rights::RX);
    assert_eq!(landlock(&p, "/sandbox/x"), Rights::ALL);
    assert!(
        p.notes.iter().any(|n| n.contains("/var/tmp")),
        "{:?}",
        p.notes
    );
}

#[test]
fn the_working_directory_cannot_open_system_trees_or_the_home() {
    let base = crate::policy::builtin::load_builtin_named("default");
    let eff = crate::policy::merge::merge(&base, &[], None).unwrap();
    let at = |cwd: &str, home: Option<&str>, path: &str| {
        RuleSet::from_policy(
            &eff.filesystem_policy,
            Path::new(cwd),
            home.map(Path::new),
            "root",
        )
        .unwrap()
        .decide(Path::new(path))
        .rights
    };
    assert_eq!(
        at("/work", None, "/work/x"),
        Rights::ALL,
        "the allowed twin"
    );
    assert_eq!(at("/usr/src/app", None, "/usr/src/app/x"), Rights::ALL);
    for (cwd, probe) in [
        ("/etc", "/etc/ld.so.preload"),
        ("/usr", "/usr/lib/libc.so"),
        (
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/proc/sys", "/proc/sys/kernel/x"),
    ] {
        assert_eq!(at(cwd, None, probe), Rights::RX, "{cwd}");
    }
    assert_eq!(at("/root", Some("/root"), "/root/.bashrc"), Rights::RX);
    assert_eq!(at("/home", Some("/home/a"), "/home/a/.profile"), Rights::RX);
    assert_eq!(at("/home/a/p", Some("/home/a"), "/home/a/p/x"), Rights::ALL);
    // An explicit rule more specific than `/` wins over the working directory.
    let mut fs = eff.filesystem_policy.clone();
    fs.permissions.insert(
        "/data/**".into(),
        crate::policy::merge::From {
            value: "r--".into(),
            from: "test".into(),
        },
    );
    let rules = RuleSet::from_policy(&fs, Path::new("/data/app"), None, "root").unwrap();
    assert_eq!(rules.decide(Path::new("/data/app/x")).rights, Rights::R);
}
