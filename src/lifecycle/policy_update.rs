//! `nemosandbox policy update ID --preset P | --remove P`: change the network
//! policies of a running container and return once its guard runs the new generation.
//!
//! The new `effective.json` replaces the old one by rename, so the guard never reads half a
//! file; if the guard does not confirm, the old file is put back and the command fails.

use std::fs;

use super::{LifecycleError, Runtime};
use crate::path_error::io_err;
use crate::policy::builtin::load_name_or_file;
use crate::policy::live::{self, LiveError};
use crate::policy::merge::Effective;
use crate::policy::select::NodeConfig;
use crate::policy::Loaded;
use crate::state;

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(String),
    Remove(String),
}

/// What changed, for the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub generation: u64,
    pub sources: Vec<String>,
    pub sha256: String,
    /// Things the operator should know (sections not applied live, entries restored).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("{0}")]
    Live(#[from] LiveError),
    #[error("{0}")]
    Load(String),
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
    #[error("container {id:?}: {source}; the previous network policies stay in force")]
    Guard {
        id: String,
        source: crate::netguard::control::ControlError,
    },
}

/// Load a document by the origin recorded in `effective.json`: `builtin:NAME` is the embedded
/// document (never a directory's override), anything else a file path or name.
fn reload_origin(lib: &crate::policy::builtin::Library, origin: &str) -> Result<Loaded, String> {
    let found = match origin.strip_prefix("builtin:") {
        Some(name) => crate::policy::builtin::load_builtin_named_checked(name).map(Ok),
        None => load_name_or_file(lib, origin),
    };
    match found {
        Some(r) => r.map_err(|e| e.to_string()),
        None => Err(format!("unknown policy {origin:?}")),
    }
}

/// Apply `change` to the effective policy; the notes say what the operator should know.
fn apply(
    eff: &mut Effective,
    change: &Change,
    lib: &crate::policy::builtin::Library,
) -> Result<Vec<String>, UpdateError> {
    match change {
        Change::Add(name) => {
            let preset = match load_name_or_file(lib, name) {
                Some(r) => r.map_err(|e| UpdateError::Load(e.to_string()))?,
                None => return Err(UpdateError::Load(format!("unknown policy {name:?}"))),
            };
            let skipped = live::add_preset(eff, &preset)?;
            Ok(if skipped.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "{}: {} not applied (fixed when the container was created; recreate it to apply them)",
                    preset.origin,
                    skipped.join(", ")
                )]
            })
        }
        Change::Remove(name) => {
            let r = live::remove_preset(eff, name, |o| reload_origin(lib, o))?;
            let mut notes: Vec<String> = r
                .restored
                .iter()
                .map(|k| format!("network policy {k:?} restored from the document it replaced"))
                .collect();
            if r.still_in_force {
                notes.push(format!(
                    "{}: its filesystem/landlock/exec/symlink sections stay in force until the container is recreated",
                    r.origin
                ));
            }
            Ok(notes)
        }
    }
}

impl Runtime {
    /// change the network policies of a running (or created) container.
    pub fn policy_update(&self, id: &str, change: &Change) -> Result<Outcome, UpdateError> {
        let (_, meta, status) = self.load_with_status(id)?;
        if !matches!(
            status,
            libcontainer::container::ContainerStatus::Running
                | libcontainer::container::ContainerStatus::Created
                | libcontainer::container::ContainerStatus::Paused
        ) {
            return Err(LifecycleError::WrongState {
                id: id.into(),
                status: state::status_word(status),
                op: "update the policy of",
            }
            .into());
        }
        let own = self.root.own_dir(id);
        // One update at a time per container: each reads the file the last one wrote.
        let lock_path = own.policy_lock();
        let _lock = state::lock_exclusive(&lock_path).map_err(io_err(&lock_path))?;

        let path = own.effective();
        let old = fs::read(&path).map_err(io_err(&path))?;
        let mut eff: Effective =
            serde_json::from_slice(&old).map_err(|e| io_err(&path)(e.into()))?;
        if eff.unconfined {
            return Err(UpdateError::Load(format!(
                "container {id:?} runs the unconfined baseline \"oci\": it has no network guard, so no network policies to update"
            )));
        }
        let node =
            NodeConfig::load(&self.policy.config).map_err(|e| UpdateError::Load(e.to_string()))?;
        let notes = apply(&mut eff, change, &node.library())?;

        let canonical = eff.canonical_json();
        let tmp = own.effective_tmp();
        fs::write(&tmp, &canonical).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let generation = match crate::netguard::control::reload(&own) {
            Ok(n) => n,
            Err(source) => {
                // The guard did not take it: the file must say what is enforced.
                let _ = fs::write(&tmp, &old).and_then(|_| fs::rename(&tmp, &path));
                return Err(UpdateError::Guard {
                    id: id.into(),
                    source,
                });
            }
        };
        let sha256 = crate::policy::merge::sha256_hex(&canonical);
        if let Some(mut m) = meta {
            m.annotations
                .insert(state::POLICY_HASH_ANNOTATION.into(), sha256.clone());
            m.annotations.insert(
                state::POLICY_SOURCES_ANNOTATION.into(),
                eff.sources.join(","),
            );
            m.save(&self.root, id).map_err(LifecycleError::from)?;
        }
        tracing::info!(
            "container {id:?}: network policies now generation {generation} ({})",
            eff.sources.join(",")
        );
        Ok(Outcome {
            generation,
            sources: eff.sources,
            sha256,
            notes,
        })
    }
}
