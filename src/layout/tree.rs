//! The container's file tree as it will be at start, seen from the host at `create`: the image
//! root plus the spec's mounts. Paths are resolved inside the root they belong to (symlinks
//! never lead out of it), so an image cannot point a policy bind at a host file.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use oci_spec::runtime::Mount;

use crate::container_root::ContainerRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// Anything that is not a directory (bind targets must match the source's kind).
    File,
}

/// A mount of the spec, as the layout needs it.
#[derive(Debug, Clone)]
pub struct SpecMount {
    pub dest: PathBuf,
    /// Host source of a bind mount; `None` for tmpfs, proc, sysfs, devpts, …
    pub bind_source: Option<PathBuf>,
    pub readonly: bool,
}

impl SpecMount {
    pub fn from_oci(m: &Mount) -> SpecMount {
        let opts = m.options().clone().unwrap_or_default();
        let is_bind =
            m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        SpecMount {
            dest: m.destination().clone(),
            bind_source: if is_bind { m.source().clone() } else { None },
            readonly: opts.iter().any(|o| o == "ro" || o == "rro"),
        }
    }
}

/// Where a container path lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// In the image root (or a bind source), as `root` + `rel`.
    InRoot { root: PathBuf, rel: PathBuf },
    /// Inside a mount with no host source (tmpfs, proc, sysfs, …), index into the mounts.
    Special(usize),
}

#[derive(Debug, Clone)]
pub struct ContainerTree {
    pub rootfs: PathBuf,
    pub mounts: Vec<SpecMount>,
    /// `host_path` answers: planning asks the same paths many times (each glob level, each
    /// grant), and each answer costs a kernel-checked walk. One plan sees one snapshot.
    resolved: RefCell<HashMap<PathBuf, Option<PathBuf>>>,
    /// `kind` answers, asked again at every level of the grants' walk.
    kinds: RefCell<HashMap<PathBuf, Option<Kind>>>,
    /// The image's root and each bind source, opened once per plan.
    roots: RefCell<HashMap<PathBuf, Option<Rc<ContainerRoot>>>>,
}

impl ContainerTree {
    pub fn new(rootfs: &Path, mounts: &[Mount]) -> Self {
        ContainerTree {
            rootfs: rootfs.to_path_buf(),
            mounts: mounts.iter().map(SpecMount::from_oci).collect(),
            resolved: RefCell::default(),
            kinds: RefCell::default(),
            roots: RefCell::default(),
        }
    }

    fn root(&self, dir: &Path) -> Option<Rc<ContainerRoot>> {
        self.roots
            .borrow_mut()
            .entry(dir.to_path_buf())
            .or_insert_with(|| ContainerRoot::open(dir).map(Rc::new))
            .clone()
    }

    /// The deepest spec mount at or above `p`.
    pub fn mount_of(&self, p: &Path) -> Option<usize> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| p.starts_with(&m.dest))
            .max_by_key(|(i, m)| (m.dest.components().count(), *i))
            .map(|(i, _)| i)
    }

    pub fn place(&self, p: &Path) -> Place {
        match self.mount_of(p) {
            Some(i) => match &self.mounts[i].bind_source {
                Some(src) => Place::InRoot {
                    root: src.clone(),
                    rel: p.strip_prefix(&self.mounts[i].dest).unwrap().to_path_buf(),
                },
                None => Place::Special(i),
            },
            None => Place::InRoot {
                root: self.rootfs.clone(),
                rel: p.strip_prefix("/").unwrap_or(p).to_path_buf(),
            },
        }
    }

    /// The host path of `p`, resolved inside its root; `None` when it does not exist there or
    /// lives in a mount with no host source.
    pub fn host_path(&self, p: &Path) -> Option<PathBuf> {
        if let Some(known) = self.resolved.borrow().get(p) {
            return known.clone();
        }
        let found = match self.place(p) {
            Place::InRoot { root, rel } => self.root(&root).and_then(|r| r.host_path(&rel)),
            Place::Special(_) => None,
        };
        self.resolved
            .borrow_mut()
            .insert(p.to_path_buf(), found.clone());
        found
    }

    pub fn kind(&self, p: &Path) -> Option<Kind> {
        if let Some(known) = self.kinds.borrow().get(p) {
            return *known;
        }
        let kind = self.kind_uncached(p);
        self.kinds.borrow_mut().insert(p.to_path_buf(), kind);
        kind
    }

    fn kind_uncached(&self, p: &Path) -> Option<Kind> {
        if self
            .mounts
            .iter()
            .any(|m| m.dest == p && m.bind_source.is_none())
        {
            return Some(Kind::Dir);
        }
        let host = self.host_path(p)?;
        let md = std::fs::metadata(host).ok()?;
        Some(if md.is_dir() { Kind::Dir } else { Kind::File })
    }

    /// Whether `p` itself is a symlink in the image (for the restrictive skeleton).
    pub fn image_symlink(&self, p: &Path) -> Option<PathBuf> {
        self.root(&self.rootfs)?.readlink(p)
    }

    /// Whether the last component of `p` is a symlink (globs do not descend through them).
    pub fn is_symlink(&self, p: &Path) -> bool {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return false;
        };
        self.host_path(parent)
            .and_then(|h| std::fs::symlink_metadata(h.join(name)).ok())
            .is_some_and(|m| m.file_type().is_symlink())
    }

    /// Names directly beneath directory `p`: what the image (or bind source) holds plus the
    /// spec's mount points there.
    pub fn children(&self, p: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(host) = self.host_path(p) {
            if let Ok(rd) = std::fs::read_dir(host) {
                for e in rd.flatten() {
                    out.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        for m in &self.mounts {
            if m.dest.parent() == Some(p) {
                if let Some(n) = m.dest.file_name() {
                    out.insert(n.to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}

/// Resolve `rel` inside `root` (kernel-checked, never escaping `root`) and return the host path.
pub fn resolve_in(root: &Path, rel: &Path) -> Option<PathBuf> {
    ContainerRoot::open(root)?.host_path(rel)
}
