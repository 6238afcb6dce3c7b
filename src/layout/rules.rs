//! Permission rules: one map glob → `rwx` built from a policy's filesystem section, and the
//! rule that decides for a path: the deepest literal prefix wins; on a tie, the
//! rights all tied rules grant (which is the smaller set whenever they are comparable).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::policy::merge::EffectiveFs;

/// Rights on a path: read, write, execute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rights(u8);

impl Rights {
    pub const NONE: Rights = Rights(0);
    pub const R: Rights = Rights(4);
    pub const W: Rights = Rights(2);
    pub const X: Rights = Rights(1);
    pub const RX: Rights = Rights(5);
    pub const RW: Rights = Rights(6);
    pub const ALL: Rights = Rights(7);

    /// `[r-][w-][x-]`, as validated policies spell it.
    pub fn parse(s: &str) -> Option<Rights> {
        let b = s.as_bytes();
        if b.len() != 3 {
            return None;
        }
        let bit = |c: u8, want: u8, v: u8| match c {
            c if c == want => Some(v),
            b'-' => Some(0),
            _ => None,
        };
        Some(Rights(
            bit(b[0], b'r', 4)? | bit(b[1], b'w', 2)? | bit(b[2], b'x', 1)?,
        ))
    }
    pub fn has(self, o: Rights) -> bool {
        self.0 & o.0 == o.0
    }
    pub fn any(self, o: Rights) -> bool {
        self.0 & o.0 != 0
    }
    pub fn union(self, o: Rights) -> Rights {
        Rights(self.0 | o.0)
    }
    pub fn inter(self, o: Rights) -> Rights {
        Rights(self.0 & o.0)
    }
    pub fn minus(self, o: Rights) -> Rights {
        Rights(self.0 & !o.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |bit: u8, ch: char| if self.0 & bit != 0 { ch } else { '-' };
        write!(f, "{}{}{}", c(4, 'r'), c(2, 'w'), c(1, 'x'))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("filesystem rule {pattern:?}: `~` needs the container user's home, and {user} has none in the container's /etc/passwd")]
    NoHome { pattern: String, user: String },
    #[error("filesystem rule {pattern:?}: {msg}")]
    Bad { pattern: String, msg: String },
}

/// What a rule covers.
#[derive(Debug, Clone)]
pub enum Cover {
    /// A path without wildcards: the path and everything beneath it.
    Literal(PathBuf),
    /// Every match of the glob (after a trailing `/**` is removed) and everything beneath.
    Glob(GlobMatcher),
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// As written in the policy (or `<process.cwd>` for include_workdir).
    pub pattern: String,
    pub rights: Rights,
    pub cover: Cover,
    /// Path of the components before the first wildcard.
    pub literal: PathBuf,
    /// Number of those components: the rule's specificity.
    pub depth: usize,
    pub from: String,
    /// From a preset the workload's annotations selected: it can only take rights away.
    pub narrowing: bool,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

impl Rule {
    /// Build a rule; `home` expands a leading `~`.
    pub fn new(
        pattern: &str,
        rights: Rights,
        from: &str,
        home: Option<&Path>,
        user: &str,
    ) -> Result<Rule, RuleError> {
        let expanded = if pattern == "~" || pattern.starts_with("~/") {
            let home = home.ok_or_else(|| RuleError::NoHome {
                pattern: pattern.into(),
                user: user.into(),
            })?;
            format!("{}{}", home.display(), &pattern[1..])
        } else {
            pattern.to_string()
        };
        if !expanded.starts_with('/') {
            return Err(RuleError::Bad {
                pattern: pattern.into(),
                msg: "not an absolute path".into(),
            });
        }
        // A trailing `/` means `/**`; `P/**` covers P and beneath, like a bare `P`.
        let mut root = expanded.trim_end_matches('/').to_string();
        if expanded.ends_with('/') {
            root.push_str("/**");
        }
        while let Some(stripped) = root.strip_suffix("/**") {
            root = stripped.to_string();
        }
        if root.is_empty() {
            root.push('/');
        }
        let literal_parts: Vec<&str> = root
            .split('/')
            .filter(|c| !c.is_empty())
            .take_while(|c| !has_wildcard(c))
            .collect();
        let literal = clean(&literal_parts.join("/"));
        let depth = literal_parts.len();
        let cover = if has_wildcard(&root) {
            // `{` and `}` are not pattern syntax in policies: escape globset's alternation.
            let text = root.replace('{', "\\{").replace('}', "\\}");
            let glob = GlobBuilder::new(&text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| RuleError::Bad {
                    pattern: pattern.into(),
                    msg: e.kind().to_string(),
                })?;
            Cover::Glob(glob.compile_matcher())
        } else {
            Cover::Literal(clean(&root))
        };
        Ok(Rule {
            pattern: pattern.into(),
            rights,
            cover,
            literal,
            depth,
            from: from.into(),
            narrowing: false,
        })
    }

    /// Whether the rule applies to `path` (a clean absolute container path).
    pub fn covers(&self, path: &Path) -> bool {
        match &self.cover {
            Cover::Literal(l) => path.starts_with(l),
            Cover::Glob(m) => path
                .ancestors()
                .take_while(|a| a.starts_with(&self.literal))
                .any(|a| m.is_match(a)),
        }
    }

    pub fn is_glob(&self) -> bool {
        matches!(self.cover, Cover::Glob(_))
    }
}

/// Trees a writable working directory must not be in or above: what every process runs,
/// loads or reads at start (`/etc/ld.so.preload`, libraries, profiles) and the kernel's files.
/// The working directory comes from the image or the pod, not from the node's policy.
const SYSTEM_TREES: [&str; 20] = [
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/lib",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
];

/// Why `include_workdir` does not make `cwd` writable, if it does not: it is in or above a
/// system tree, it is the user's home or above it (startup files), or a rule more specific
/// than one for `/` itself already decides it (explicit rules win).
fn workdir_refusal(cwd: &Path, home: Option<&Path>, rules: &[Rule]) -> Option<String> {
    if let Some(why) = protected_dir(cwd, home) {
        return Some(why);
    }
    let cwd = clean(&cwd.to_string_lossy());
    rules
        .iter()
        .filter(|r| !r.narrowing && r.depth > 0 && r.covers(&cwd))
        .map(|r| format!("the rule {:?} decides it", r.pattern))
        .next()
}

/// Why a directory must not be made writable wholesale, if so: it is in or above a system tree,
/// or it is the user's home or above it (startup files).
pub fn protected_dir(dir: &Path, home: Option<&Path>) -> Option<String> {
    let dir = clean(&dir.to_string_lossy());
    if let Some(t) = SYSTEM_TREES
        .iter()
        .map(Path::new)
        .find(|t| dir.starts_with(t) || t.starts_with(&dir))
    {
        return Some(format!("it is in or above {}", t.display()));
    }
    home.filter(|h| h.starts_with(&dir))
        .map(|h| format!("it is the user's home ({}) or above it", h.display()))
}

/// The merged map of one container.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// What decides for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rights: Rights,
    /// Patterns of the winning rules (several on a tie); empty when no rule covers the path.
    pub by: Vec<String>,
}

impl RuleSet {
    /// From the effective filesystem policy. A key named in several places keeps the most
    /// explicit entry: `permissions` over `read_only` over `read_write`.
    pub fn from_policy(
        fs: &EffectiveFs,
        cwd: &Path,
        home: Option<&Path>,
        user: &str,
    ) -> Result<RuleSet, RuleError> {
        let mut entries: Vec<(String, Rights, String)> = Vec::new();
        let mut put = |pattern: &str, rights: Rights, from: &str| {
            let key = normalized_key(pattern);
            entries.retain(|(p, _, _)| normalized_key(p) != key);
            entries.push((pattern.to_string(), rights, from.to_string()));
        };
        for e in &fs.read_write {
            put(&e.value, Rights::ALL, &e.from);
        }
        for e in &fs.read_only {
            put(&e.value, Rights::RX, &e.from);
        }
        for (glob, e) in &fs.permissions {
            let rights = Rights::parse(&e.value).ok_or_else(|| RuleError::Bad {
                pattern: glob.clone(),
                msg: format!("malformed permission string {:?}", e.value),
            })?;
            put(glob, rights, &e.from);
        }
        let mut rules: Vec<Rule> = entries
            .iter()
            .map(|(p, r, from)| Rule::new(p, *r, from, home, user))
            .collect::<Result<_, _>>()?;
        if fs.include_workdir && cwd != Path::new("/") {
            match workdir_refusal(cwd, home, &rules) {
                None => rules.push(Rule::new(
                    &cwd.to_string_lossy(),
                    Rights::ALL,
                    "include_workdir",
                    home,
                    user,
                )?),
                Some(why) => tracing::warn!(
                    "include_workdir: {} stays as the policy has it: {why}",
                    cwd.display()
                ),
            }
        }
        for (glob, e) in &fs.narrowing {
            let rights = Rights::parse(&e.value).ok_or_else(|| RuleError::Bad {
                pattern: glob.clone(),
                msg: format!("malformed permission string {:?}", e.value),
            })?;
            let mut r = Rule::new(glob, rights, &e.from, home, user)?;
            r.narrowing = true;
            rules.push(r);
        }
        Ok(RuleSet { rules })
    }

    /// From a bare map (conformance tests, `explain` of a map).
    pub fn from_map(map: &[(&str, &str)]) -> Result<RuleSet, RuleError> {
        let rules = map
            .iter()
            .map(|(p, r)| {
                let rights = Rights::parse(r).ok_or_else(|| RuleError::Bad {
                    pattern: p.to_string(),
                    msg: format!("malformed permission string {r:?}"),
                })?;
                Rule::new(p, rights, "map", Some(Path::new("/root")), "root")
            })
            .collect::<Result<_, _>>()?;
        Ok(RuleSet { rules })
    }

    /// The rule that applies to `path`: the deepest literal prefix among the rules covering
    /// it (fewer rights on a tie), then, if narrowing rules cover it, the intersection with
    /// what they give it chosen the same way.
    pub fn decide(&self, path: &Path) -> Decision {
        let mut d =
            decide_among(self.rules.iter().filter(|r| !r.narrowing), path).unwrap_or(Decision {
                rights: Rights::NONE,
                by: Vec::new(),
            });
        if let Some(n) = decide_among(self.rules.iter().filter(|r| r.narrowing), path) {
            d.rights = d.rights.inter(n.rights);
            d.by.extend(n.by);
        }
        d
    }

    /// Take `w` away from each of `dirs` (symlink guards), whatever rule grants it:
    /// a rule at the directory's own depth, so the tie keeps the intersection.
    pub fn freeze(&mut self, dirs: &[String]) -> Result<(), RuleError> {
        for d in dirs {
            let rights = self.decide(Path::new(d)).rights.minus(Rights::W);
            self.rules
                .push(Rule::new(d, rights, "symlink_guards", None, "")?);
        }
        Ok(())
    }

    /// Whether `/` itself is readable: the permissive base.
    pub fn permissive(&self) -> bool {
        self.decide(Path::new("/")).rights.has(Rights::R)
    }

    /// Whether some rule's literal path is `p` or lies beneath it.
    pub fn names(&self, p: &Path) -> bool {
        self.rules.iter().any(|r| r.literal.starts_with(p))
    }
}

/// The decision among `rules` for `path`; `None` when none covers it.
fn decide_among<'a>(rules: impl Iterator<Item = &'a Rule>, path: &Path) -> Option<Decision> {
    let mut best: Option<usize> = None;
    let mut rights = Rights::ALL;
    let mut by = Vec::new();
    for r in rules.filter(|r| r.covers(path)) {
        match best {
            Some(d) if r.depth < d => continue,
            Some(d) if r.depth == d => {
                rights = rights.inter(r.rights);
                by.push(r.pattern.clone());
            }
            _ => {
                best = Some(r.depth);
                rights = r.rights;
                by = vec![r.pattern.clone()];
            }
        }
    }
    best.map(|_| Decision { rights, by })
}

/// `P`, `P/` and `P/**` name the same rule.
fn normalized_key(p: &str) -> String {
    let mut k = p.trim_end_matches('/').to_string();
    while let Some(s) = k.strip_suffix("/**") {
        k = s.to_string();
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rights() {
        assert_eq!(Rights::parse("r-x"), Some(Rights::RX));
        assert_eq!(Rights::parse("---"), Some(Rights::NONE));
        assert_eq!(Rights::parse("rwxoops"), None);
        assert_eq!(Rights::parse("x--"), None);
        assert_eq!(Rights::RW.to_string(), "rw-");
    }

    #[test]
    fn literal_prefix_and_cover() {
        let r = Rule::new("/h/**/*.json", Rights::ALL, "t", None, "u").unwrap();
        assert_eq!(r.depth, 1);
        assert!(r.covers(Path::new("/h/a.json")));
        assert!(r.covers(Path::new("/h/x/y/b.json")));
        assert!(!r.covers(Path::new("/h/x")));
        let r = Rule::new("/sandbox/.ssh/", Rights::NONE, "t", None, "u").unwrap();
        assert!(matches!(&r.cover, Cover::Literal(p) if p == Path::new("/sandbox/.ssh")));
        assert_eq!(r.depth, 2);
        let r = Rule::new("/**", Rights::R, "t", None, "u").unwrap();
        assert!(r.covers(Path::new("/")) && r.covers(Path::new("/etc/x")));
        assert_eq!(r.depth, 0);
        let r = Rule::new("/home/*/.config/**", Rights::NONE, "t", None, "u").unwrap();
        assert!(r.covers(Path::new("/home/a/.config")));
        assert!(r.covers(Path::new("/home/a/.config/x/y")));
        assert!(!r.covers(Path::new("/home/a/b/.config")));
    }

    #[test]
    fn tilde_is_the_container_users_home() {
        let r = Rule::new(
            "~/.ssh",
            Rights::NONE,
            "t",
            Some(Path::new("/home/agent")),
            "u",
        )
        .unwrap();
        assert!(r.covers(Path::new("/home/agent/.ssh/id")));
        let e = Rule::new("~/.ssh", Rights::NONE, "t", None, "uid 1000").unwrap_err();
        assert!(e.to_string().contains("uid 1000"), "{e}");
    }

    #[test]
    fn deepest_literal_prefix_wins_ties_grant_less() {
        let rs = RuleSet::from_map(&[("/d/**", "rw-"), ("/d/secret/**", "r--")]).unwrap();
        assert_eq!(rs.decide(Path::new("/d/secret/k")).rights, Rights::R);
        assert_eq!(rs.decide(Path::new("/d/other")).rights, Rights::RW);
        // Same literal depth: the intersection, whatever the order or the pattern length.
        let a = RuleSet::from_map(&[("/h/**", "rwx"), ("/h/*.key", "r--")]).unwrap();
        let b = RuleSet::from_map(&[("/h/*.key", "r--"), ("/h/**", "rwx")]).unwrap();
        for rs in [a, b] {
            assert_eq!(rs.decide(Path::new("/h/a.key")).rights, Rights::R);
            assert_eq!(rs.decide(Path::new("/h/a.txt")).rights, Rights::ALL);
        }
        assert_eq!(
            RuleSet::from_map(&[])
                .unwrap()
                .decide(Path::new("/x"))
                .rights,
            Rights::NONE
        );
    }

    #[test]
    fn braces_are_literal() {
        let r = Rule::new("/a/{x,y}*", Rights::NONE, "t", None, "u").unwrap();
        assert!(r.covers(Path::new("/a/{x,y}1")));
        assert!(!r.covers(Path::new("/a/x1")));
    }
}
