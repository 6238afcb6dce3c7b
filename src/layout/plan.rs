//! The mount plan: base, then one step per rule target from the least to the most
//! specific path, and the Landlock grants that carry the exact bits mounts cannot express.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rules::{Cover, Rights, Rule, RuleSet};
use super::tree::{ContainerTree, Kind, Place};

/// What the restrictive base keeps of the image, read-only.
pub const SYSTEM_DIRS: [&str; 7] = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc", "/opt"];

/// Paths every process needs whatever the policy says; they get at least these rights.
/// They may not exist at create (libcontainer makes the device nodes at start): the kind is
/// given, and the in-container stage skips what is missing.
pub const IMPLICIT: [(&str, Rights, Kind); 10] = [
    ("/proc", Rights::R, Kind::Dir),
    ("/dev/null", Rights::RW, Kind::File),
    ("/dev/zero", Rights::RW, Kind::File),
    ("/dev/full", Rights::RW, Kind::File),
    ("/dev/random", Rights::R, Kind::File),
    ("/dev/urandom", Rights::R, Kind::File),
    ("/dev/tty", Rights::RW, Kind::File),
    ("/dev/ptmx", Rights::RW, Kind::File),
    ("/dev/pts", Rights::RW, Kind::Dir),
    ("/dev/console", Rights::RW, Kind::File),
];

fn implicit(p: &Path) -> Option<(Rights, Kind)> {
    IMPLICIT
        .iter()
        .find(|(q, _, _)| Path::new(q) == p)
        .map(|(_, r, k)| (*r, *k))
}

/// Limits that keep a glob or a Landlock push-down from walking a whole disk.
const MAX_GLOB_VISITS: usize = 20_000;
const MAX_GRANTS: usize = 4_096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// `/` readable: the image root read-only, `/proc`, `/dev`, a fresh `/tmp`.
    Permissive,
    /// Only the system directories of the image, read-only.
    Restrictive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    BindRw {
        source: PathBuf,
    },
    BindRo {
        source: PathBuf,
    },
    /// An empty read-only tmpfs over a directory.
    MaskDir,
    /// An empty read-only file bound over a file.
    MaskFile,
    /// Inside a mount with no host source (proc, sysfs, tmpfs): `linux.maskedPaths`, whose
    /// kind is only known at start.
    MaskSpecial,
    /// A fresh writable tmpfs (the permissive base's `/tmp`).
    Tmpfs,
    /// A symlink of the image, recreated in the restrictive skeleton root.
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub dest: PathBuf,
    pub action: Action,
    /// The rule (pattern and rights) or base that asked for it.
    pub why: String,
}

/// A Landlock rule: `rights` on `path` and beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub path: PathBuf,
    pub rights: Rights,
    /// A directory (else only file rights apply).
    pub dir: bool,
    /// Device and inode of what `path` named when the rule was planned (recorded after
    /// create): a later `exec` adds the rule only if the path still names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub base: Base,
    /// `/` itself is granted `w`: the root stays writable.
    pub root_writable: bool,
    pub steps: Vec<Step>,
    pub grants: Vec<Grant>,
    /// What each glob rule matched at create.
    pub matches: Vec<(String, Vec<PathBuf>)>,
    /// Things the operator should know: targets absent, rules only Landlock can carry, …
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "filesystem rule {0:?} matches more than {MAX_GLOB_VISITS} paths to visit; narrow the glob"
    )]
    GlobTooWide(String),
    #[error("the filesystem policy needs more than {MAX_GRANTS} Landlock rules to express; simplify the exceptions")]
    TooManyGrants,
}

/// The mount state of a path after the steps so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Rw,
    Ro,
    Masked,
    Absent,
}

pub fn plan(rules: &RuleSet, tree: &ContainerTree) -> Result<Plan, PlanError> {
    let mut p = Planner {
        rules,
        tree,
        base: if rules.permissive() {
            Base::Permissive
        } else {
            Base::Restrictive
        },
        steps: Vec::new(),
        notes: Vec::new(),
        states: BTreeMap::new(),
        desired: RefCell::default(),
        tmp_tmpfs: false,
        root_writable: rules.decide(Path::new("/")).rights.has(Rights::W),
    };
    p.base_steps();
    let (targets, matches) = p.targets()?;
    for t in &targets {
        p.step_for(t);
    }
    let grants = p.grants()?;
    Ok(Plan {
        base: p.base,
        root_writable: p.root_writable,
        steps: p.steps,
        grants,
        matches,
        notes: p.notes,
    })
}

struct Planner<'a> {
    rules: &'a RuleSet,
    tree: &'a ContainerTree,
    base: Base,
    steps: Vec<Step>,
    notes: Vec<String>,
    states: BTreeMap<PathBuf, State>,
    /// `desire` answers: the grants' walk asks each node again at every level above it, and
    /// each answer runs every rule (globs included) against the path. Filled only once the
    /// states are final.
    desired: RefCell<HashMap<PathBuf, (Rights, Rights)>>,
    tmp_tmpfs: bool,
    root_writable: bool,
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

impl Planner<'_> {
    fn base_steps(&mut self) {
        match self.base {
            Base::Permissive => {
                let tmp = Path::new("/tmp");
                let spec_tmp = self.tree.mounts.iter().any(|m| m.dest == tmp);
                if !self.rules.names(tmp) && !spec_tmp {
                    self.tmp_tmpfs = true;
                    self.steps.push(Step {
                        dest: tmp.into(),
                        action: Action::Tmpfs,
                        why: "permissive base".into(),
                    });
                }
            }
            Base::Restrictive => {
                for d in SYSTEM_DIRS {
                    let d = Path::new(d);
                    if let Some(target) = self.tree.image_symlink(d) {
                        self.steps.push(Step {
                            dest: d.into(),
                            action: Action::Symlink { target },
                            why: "restrictive base".into(),
                        });
                    } else if let (Some(Kind::Dir), Some(source)) =
                        (self.tree.kind(d), self.tree.host_path(d))
                    {
                        self.steps.push(Step {
                            dest: d.into(),
                            action: Action::BindRo { source },
                            why: "restrictive base".into(),
                        });
                    }
                }
            }
        }
    }

    /// State of `p` before any rule step: the base and the spec's own mounts.
    fn base_state(&self, p: &Path) -> State {
        if let Some(i) = self.tree.mount_of(p) {
            return if self.tree.mounts[i].readonly {
                State::Ro
            } else {
                State::Rw
            };
        }
        match self.base {
            Base::Permissive if self.root_writable => State::Rw,
            Base::Permissive if self.tmp_tmpfs && p.starts_with("/tmp") => State::Rw,
            Base::Permissive => State::Ro,
            Base::Restrictive => {
                let shown = self
                    .steps
                    .iter()
                    .any(|s| matches!(s.action, Action::BindRo { .. }) && p.starts_with(&s.dest));
                if shown {
                    State::Ro
                } else {
                    State::Absent
                }
            }
        }
    }

    /// State of the nearest processed ancestor of `p`, else the base state.
    fn parent_state(&self, p: &Path) -> State {
        p.ancestors()
            .skip(1)
            .find_map(|a| self.states.get(a).copied())
            .unwrap_or_else(|| self.base_state(p))
    }

    /// Every path a rule names that exists, least specific first.
    #[allow(clippy::type_complexity)]
    fn targets(&self) -> Result<(Vec<PathBuf>, Vec<(String, Vec<PathBuf>)>), PlanError> {
        let mut set = BTreeSet::new();
        let mut matches = Vec::new();
        for r in &self.rules.rules {
            match &r.cover {
                Cover::Literal(l) if l == Path::new("/") => {}
                Cover::Literal(l) => {
                    set.insert(l.clone());
                }
                Cover::Glob(_) => {
                    let found = expand(r, self.tree)?;
                    set.extend(found.iter().cloned());
                    matches.push((r.pattern.clone(), found));
                }
            }
        }
        let mut v: Vec<PathBuf> = set.into_iter().collect();
        v.sort_by(|a, b| depth(a).cmp(&depth(b)).then(a.cmp(b)));
        Ok((v, matches))
    }

    fn note(&mut self, msg: String) {
        self.notes.push(msg);
    }

    fn step_for(&mut self, t: &Path) {
        let decision = self.rules.decide(t);
        let d = decision.rights;
        let why = format!("{} {}", decision.by.join(" & "), d);
        let parent = self.parent_state(t);
        let Some(kind) = self.tree.kind(t) else {
            self.note(format!(
                "{}: not present at create; nothing to mount (Landlock cannot name it either)",
                t.display()
            ));
            return;
        };
        if parent == State::Masked {
            self.note(format!(
                "{}: beneath a masked directory; stays hidden ({why})",
                t.display()
            ));
            self.states.insert(t.into(), State::Masked);
            return;
        }
        let place = self.tree.place(t);
        let under_ro_spec_mount = self
            .tree
            .mount_of(t)
            .is_some_and(|i| self.tree.mounts[i].readonly);
        let source = self.tree.host_path(t);
        let push = |steps: &mut Vec<Step>, action: Action| {
            steps.push(Step {
                dest: t.into(),
                action,
                why: why.clone(),
            })
        };

        let state = if d.has(Rights::W) {
            if parent == State::Rw {
                State::Rw
            } else if under_ro_spec_mount {
                self.note(format!(
                    "{}: the engine mounts it read-only; a policy cannot make it writable",
                    t.display()
                ));
                parent
            } else if let Some(source) = source {
                push(&mut self.steps, Action::BindRw { source });
                State::Rw
            } else {
                self.note(format!(
                    "{}: inside a mount with no host source; write rights by Landlock only",
                    t.display()
                ));
                parent
            }
        } else if d.has(Rights::R) {
            match (parent, source) {
                (State::Ro, _) => State::Ro,
                (_, Some(source)) => {
                    push(&mut self.steps, Action::BindRo { source });
                    State::Ro
                }
                (p, None) => {
                    self.note(format!(
                        "{}: inside a mount with no host source; kept read-only by Landlock only",
                        t.display()
                    ));
                    p
                }
            }
        } else if parent == State::Absent {
            State::Absent
        } else {
            let action = match (&place, kind) {
                (Place::Special(_), _) => Action::MaskSpecial,
                (_, Kind::Dir) => Action::MaskDir,
                (_, Kind::File) => Action::MaskFile,
            };
            push(&mut self.steps, action);
            State::Masked
        };
        self.states.insert(t.into(), state);
    }

    /// What Landlock must carry for `p`, and what it may grant beyond that because the mount
    /// layer already refuses it there (masked or absent: everything; read-only: writes).
    fn desire(&self, p: &Path) -> (Rights, Rights) {
        if let Some(known) = self.desired.borrow().get(p) {
            return *known;
        }
        let found = self.desire_uncached(p);
        self.desired.borrow_mut().insert(p.to_path_buf(), found);
        found
    }

    fn desire_uncached(&self, p: &Path) -> (Rights, Rights) {
        let mut d = self.rules.decide(p).rights;
        if let Some((extra, _)) = implicit(p) {
            d = d.union(extra);
        }
        if self.tmp_tmpfs && p == Path::new("/tmp") {
            d = d.union(Rights::RW);
        }
        let relaxed = match self.states.get(p) {
            Some(State::Masked) | Some(State::Absent) => Rights::ALL,
            Some(State::Ro) => d.union(Rights::W),
            _ => d,
        };
        (d, relaxed)
    }

    fn grants(&self) -> Result<Vec<Grant>, PlanError> {
        let mut nodes: BTreeSet<PathBuf> = self
            .states
            .keys()
            .filter(|p| self.tree.kind(p).is_some())
            .cloned()
            .collect();
        for (p, _, _) in IMPLICIT {
            nodes.insert(PathBuf::from(p));
        }
        if self.tmp_tmpfs {
            nodes.insert(PathBuf::from("/tmp"));
        }
        let mut out = Vec::new();
        let root = Path::new("/");
        let (d, _) = self.desire(root);
        self.visit(root, d, Rights::NONE, &nodes, &mut out)?;
        Ok(out)
    }

    /// Grant at `p` what it needs and every node beneath it allows; push the rest down to the
    /// children that are not exceptions (Landlock rights only ever add up along a path).
    fn visit(
        &self,
        p: &Path,
        d: Rights,
        inherited: Rights,
        nodes: &BTreeSet<PathBuf>,
        out: &mut Vec<Grant>,
    ) -> Result<(), PlanError> {
        let need = d.minus(inherited);
        // A path sorts right before everything beneath it (paths order by components).
        let beneath: Vec<&PathBuf> = nodes
            .range::<Path, _>((Bound::Excluded(p), Bound::Unbounded))
            .take_while(|n| n.starts_with(p))
            .collect();
        let allowed_by_all = beneath
            .iter()
            .fold(Rights::ALL, |acc, n| acc.inter(self.desire(n).1));
        let conflict = need.minus(allowed_by_all);
        let here = need.minus(conflict);
        let kind = self
            .tree
            .kind(p)
            .or(implicit(p).map(|(_, k)| k))
            .or((self.tmp_tmpfs && p == Path::new("/tmp")).then_some(Kind::Dir));
        if !here.is_empty() && kind.is_some() {
            self.push_grant(out, p, here, kind)?;
        }
        let inherited = inherited.union(here);
        if conflict.is_empty() {
            // In that order, a node beneath another comes right after it or its descendants.
            let mut tops: Vec<&PathBuf> = Vec::new();
            for n in &beneath {
                if !tops.last().is_some_and(|t| n.starts_with(t)) {
                    tops.push(n);
                }
            }
            for n in tops {
                let (dn, _) = self.desire(n);
                self.visit(n, dn, inherited, nodes, out)?;
            }
            return Ok(());
        }
        for name in self.tree.children(p) {
            let c = p.join(&name);
            if nodes.contains(&c) {
                let (dc, _) = self.desire(&c);
                self.visit(&c, dc, inherited, nodes, out)?;
            } else if beneath.iter().any(|n| n.starts_with(&c)) {
                self.visit(&c, d, inherited, nodes, out)?;
            } else {
                let rest = d.minus(inherited);
                if !rest.is_empty() {
                    let kind = self.tree.kind(&c);
                    self.push_grant(out, &c, rest, kind)?;
                }
            }
        }
        Ok(())
    }

    fn push_grant(
        &self,
        out: &mut Vec<Grant>,
        p: &Path,
        rights: Rights,
        kind: Option<Kind>,
    ) -> Result<(), PlanError> {
        if out.len() >= MAX_GRANTS {
            return Err(PlanError::TooManyGrants);
        }
        out.push(Grant {
            pinned: None,
            path: p.into(),
            rights,
            dir: kind != Some(Kind::File),
        });
        Ok(())
    }
}

/// Every existing path the glob of `rule` matches (its matches, not their contents).
fn expand(rule: &Rule, tree: &ContainerTree) -> Result<Vec<PathBuf>, PlanError> {
    let max_depth = if rule.pattern.contains("**") {
        usize::MAX
    } else {
        rule.pattern.split('/').filter(|c| !c.is_empty()).count()
    };
    let mut found = Vec::new();
    let mut visits = 0usize;
    let mut stack = vec![rule.literal.clone()];
    while let Some(dir) = stack.pop() {
        if tree.kind(&dir) != Some(Kind::Dir) {
            continue;
        }
        for name in tree.children(&dir) {
            visits += 1;
            if visits > MAX_GLOB_VISITS {
                return Err(PlanError::GlobTooWide(rule.pattern.clone()));
            }
            let c = dir.join(name);
            if rule.covers(&c) {
                found.push(c);
            } else if depth(&c) <= max_depth && !tree.is_symlink(&c) {
                stack.push(c);
            }
        }
    }
    found.sort();
    Ok(found)
}
