//! docker: a `runtimes.NAME` entry in daemon.json.
//!
//! JSON has no comments to mark our part, and re-serialising changes the admin's formatting, so
//! `install` keeps the file's previous bytes in a record beside it (`.daemon.json.before-NAME`,
//! with the hash of what it wrote). `uninstall` puts those bytes back when the file is still as
//! `install` left it, and otherwise removes only the entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Change, InstallError, Options};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Record {
    /// daemon.json before the first `install` of this name; `None`: there was no file.
    before: Option<String>,
    /// sha256 of what `install` wrote.
    after_sha256: String,
}

fn record_path(config: &Path, name: &str) -> PathBuf {
    let file = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "daemon.json".into());
    config.with_file_name(format!(".{file}.before-{name}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse(path: &Path, bytes: Option<&[u8]>) -> Result<Map<String, Value>, InstallError> {
    let err = |reason: String| InstallError::Parse {
        path: path.to_path_buf(),
        format: "JSON",
        reason,
    };
    let Some(bytes) = bytes.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else {
        return Ok(Map::new());
    };
    match serde_json::from_slice::<Value>(bytes).map_err(|e| err(e.to_string()))? {
        Value::Object(m) => Ok(m),
        _ => Err(err("the top level is not an object".into())),
    }
}

fn runtimes<'a>(
    path: &Path,
    doc: &'a mut Map<String, Value>,
) -> Result<&'a mut Map<String, Value>, InstallError> {
    match doc
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(m) => Ok(m),
        _ => Err(InstallError::Parse {
            path: path.to_path_buf(),
            format: "JSON",
            reason: "\"runtimes\" is not an object".into(),
        }),
    }
}

fn render(doc: &Map<String, Value>) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(doc).expect("a JSON map serialises");
    s.push('\n');
    s.into_bytes()
}

/// Takes our entry out, and `runtimes` with it when it is left empty and the file had none
/// before install (`original`).
fn remove_entry(
    path: &Path,
    doc: &mut Map<String, Value>,
    name: &str,
    original: Option<&str>,
) -> Result<(), InstallError> {
    let rts = runtimes(path, doc)?;
    rts.remove(name);
    let had_runtimes = original
        .is_some_and(|b| parse(path, Some(b.as_bytes())).is_ok_and(|d| d.contains_key("runtimes")));
    if rts.is_empty() && !had_runtimes {
        doc.remove("runtimes");
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<Option<(Vec<u8>, Record)>, InstallError> {
    let Some(bytes) = super::read_optional(path)? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&bytes).map_err(|e| InstallError::Parse {
        path: path.to_path_buf(),
        format: "install record",
        reason: e.to_string(),
    })?;
    Ok(Some((bytes, record)))
}

pub(super) fn install(
    path: &Path,
    before: Option<&[u8]>,
    opts: &Options,
) -> Result<Vec<Change>, InstallError> {
    let mut doc = parse(path, before)?;
    let mut entry = json!({ "path": opts.path });
    if !opts.runtime_args.is_empty() {
        entry["runtimeArgs"] = json!(opts.runtime_args);
    }
    let rec_path = record_path(path, &opts.name);
    let record = read_record(&rec_path)?;
    let rts = runtimes(path, &mut doc)?;
    if rts.get(&opts.name) == Some(&entry) {
        return Ok(vec![Change {
            path: path.to_path_buf(),
            before: None,
            after: before.map(<[u8]>::to_vec),
        }]);
    }
    if rts.contains_key(&opts.name) && record.is_none() {
        return Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: format!(
                "a runtime named {:?} exists that `nemosandbox install` did not write; choose \
                 another --name or remove it",
                opts.name
            ),
        });
    }
    rts.insert(opts.name.clone(), entry);
    let after = render(&doc);
    let original = match &record {
        // Reinstall (new path or presets) over the file as install left it: the bytes from
        // before the first install stay the ones uninstall restores.
        Some((_, r)) if before.map(sha256_hex).as_deref() == Some(r.after_sha256.as_str()) => {
            r.before.clone()
        }
        // Edited since install: what uninstall restores is the edited file without our entry.
        Some((_, r)) => {
            let mut without = doc.clone();
            remove_entry(path, &mut without, &opts.name, r.before.as_deref())?;
            Some(String::from_utf8(render(&without)).expect("JSON is UTF-8"))
        }
        None => before
            .map(|b| {
                String::from_utf8(b.to_vec()).map_err(|_| InstallError::Parse {
                    path: path.to_path_buf(),
                    format: "JSON",
                    reason: "not UTF-8".into(),
                })
            })
            .transpose()?,
    };
    let new_record = Record {
        before: original,
        after_sha256: sha256_hex(&after),
    };
    let mut record_bytes = serde_json::to_vec_pretty(&new_record).expect("a record serialises");
    record_bytes.push(b'\n');
    // The record first: a failure between the two writes leaves a record of a change not made,
    // which uninstall handles, rather than an entry no record vouches for.
    Ok(vec![
        Change {
            path: rec_path,
            before: record.map(|(b, _)| b),
            after: Some(record_bytes),
        },
        Change {
            path: path.to_path_buf(),
            before: None,
            after: Some(after),
        },
    ])
}

pub(super) fn uninstall(
    path: &Path,
    before: Option<Vec<u8>>,
    name: &str,
) -> Result<Vec<Change>, InstallError> {
    let rec_path = record_path(path, name);
    let Some((record_bytes, record)) = read_record(&rec_path)? else {
        let mut doc = parse(path, before.as_deref())?;
        if runtimes(path, &mut doc)?.contains_key(name) {
            return Err(InstallError::Conflict {
                path: path.to_path_buf(),
                reason: format!(
                    "the runtime {name:?} was not written by `nemosandbox install`; left as it is"
                ),
            });
        }
        return Ok(vec![Change {
            path: path.to_path_buf(),
            after: before.clone(),
            before,
        }]);
    };
    let current = before.as_deref().map(sha256_hex);
    let after = if before.as_deref() == record.before.as_deref().map(str::as_bytes) {
        // Install stopped after its record, or uninstall after restoring: nothing to undo.
        before.clone()
    } else if current.as_deref() == Some(record.after_sha256.as_str()) {
        // Untouched since install: the original bytes, or no file.
        record.before.clone().map(String::into_bytes)
    } else {
        // Edited since: take out our entry only.
        let mut doc = parse(path, before.as_deref())?;
        remove_entry(path, &mut doc, name, record.before.as_deref())?;
        Some(render(&doc))
    };
    Ok(vec![
        Change {
            path: path.to_path_buf(),
            before,
            after,
        },
        Change {
            path: rec_path,
            before: Some(record_bytes),
            after: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        Options {
            name: "nemosandbox".into(),
            path: "/usr/bin/nemosandbox".into(),
            runtime_args: args.iter().map(|s| s.to_string()).collect(),
            state_root: "/run/nemosandbox".into(),
            config: None,
            config_version: None,
        }
    }

    fn round_trip(original: Option<&str>, args: &[&str]) {
        use crate::install::{apply, plan_install, plan_uninstall, Engine};
        let tmp = crate::testutil::TempDir::new("docker-round-trip");
        let p = tmp.path().join("daemon.json");
        if let Some(o) = original {
            std::fs::write(&p, o).unwrap();
        }
        let o = Options {
            config: Some(p.clone()),
            ..opts(args)
        };
        apply(&plan_install(Engine::Docker, &o).unwrap()).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            doc["runtimes"]["nemosandbox"]["path"],
            "/usr/bin/nemosandbox"
        );
        if !args.is_empty() {
            assert_eq!(doc["runtimes"]["nemosandbox"]["runtimeArgs"], json!(args));
        }
        assert!(
            plan_install(Engine::Docker, &o)
                .unwrap()
                .iter()
                .all(|c| !c.changed()),
            "a second install changes nothing"
        );
        apply(&plan_uninstall(Engine::Docker, &o).unwrap()).unwrap();
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        match original {
            Some(o) => {
                assert_eq!(
                    std::fs::read_to_string(&p).unwrap(),
                    o,
                    "uninstall restores the bytes"
                );
                assert_eq!(names.len(), 1, "{names:?}");
            }
            None => assert!(names.is_empty(), "{names:?}"),
        }
    }

    #[test]
    fn install_then_uninstall_is_byte_identical() {
        round_trip(None, &[]);
        round_trip(Some(""), &["--preset", "telegram"]);
        round_trip(
            Some("{\"log-level\":\"warn\",  \"runtimes\": {\"kata\": {\"path\": \"/k\"}}}"),
            &[],
        );
        round_trip(
            Some("{\n\t\"iptables\": false\n}\n"),
            &["--policy", "/etc/p.yaml"],
        );
    }

    #[test]
    fn other_keys_survive_and_an_edit_after_install_is_kept() {
        let p = Path::new("/d/daemon.json");
        let orig = br#"{"debug": true, "runtimes": {"kata": {"path": "/k"}}}"#;
        let changes = install(p, Some(orig), &opts(&[])).unwrap();
        let written = changes[1].after.clone().unwrap();
        let mut doc: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(doc["debug"], true);
        assert_eq!(doc["runtimes"]["kata"]["path"], "/k");
        // The admin adds a key after install: uninstall takes out only the entry.
        doc["log-level"] = json!("info");
        let edited = serde_json::to_vec(&doc).unwrap();
        let rec = String::from_utf8(changes[0].after.clone().unwrap()).unwrap();
        let tmp = crate::testutil::TempDir::new("docker-install");
        let cfg = tmp.path().join("daemon.json");
        std::fs::write(record_path(&cfg, "nemosandbox"), rec).unwrap();
        let out = uninstall(&cfg, Some(edited), "nemosandbox").unwrap();
        let doc: Value = serde_json::from_slice(out[0].after.as_ref().unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({"debug": true, "log-level": "info", "runtimes": {"kata": {"path": "/k"}}})
        );
        assert_eq!(out[1].after, None, "the record goes");
    }

    #[test]
    fn an_edit_between_two_installs_survives_uninstall() {
        use crate::install::{apply, plan_install, plan_uninstall, Engine};
        let tmp = crate::testutil::TempDir::new("docker-reinstall");
        let p = tmp.path().join("daemon.json");
        std::fs::write(&p, "{\"debug\": true}").unwrap();
        let o = Options {
            config: Some(p.clone()),
            ..opts(&[])
        };
        apply(&plan_install(Engine::Docker, &o).unwrap()).unwrap();
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        doc["log-level"] = json!("info");
        std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
        let upgraded = Options {
            path: "/opt/nemosandbox".into(),
            ..o.clone()
        };
        apply(&plan_install(Engine::Docker, &upgraded).unwrap()).unwrap();
        apply(&plan_uninstall(Engine::Docker, &o).unwrap()).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(doc, json!({"debug": true, "log-level": "info"}));
    }

    #[test]
    fn a_record_without_its_change_is_undone_cleanly() {
        use crate::install::{apply, plan_install, plan_uninstall, Engine};
        let tmp = crate::testutil::TempDir::new("docker-half");
        let p = tmp.path().join("daemon.json");
        std::fs::write(&p, "{ }").unwrap();
        let o = Options {
            config: Some(p.clone()),
            ..opts(&[])
        };
        let changes = plan_install(Engine::Docker, &o).unwrap();
        // Only the record got written (a crash, a full disk).
        apply(&changes[..1]).unwrap();
        apply(&plan_uninstall(Engine::Docker, &o).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{ }");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "the record is gone"
        );
    }

    #[test]
    fn a_symlinked_daemon_json_is_refused() {
        use crate::install::{plan_install, Engine};
        let tmp = crate::testutil::TempDir::new("docker-link");
        let p = tmp.path().join("daemon.json");
        std::os::unix::fs::symlink("/nonexistent/daemon.json", &p).unwrap();
        let o = Options {
            config: Some(p.clone()),
            ..opts(&[])
        };
        let e = plan_install(Engine::Docker, &o).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(plan_install(Engine::Containerd, &o).is_err());
    }

    #[test]
    fn bad_inputs_are_refused_naming_the_file() {
        let p = Path::new("/etc/docker/daemon.json");
        for bad in ["{", "[]", "{\"runtimes\": 3}"] {
            let e = install(p, Some(bad.as_bytes()), &opts(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("/etc/docker/daemon.json: not valid JSON"),
                "{e}"
            );
        }
        let theirs = br#"{"runtimes": {"nemosandbox": {"path": "/other"}}}"#;
        let e = install(p, Some(theirs), &opts(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not write"), "{e}");
    }
}
