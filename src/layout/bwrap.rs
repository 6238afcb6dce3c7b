//! The plan in words and as the equivalent `bwrap` arguments (for `policy explain`).

use std::fmt::Write;

use super::plan::{Action, Base, Plan};

/// The bubblewrap command line that builds the same tree from the image root seen as `/`.
/// bubblewrap has no "empty read-only file": `--ro-bind-data 3` stands for it (fd 3 empty).
pub fn args(plan: &Plan) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    if plan.base == Base::Permissive {
        push(&["--ro-bind", "/", "/"]);
    }
    push(&["--proc", "/proc", "--dev", "/dev"]);
    for s in &plan.steps {
        let d = s.dest.to_string_lossy();
        match &s.action {
            Action::BindRw { .. } => push(&["--bind", &d, &d]),
            Action::BindRo { .. } => push(&["--ro-bind", &d, &d]),
            Action::MaskDir => push(&["--tmpfs", &d, "--remount-ro", &d]),
            Action::MaskFile => push(&["--ro-bind-data", "3", &d]),
            Action::MaskSpecial => push(&["--ro-bind", "/dev/null", &d]),
            Action::Tmpfs => push(&["--tmpfs", &d]),
            Action::Symlink { target } => push(&["--symlink", &target.to_string_lossy(), &d]),
        }
    }
    a
}

/// Human-readable plan: base, steps in order, glob matches, Landlock grants, notes.
pub fn describe(plan: &Plan) -> String {
    let mut o = String::new();
    let base = match plan.base {
        Base::Permissive => "permissive: image root read-only, /proc, /dev",
        Base::Restrictive => {
            "restrictive: only /usr /bin /lib /lib64 /sbin /etc /opt of the image, read-only"
        }
    };
    let _ = writeln!(o, "  base: {base}");
    for s in &plan.steps {
        let what = match &s.action {
            Action::BindRw { .. } => "read-write bind",
            Action::BindRo { .. } => "read-only bind",
            Action::MaskDir => "masked: empty read-only tmpfs",
            Action::MaskFile => "masked: empty read-only file",
            Action::MaskSpecial => "masked (maskedPaths)",
            Action::Tmpfs => "writable tmpfs",
            Action::Symlink { .. } => "symlink kept",
        };
        let _ = writeln!(o, "  {:<36} {:<32} {}", s.dest.display(), what, s.why);
    }
    for (pattern, found) in &plan.matches {
        let _ = writeln!(o, "  glob {pattern:?} matched {} path(s):", found.len());
        for f in found {
            let _ = writeln!(o, "    {}", f.display());
        }
        let _ = writeln!(
            o,
            "    warning: matches created later are covered by Landlock only where it can express the rule"
        );
    }
    let _ = writeln!(o, "  landlock grants (path: rights, beneath included):");
    for g in &plan.grants {
        let _ = writeln!(o, "    {}: {}", g.path.display(), g.rights);
    }
    for n in &plan.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    let _ = writeln!(o, "  bwrap {}", args(plan).join(" "));
    o
}
