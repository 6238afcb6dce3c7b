//! Exec gate: what `exec` may start when the effective policy has `exec_policy`.

pub mod eval;
pub mod root_fs;
pub mod shell;

use std::path::{Path, PathBuf};

pub use root_fs::PrefixFs;

use eval::{Allowed, ContainerFs};

use crate::confine::landlock::LandlockPlan;
use crate::layout::{Grant, Rights};

/// The image's own shells, found at create: what a wrapper's file must be.
const IMAGE_SHELLS: [&str; 4] = ["/bin/sh", "/bin/bash", "/bin/dash", "/bin/busybox"];

/// Device and inode of the image's shells and of `extra` (the policy's `shells`), resolved in
/// the container's root.
pub fn shell_ids(fs: &PrefixFs, extra: &[String]) -> Vec<eval::FileId> {
    let mut ids: Vec<eval::FileId> = IMAGE_SHELLS
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .filter_map(|p| fs.resolve(Path::new(&p)).and_then(|r| fs.file_id(&r)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ELF interpreter (dynamic loader) a binary names, if any.
pub fn elf_interpreter(bytes: &[u8]) -> Option<String> {
    let elf = goblin::elf::Elf::parse(bytes).ok()?;
    elf.interpreter.map(str::to_string)
}

/// What a script makes the kernel run: its `#!` interpreter and, through `env NAME`, the
/// program env finds on the default PATH in the container.
fn script_programs(bytes: &[u8], fs: &PrefixFs) -> Vec<String> {
    let Some(sb) = crate::container_root::shebang(bytes) else {
        return vec![];
    };
    let found = sb
        .env_candidates()
        .into_iter()
        .find(|p| fs.resolve(p).is_some());
    std::iter::once(sb.interpreter)
        .chain(found.map(|p| p.display().to_string()))
        .collect()
}

/// Every file an allowed exec needs execute rights on: the allowed programs, the shells that
/// wrap them, and what the kernel loads to run those (ELF loader, script interpreter). An
/// interpreter the container could change is refused: it would run the workload's code.
pub fn execute_set(allowed: &Allowed, fs: &PrefixFs) -> Result<Vec<PathBuf>, eval::Denied> {
    let mut todo: Vec<PathBuf> = allowed
        .executables
        .iter()
        .chain(allowed.shells.iter())
        .cloned()
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    while let Some(p) = todo.pop() {
        if out.contains(&p) || out.len() > 64 {
            continue;
        }
        let head = fs.read_file(&p, MAX_PROGRAM).unwrap_or_default();
        for next in elf_interpreter(&head)
            .into_iter()
            .chain(script_programs(&head, fs))
        {
            if fs.controllable(Path::new(&next)) {
                return Err(eval::Denied {
                    segment: p.display().to_string(),
                    reason: format!(
                        "its interpreter {next} can be changed from inside the container"
                    ),
                });
            }
            if let Some(r) = fs.resolve(Path::new(&next)) {
                todo.push(r);
            }
        }
        out.push(p);
    }
    out.sort();
    Ok(out)
}

/// The most of a program read to find its interpreter (ELF section headers may sit at its
/// end; a bigger file is parsed from what was read, and a truncated ELF yields nothing).
const MAX_PROGRAM: u64 = 256 << 20;

/// Hold an exec'd process to `files`: execute rights nowhere else, and on each only while
/// its path names the file the gate decided on.
pub fn restrict_execute(plan: &mut LandlockPlan, files: &[PathBuf], fs: &PrefixFs) {
    for g in &mut plan.grants {
        g.rights = g.rights.minus(Rights::X);
    }
    for f in files {
        plan.grants.push(Grant {
            path: f.clone(),
            rights: Rights::RX,
            dir: false,
            pinned: fs.file_id(f),
        });
    }
}

/// Record what each grant's path names now (after create, before start), so that an `exec`
/// can tell a path the workload replaced (a directory swapped for a link to `/`) and leave
/// the rule out.
pub fn pin_grants(plan: &mut LandlockPlan, fs: &PrefixFs) {
    for g in &mut plan.grants {
        g.pinned = fs.resolve(&g.path).and_then(|r| fs.file_id(&r));
    }
    plan.pinned = true;
}
