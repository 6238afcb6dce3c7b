//! Reading files of a container's root the way the kernel will run them. For now: the one `#!`
//! parser the exec gate and the network guard share, so that both follow `#!/usr/bin/env NAME`
//! to the program the kernel ends up running.

use std::path::{Path, PathBuf};

use crate::executor::DEFAULT_PATH;

/// What a script's `#!` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    /// The program the kernel runs: the first word of the line.
    pub interpreter: String,
    /// With `env` as the interpreter: the command env looks up on PATH (the first word that is
    /// not an option; `env -S python3 -u` names python3).
    pub via_env: Option<String>,
}

impl Shebang {
    /// The places, in lookup order, where `env` looks for `via_env` with the default PATH (a
    /// script's own PATH is the workload's to set; the default is what images and the runtime
    /// use).
    pub fn env_candidates(&self) -> Vec<PathBuf> {
        match &self.via_env {
            Some(name) if !name.contains('/') => DEFAULT_PATH
                .split(':')
                .map(|d| Path::new(d).join(name))
                .collect(),
            Some(path) => vec![PathBuf::from(path)],
            None => vec![],
        }
    }
}

/// The `#!` line of `head` (a file's first bytes), if it has one.
pub fn shebang(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(rest.split(|b| *b == b'\n').next()?).into_owned();
    let mut words = line.split_whitespace();
    let interpreter = words.next()?.to_string();
    let via_env = if Path::new(&interpreter)
        .file_name()
        .is_some_and(|n| n == "env")
    {
        Some(words.find(|w| !w.starts_with('-'))?.to_string())
    } else {
        None
    };
    Some(Shebang {
        interpreter,
        via_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_parse_like_the_kernel_and_env_read_them() {
        let s = shebang(b"#!/bin/sh -e\necho").unwrap();
        assert_eq!((s.interpreter.as_str(), s.via_env), ("/bin/sh", None));
        let s = shebang(b"#!/usr/bin/env python3\nprint()").unwrap();
        assert_eq!(s.interpreter, "/usr/bin/env");
        assert_eq!(s.via_env.as_deref(), Some("python3"));
        assert_eq!(s.env_candidates()[3], PathBuf::from("/usr/bin/python3"));
        let s = shebang(b"#! /usr/bin/env -S node --flag\n").unwrap();
        assert_eq!(s.via_env.as_deref(), Some("node"));
        let s = shebang(b"#!/usr/bin/env /opt/x/run\n").unwrap();
        assert_eq!(s.env_candidates(), vec![PathBuf::from("/opt/x/run")]);
        assert_eq!(
            shebang(b"#!/usr/bin/env\n"),
            None,
            "env with nothing to run"
        );
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }
}
