//! containerd: a runtime handler for the CRI plugin, appended to config.toml as a block between
//! marker comments, in the plugin section of the file's config version:
//! 1 (no `version`, containerd 1.x) `plugins.cri`, 2 (containerd 1.x) `plugins."io.containerd.grpc.v1.cri"`,
//! 3 (containerd 2.x) `plugins."io.containerd.cri.v1.runtime"`.
//!
//! A TOML table header at the end of a file always starts a new table, so appending cannot land
//! inside the admin's last table; the result is parsed back before anything is written.

use std::path::Path;

use toml::Value;

use super::{Change, Engine, InstallError, Options};

fn begin(name: &str) -> String {
    format!("# BEGIN {name} runtime handler")
}

fn end(name: &str) -> String {
    format!("# END {name} runtime handler")
}

/// The table holding `runtimes` for a config version.
fn cri_runtimes(version: i64) -> &'static [&'static str] {
    match version {
        1 => &["plugins", "cri", "containerd"],
        2 => &["plugins", "io.containerd.grpc.v1.cri", "containerd"],
        _ => &["plugins", "io.containerd.cri.v1.runtime", "containerd"],
    }
}

fn header(version: i64) -> String {
    cri_runtimes(version)
        .iter()
        .map(|k| {
            if k.contains('.') {
                format!("\"{k}\"")
            } else {
                k.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn parse_err(path: &Path, reason: impl Into<String>) -> InstallError {
    InstallError::Parse {
        path: path.to_path_buf(),
        format: "TOML",
        reason: reason.into(),
    }
}

fn parse(path: &Path, text: &str) -> Result<toml::Table, InstallError> {
    text.parse::<toml::Table>()
        .map_err(|e| parse_err(path, e.to_string().trim_end().replace('\n', " ")))
}

fn lookup<'a>(t: &'a toml::Table, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    let mut v = t.get(*first)?;
    for k in rest {
        v = v.as_table()?.get(*k)?;
    }
    Some(v)
}

/// The version the file declares; a file with settings but no `version` is version 1, as
/// containerd reads it.
fn version_of(
    path: &Path,
    doc: &toml::Table,
    empty: bool,
    forced: Option<u8>,
) -> Result<(i64, bool), InstallError> {
    match doc.get("version") {
        Some(Value::Integer(v @ 1..=3)) => Ok((*v, false)),
        Some(v) => Err(parse_err(path, format!("unsupported config version {v}"))),
        // Nothing set yet: the block may declare the version itself (2 is read by containerd
        // 1.x and migrated by 2.x; 3 only by 2.x).
        None if empty => Ok((forced.map_or(2, i64::from), true)),
        None => Ok((1, false)),
    }
}

/// The cgroup driver of the handler pods already use (runc, or the default runtime's).
fn systemd_cgroup(doc: &toml::Table, version: i64) -> bool {
    let base = cri_runtimes(version);
    let default_name = lookup(doc, &[base, &["default_runtime_name"]].concat())
        .and_then(Value::as_str)
        .unwrap_or("runc");
    [default_name, "runc"]
        .iter()
        .find_map(|rt| {
            lookup(
                doc,
                &[base, &["runtimes", rt, "options", "SystemdCgroup"]].concat(),
            )
            .and_then(Value::as_bool)
        })
        .unwrap_or(false)
}

/// In the block of a file install created: uninstall then removes the file, not just the block.
const CREATED: &str = "# The file did not exist before install.\n";

fn block(
    opts: &Options,
    version: i64,
    declare_version: bool,
    systemd: bool,
    created: bool,
) -> String {
    let h = format!("[{}.runtimes.{}]", header(version), opts.name);
    let o = format!("[{}.runtimes.{}.options]", header(version), opts.name);
    let q = |p: &Path| super::toml_string(p.display());
    let mut s = String::new();
    s.push_str(&begin(&opts.name));
    s.push('\n');
    s.push_str(WRITTEN_BY);
    s.push_str("; `nemosandbox uninstall containerd` removes it.\n");
    if created {
        s.push_str(CREATED);
    }
    if declare_version {
        s.push_str(&format!("version = {version}\n"));
    }
    s.push_str(&format!(
        "{h}\n  runtime_type = \"io.containerd.runc.v2\"\n  \
         pod_annotations = [\"dev.nemosandbox.*\"]\n  \
         container_annotations = [\"dev.nemosandbox.*\"]\n\
         {o}\n  BinaryName = {}\n  Root = {}\n  SystemdCgroup = {systemd}\n",
        q(&opts.path),
        q(&opts.state_root),
    ));
    s.push_str(&end(&opts.name));
    s.push('\n');
    s
}

const WRITTEN_BY: &str = "# Written by `nemosandbox install containerd`";

/// The marked block's byte range, if the file has one. The END line is the anchor (a block has
/// exactly one) and its BEGIN is the nearest one above it, so a BEGIN line elsewhere (in a
/// multi-line string, left over from a hand edit) is not taken for ours; a block whose first
/// line is not ours is refused rather than cut.
fn find_block(path: &Path, text: &str, name: &str) -> Result<Option<(usize, usize)>, InstallError> {
    let (b, e) = (begin(name), end(name));
    let mut lines = Vec::new();
    let mut off = 0;
    for l in text.split_inclusive('\n') {
        lines.push((off, l));
        off += l.len();
    }
    let ends: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].1.trim() == e)
        .collect();
    let damaged = |reason: &str| InstallError::Conflict {
        path: path.to_path_buf(),
        reason: format!("the {name} block is damaged ({reason}); fix it by hand"),
    };
    let end_line = match ends.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => return Err(damaged("more than one END line")),
    };
    let begin_line = (0..end_line)
        .rev()
        .find(|i| lines[*i].1.trim() == b)
        .ok_or_else(|| damaged("an END line without BEGIN"))?;
    if !lines
        .get(begin_line + 1)
        .is_some_and(|(_, l)| l.starts_with(WRITTEN_BY))
    {
        return Err(damaged("not written by install"));
    }
    let (end_off, end_text) = lines[end_line];
    Ok(Some((lines[begin_line].0, end_off + end_text.len())))
}

pub(super) fn install(
    path: &Path,
    before: Option<&[u8]>,
    opts: &Options,
) -> Result<Change, InstallError> {
    super::refuse_runtime_args(Engine::Containerd, opts)?;
    let text =
        std::str::from_utf8(before.unwrap_or(b"")).map_err(|_| parse_err(path, "not UTF-8"))?;
    // Our previous block (another path, say) is replaced in place.
    let existing = find_block(path, text, &opts.name)?;
    let base: String = match existing {
        Some((s, e)) => format!("{}{}", &text[..s], &text[e..]),
        None => text.to_string(),
    };
    let doc = parse(path, &base)?;
    let (version, declare) = version_of(path, &doc, doc.is_empty(), opts.config_version)?;
    if let Some(forced) = opts.config_version {
        if i64::from(forced) != version {
            return Err(InstallError::Conflict {
                path: path.to_path_buf(),
                reason: format!("the file is config version {version}, not {forced}"),
            });
        }
    }
    let rt_path = [cri_runtimes(version), &["runtimes", &opts.name]].concat();
    if lookup(&doc, &rt_path).is_some() {
        return Err(InstallError::Conflict {
            path: path.to_path_buf(),
            reason: format!(
                "a runtime handler named {:?} exists outside the nemosandbox block; choose \
                 another --name or remove it",
                opts.name
            ),
        });
    }
    let created = before.is_none() || existing.is_some_and(|(s, e)| text[s..e].contains(CREATED));
    let new_block = block(
        opts,
        version,
        declare,
        systemd_cgroup(&doc, version),
        created,
    );
    let after = match existing {
        Some((s, e)) => format!("{}{new_block}{}", &text[..s], &text[e..]),
        None if text.is_empty() => new_block,
        // One '\n' before the block, which uninstall takes back: a blank line after a
        // terminated last line, the end of an unterminated one.
        None => format!("{text}\n{new_block}"),
    };
    // Appending at the end must not break the file (a key our header re-opens, say).
    let check = parse(path, &after).map_err(|e| InstallError::Conflict {
        path: path.to_path_buf(),
        reason: format!("the runtime handler cannot be added to this file: {e}"),
    })?;
    debug_assert!(lookup(&check, &rt_path).is_some());
    Ok(Change {
        path: path.to_path_buf(),
        before: None,
        after: Some(after.into_bytes()),
    })
}

pub(super) fn uninstall(
    path: &Path,
    before: Option<Vec<u8>>,
    name: &str,
) -> Result<Change, InstallError> {
    let text = before
        .as_deref()
        .map(|b| std::str::from_utf8(b).map_err(|_| parse_err(path, "not UTF-8")))
        .transpose()?;
    let found = match text {
        Some(t) => find_block(path, t, name)?.map(|r| (t, r)),
        None => None,
    };
    let after = match found {
        None => before.clone(),
        Some((t, (s, e))) => {
            // The '\n' install put before the block goes with it.
            let head = &t[..s];
            let head = head.strip_suffix('\n').unwrap_or(head);
            let rest = format!("{head}{}", &t[e..]);
            if rest.is_empty() && t[s..e].contains(CREATED) {
                None
            } else {
                // Never write a file containerd cannot read that it could before.
                if parse(path, t).is_ok() {
                    parse(path, &rest).map_err(|e| InstallError::Conflict {
                        path: path.to_path_buf(),
                        reason: format!("removing the {name} block would break the file: {e}"),
                    })?;
                }
                Some(rest.into_bytes())
            }
        }
    };
    Ok(Change {
        path: path.to_path_buf(),
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            name: "nemosandbox".into(),
            path: "/usr/local/bin/nemosandbox".into(),
            runtime_args: vec![],
            state_root: "/run/nemosandbox".into(),
            config: None,
            config_version: None,
        }
    }

    const V2: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n\
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n";
    const V3: &str = "version = 3\nroot = '/var/lib/containerd'\n\
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'\n\
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n\
        [plugins.'io.containerd.grpc.v1.cri']\n  disable_tcp_service = true"; // no final newline
    const V1: &str = "[plugins.cri]\n  stream_server_address = \"127.0.0.1\"\n";

    fn installed(before: Option<&str>) -> (toml::Table, String) {
        let p = Path::new("/etc/containerd/config.toml");
        let c = install(p, before.map(str::as_bytes), &opts()).unwrap();
        let text = String::from_utf8(c.after.unwrap()).unwrap();
        (text.parse().unwrap(), text)
    }

    fn handler(doc: &toml::Table, version: i64) -> &Value {
        lookup(
            doc,
            &[cri_runtimes(version), &["runtimes", "nemosandbox"]].concat(),
        )
        .expect("handler")
    }

    #[test]
    fn the_handler_lands_in_the_plugin_of_each_config_version() {
        for (src, version, systemd) in [
            (Some(V1), 1, false),
            (Some(V2), 2, true),
            (Some(V3), 3, true),
            (None, 2, false),
            (Some("# only a comment\n"), 2, false),
        ] {
            let (doc, text) = installed(src);
            let h = handler(&doc, version);
            assert_eq!(
                h["runtime_type"].as_str(),
                Some("io.containerd.runc.v2"),
                "{text}"
            );
            assert_eq!(
                h["options"]["BinaryName"].as_str(),
                Some("/usr/local/bin/nemosandbox")
            );
            assert_eq!(
                h["options"]["SystemdCgroup"].as_bool(),
                Some(systemd),
                "{text}"
            );
            assert_eq!(h["pod_annotations"][0].as_str(), Some("dev.nemosandbox.*"));
            assert!(
                text.starts_with(src.unwrap_or("")),
                "the admin's bytes come first"
            );
            assert_eq!(
                doc.get("version").and_then(Value::as_integer),
                (version != 1).then_some(version)
            );
        }
    }

    #[test]
    fn install_is_idempotent_and_uninstall_restores_the_bytes() {
        let p = Path::new("/c.toml");
        for src in [Some(V1), Some(V2), Some(V3), None, Some("")] {
            let first = install(p, src.map(str::as_bytes), &opts()).unwrap().after;
            let second = install(p, first.as_deref(), &opts()).unwrap().after;
            assert_eq!(first, second, "a second install changes nothing");
            let back = uninstall(p, first, "nemosandbox").unwrap().after;
            let expect = src.map(|s| s.as_bytes().to_vec());
            assert_eq!(
                back.map(String::from_utf8),
                expect.map(String::from_utf8),
                "{src:?}"
            );
        }
        // A changed path replaces the block in place.
        let first = install(p, Some(V2.as_bytes()), &opts())
            .unwrap()
            .after
            .unwrap();
        let moved = Options {
            path: "/opt/n".into(),
            ..opts()
        };
        let text =
            String::from_utf8(install(p, Some(&first), &moved).unwrap().after.unwrap()).unwrap();
        assert_eq!(
            text.matches("# BEGIN nemosandbox runtime handler").count(),
            1,
            "{text}"
        );
        assert!(text.contains("BinaryName = \"/opt/n\""), "{text}");
    }

    #[test]
    fn marker_lines_elsewhere_are_not_taken_for_the_block() {
        let p = Path::new("/c.toml");
        // A BEGIN line inside a multi-line string, and one left from a hand removal.
        for src in [
            "version = 2\nnote = \"\"\"\n# BEGIN nemosandbox runtime handler\n\"\"\"\n",
            "version = 2\n# BEGIN nemosandbox runtime handler\n[plugins.x]\n  y = 1\n",
        ] {
            let first = install(p, Some(src.as_bytes()), &opts()).unwrap().after;
            let again = install(p, first.as_deref(), &opts()).unwrap().after;
            assert_eq!(first, again);
            let back = uninstall(p, first, "nemosandbox").unwrap().after.unwrap();
            assert_eq!(String::from_utf8(back).unwrap(), src);
        }
        // Indented by a formatter: still found.
        let first = String::from_utf8(
            install(p, Some(V2.as_bytes()), &opts())
                .unwrap()
                .after
                .unwrap(),
        )
        .unwrap();
        let indented = first
            .replace("# BEGIN nemosandbox", "  # BEGIN nemosandbox")
            .replace("# END nemosandbox", "\t# END nemosandbox");
        let back = uninstall(p, Some(indented.into_bytes()), "nemosandbox")
            .unwrap()
            .after
            .unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), V2);
        // Damaged blocks are refused, not cut.
        let two_ends = format!("{first}# END nemosandbox runtime handler\n");
        assert!(uninstall(p, Some(two_ends.into_bytes()), "nemosandbox")
            .unwrap_err()
            .to_string()
            .contains("damaged"));
        let no_begin = "version = 2\n# END nemosandbox runtime handler\n";
        assert!(uninstall(p, Some(no_begin.as_bytes().to_vec()), "nemosandbox").is_err());
        let not_ours =
            "# BEGIN nemosandbox runtime handler\n[a]\n# END nemosandbox runtime handler\n";
        assert!(install(p, Some(not_ours.as_bytes()), &opts())
            .unwrap_err()
            .to_string()
            .contains("not written by install"));
    }

    #[test]
    fn bad_and_conflicting_configs_are_refused() {
        let p = Path::new("/etc/containerd/config.toml");
        let e = install(p, Some(b"[plugins\n"), &opts())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/containerd/config.toml: not valid TOML"),
            "{e}"
        );
        let e = install(p, Some(b"version = 9\n"), &opts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported config version 9"), "{e}");
        let theirs = format!(
            "{V2}[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nemosandbox]\n"
        );
        let e = install(p, Some(theirs.as_bytes()), &opts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the nemosandbox block"), "{e}");
        let forced = Options {
            config_version: Some(3),
            ..opts()
        };
        let e = install(p, Some(V2.as_bytes()), &forced)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config version 2, not 3"), "{e}");
        let (doc, _) = {
            let c = install(p, None, &forced).unwrap();
            let t = String::from_utf8(c.after.unwrap()).unwrap();
            (t.parse::<toml::Table>().unwrap(), t)
        };
        assert!(lookup(
            &doc,
            &[
                "plugins",
                "io.containerd.cri.v1.runtime",
                "containerd",
                "runtimes",
                "nemosandbox"
            ]
        )
        .is_some());
        let args = Options {
            runtime_args: vec!["--preset".into(), "x".into()],
            ..opts()
        };
        assert!(install(p, None, &args)
            .unwrap_err()
            .to_string()
            .contains("annotation"));
    }
}
