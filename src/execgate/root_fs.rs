//! The exec gate's view of a live container's root: lookups through `ContainerRoot`, plus the
//! record of which directories a path's resolution passed through (whether the workload could
//! have planted what the path names) and what the container may write.

use std::path::{Component, Path, PathBuf};

use super::eval::{normalize, ContainerFs, FileId};
use crate::container_root::ContainerRoot;

/// A container root (`/proc/<init>/root`, or a directory in tests) as the exec gate sees it.
/// Every lookup is the kernel's, inside the root (`ContainerRoot`); the walk here only
/// records which directories a path's resolution looked names up in, which decides whether
/// the workload could have planted what the path names.
pub struct PrefixFs {
    root: Option<ContainerRoot>,
    /// The container's Landlock grants, when Landlock holds its processes: a path is writable
    /// only where one gives `w`.
    pub grants: Option<Vec<crate::layout::Grant>>,
}

const MAX_LINKS: usize = 40;

impl PrefixFs {
    /// The root at `prefix`; a root that cannot be opened (the container is gone) has nothing
    /// in it.
    pub fn new(prefix: &Path, grants: Option<Vec<crate::layout::Grant>>) -> PrefixFs {
        PrefixFs {
            root: ContainerRoot::open(prefix),
            grants,
        }
    }

    /// The first `cap` bytes of a regular file of the container, opened without leaving its
    /// root (the workload may swap a link in meanwhile) and never a device or FIFO.
    pub fn read_file(&self, path: &Path, cap: u64) -> Option<Vec<u8>> {
        self.root.as_ref()?.read_regular(path, cap)
    }

    /// Resolve `path` as `resolve` does, returning also every directory a name was looked up
    /// in, in order.
    fn walk(&self, path: &Path) -> (Option<PathBuf>, Vec<PathBuf>) {
        let mut todo: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .rev()
            .collect();
        let mut done = PathBuf::from("/");
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut links = 0;
        let Some(root) = &self.root else {
            return (None, dirs);
        };
        while let Some(name) = todo.pop() {
            if name == ".." {
                done.pop();
                continue;
            }
            dirs.push(done.clone());
            let next = done.join(&name);
            let Some(st) = root.lstat(&next) else {
                return (None, dirs);
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                links += 1;
                let target = match root.readlink(&next) {
                    Some(t) if links <= MAX_LINKS => t,
                    _ => return (None, dirs),
                };
                if target.is_absolute() {
                    done = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            } else {
                done = next;
            }
        }
        (Some(done), dirs)
    }
}

/// Whether the mount a path lies on lets the container write there, from
/// `ContainerRoot::read_only_mount`. A path that resolved a moment ago but cannot be looked up
/// now (gone, or a lookup the kernel kept refusing while the workload renamed directories)
/// counts as writable: the gate then refuses what it cannot show to be unchangeable.
fn mount_allows_writes(read_only: Option<bool>) -> bool {
    read_only != Some(true)
}

impl ContainerFs for PrefixFs {
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        self.walk(path).0
    }

    fn is_executable_file(&self, path: &Path) -> bool {
        self.root.as_ref().is_some_and(|r| r.is_executable(path))
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.root.as_ref().is_some_and(|r| r.is_dir(path))
    }

    fn file_id(&self, path: &Path) -> Option<FileId> {
        self.root.as_ref()?.file_id(path)
    }

    fn writable(&self, path: &Path) -> bool {
        // The file the shell would open, or the directory it would be created in.
        let target = std::iter::once(path)
            .chain(path.ancestors().skip(1))
            .find_map(|p| self.resolve(&normalize(p)))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mount_rw =
            mount_allows_writes(self.root.as_ref().and_then(|r| r.read_only_mount(&target)));
        let landlock_w = self.grants.as_ref().is_none_or(|grants| {
            grants.iter().any(|g| {
                g.rights.has(crate::layout::Rights::W)
                    && (g.path == target || (g.dir && target.starts_with(&g.path)))
            })
        });
        mount_rw && landlock_w
    }

    fn controllable(&self, path: &Path) -> bool {
        let (resolved, mut dirs) = self.walk(path);
        dirs.dedup();
        dirs.iter().any(|d| self.writable(d)) || resolved.is_some_and(|r| self.writable(&r))
    }

    fn is_loader(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loader_name = |n: &str| {
            n.starts_with("ld-linux") || n.starts_with("ld-musl") || n.starts_with("ld64.so")
        };
        if loader_name(&name) {
            return true;
        }
        // A copy under another name is still the loader: its ELF names itself.
        self.read_file(path, 4 << 20)
            .and_then(|b| {
                goblin::elf::Elf::parse(&b)
                    .ok()
                    .and_then(|e| e.soname.map(str::to_string))
            })
            .is_some_and(|so| loader_name(&so))
    }

    fn list_dir(&self, dir: &Path) -> Vec<PathBuf> {
        let (Some(root), Some(real)) = (&self.root, self.resolve(dir)) else {
            return Vec::new();
        };
        root.list_dir(&real)
            .into_iter()
            .map(|n| real.join(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_be_looked_up_counts_as_changeable() {
        assert!(!mount_allows_writes(Some(true)));
        assert!(mount_allows_writes(Some(false)));
        assert!(
            mount_allows_writes(None),
            "a failed lookup is not read-only"
        );
        // The twin: an existing root where no Landlock grant gives `w` is not writable.
        let sys = PrefixFs::new(Path::new("/sys"), Some(Vec::new()));
        assert!(
            !sys.writable(Path::new("/kernel")),
            "no Landlock grant gives w: not writable"
        );
    }
}
