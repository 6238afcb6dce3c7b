//! Symlink guards at `create`: validate and freeze each one, and record the outcome where
//! operators look (state annotations, the runtime log, the audit stream).

use super::*;

impl Runtime {
    /// Validate and freeze each symlink guard; on a mismatch undo what earlier
    /// guards set and fail.
    pub(super) fn symlink_guards(
        &self,
        id: &str,
        pid: i32,
        guards: &[SymlinkGuard],
        meta: &mut Meta,
    ) -> Result<()> {
        let container_root = PathBuf::from(format!("/proc/{pid}/root"));
        let recorder = audit::Recorder::new(meta.audit.clone(), &self.root.container_dir(id));
        for g in guards {
            match symlinks::harden(g, &container_root, &meta.rootfs) {
                Ok(o) => {
                    let line = format!("symlink guard {}: {}", o.dir, o.annotation_value());
                    if o.outcome == symlinks::Stage::Hardened {
                        tracing::info!("{line}");
                    } else {
                        tracing::warn!("{line}");
                    }
                    recorder.record(
                        &audit::Event::new(
                            audit::Kind::Symlink,
                            o.outcome.decision(),
                            "symlink_guards",
                            o.detail.as_str(),
                        )
                        .request(serde_json::json!({"dir": o.dir, "target_dir": g.target_dir})),
                    );
                    meta.annotations.insert(
                        format!("{}{}", state::GUARD_ANNOTATION_PREFIX, o.dir),
                        o.annotation_value(),
                    );
                    meta.guards.push(o);
                }
                Err(e) => {
                    undo_guards(&meta.guards);
                    let msg = e.to_string();
                    recorder.record(
                        &audit::Event::new(
                            audit::Kind::Symlink,
                            audit::Decision::Refused,
                            "symlink_guards",
                            msg,
                        )
                        .request(serde_json::json!({"dir": g.dir, "target_dir": g.target_dir})),
                    );
                    return Err(LifecycleError::Guard(e));
                }
            }
        }
        Ok(())
    }
}

/// Clear the immutable attributes symlink guards set, so engines can remove the files.
pub(super) fn undo_guards(outcomes: &[symlinks::Outcome]) {
    for o in outcomes {
        if let Some((path, dev, ino)) = &o.immutable {
            symlinks::clear_immutable(path, *dev, *ino);
        }
    }
}
