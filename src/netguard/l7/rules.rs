//! Layer-7 rules of `protocol: rest` endpoints: which HTTP requests an endpoint allows.
//!
//! A request is allowed when an `allow` rule matches it and no `deny` rule does (deny wins,
//! whatever the order). `method` is a method name (case-insensitive) or `*`, absent = any;
//! `path` is a glob on the request's path, `*` within one segment and `**` across segments,
//! absent = any. The query string is not part of the path.
//!
//! Threat: the upstream server, not this matcher, decides what a path means. A path the two
//! could read differently (`/repos/../admin`, `/repos/%2e%2e/admin`, `/repos%2fx`, `//admin`,
//! a backslash, control bytes, `;` parameters, a fragment) is refused instead of normalised,
//! so no spelling of `/admin` passes a `/repos/**` rule.

use globset::{GlobBuilder, GlobMatcher};

use crate::policy::model::{L7Match, L7Rule};

/// One compiled rule.
#[derive(Debug, Clone)]
struct Compiled {
    allow: bool,
    method: Option<String>,
    path: Option<GlobMatcher>,
    /// The rule as the policy wrote it, for the 403 body and the audit event.
    text: String,
}

/// An endpoint's compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Compiled>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: why, naming the rule (or the lack of one).
    Deny(String),
}

#[derive(Debug, thiserror::Error)]
#[error("layer-7 rule {index}: path {pattern:?}: {message}")]
pub struct RuleError {
    index: usize,
    pattern: String,
    message: String,
}

fn describe(allow: bool, m: &L7Match) -> String {
    format!(
        "{} {} {}",
        if allow { "allow" } else { "deny" },
        m.method.as_deref().unwrap_or("*"),
        m.path.as_deref().unwrap_or("/**")
    )
}

impl Rules {
    pub fn compile(rules: &[L7Rule]) -> Result<Rules, RuleError> {
        let mut out = Vec::with_capacity(rules.len());
        for (index, r) in rules.iter().enumerate() {
            let (allow, m) = match (&r.allow, &r.deny) {
                (Some(m), None) => (true, m),
                (None, Some(m)) => (false, m),
                // Validation refuses both and neither; a rule that says nothing matches nothing.
                _ => continue,
            };
            let path = match &m.path {
                None => None,
                Some(p) => Some(
                    GlobBuilder::new(p)
                        .literal_separator(true)
                        .backslash_escape(false)
                        .build()
                        .map_err(|e| RuleError {
                            index,
                            pattern: p.clone(),
                            message: e.kind().to_string(),
                        })?
                        .compile_matcher(),
                ),
            };
            out.push(Compiled {
                allow,
                method: m
                    .method
                    .as_ref()
                    .filter(|m| m.as_str() != "*")
                    .map(|m| m.to_ascii_uppercase()),
                path,
                text: describe(allow, m),
            });
        }
        Ok(Rules { rules: out })
    }

    /// Decide a request by its method and request target (origin form `/p?q`, or absolute
    /// form `http://host/p?q`).
    pub fn decide(&self, method: &str, target: &str) -> Verdict {
        let path = match request_path(target) {
            Ok(p) => p,
            Err(why) => return Verdict::Deny(why),
        };
        let method = method.to_ascii_uppercase();
        let matches = |r: &Compiled| {
            r.method.as_deref().is_none_or(|m| m == method)
                && r.path.as_ref().is_none_or(|g| g.is_match(&path))
        };
        if let Some(d) = self.rules.iter().find(|r| !r.allow && matches(r)) {
            return Verdict::Deny(format!("{method} {path}: rule \"{}\"", d.text));
        }
        if self.rules.iter().any(|r| r.allow && matches(r)) {
            return Verdict::Allow;
        }
        Verdict::Deny(format!("{method} {path}: no rule allows it"))
    }
}

/// The path of a request target, decoded, or why it is refused.
pub fn request_path(target: &str) -> Result<String, String> {
    let origin = if target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
    } else {
        return Err(format!("request target {target:?} is not a path"));
    };
    if origin.contains('#') {
        return Err(format!("request target {target:?}: a fragment"));
    }
    let raw = origin.split('?').next().unwrap_or("/");
    // Path parameters: servers that drop them (`/repos/..;/admin`) route elsewhere.
    if raw.contains(';') || raw.to_ascii_lowercase().contains("%3b") {
        return Err(format!("path {raw:?}: a parameter (;)"));
    }
    let path = percent_decode(raw).ok_or_else(|| format!("path {raw:?}: bad percent-encoding"))?;
    // An encoded slash would be one segment here and two upstream.
    if raw.to_ascii_lowercase().contains("%2f") || raw.to_ascii_lowercase().contains("%5c") {
        return Err(format!("path {raw:?}: encoded slash"));
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(format!("path {raw:?}: control byte or backslash"));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        if *s == "." || *s == ".." {
            return Err(format!("path {raw:?}: dot segment"));
        }
        if s.is_empty() && i != last {
            return Err(format!("path {raw:?}: empty segment"));
        }
    }
    Ok(path)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, method: Option<&str>, path: Option<&str>) -> L7Rule {
        let m = L7Match {
            method: method.map(String::from),
            path: path.map(String::from),
        };
        if allow {
            L7Rule {
                allow: Some(m),
                deny: None,
            }
        } else {
            L7Rule {
                allow: None,
                deny: Some(m),
            }
        }
    }

    #[test]
    fn methods_and_path_globs_decide() {
        let r = Rules::compile(&[
            rule(true, Some("GET"), Some("/repos/**")),
            rule(true, Some("post"), Some("/bot*/sendMessage")),
        ])
        .unwrap();
        assert_eq!(r.decide("GET", "/repos/x"), Verdict::Allow);
        assert_eq!(r.decide("get", "/repos/x/y/z?ref=main"), Verdict::Allow);
        assert_eq!(r.decide("POST", "/bot123/sendMessage"), Verdict::Allow);
        for (m, t) in [
            ("POST", "/repos/x"),
            ("GET", "/admin"),
            ("GET", "/repository"),
            ("POST", "/bot1/x/sendMessage"),
            ("GET", "/bot1/sendMessage"),
        ] {
            assert!(matches!(r.decide(m, t), Verdict::Deny(_)), "{m} {t}");
        }
    }

    #[test]
    fn deny_wins_and_absent_fields_match_anything() {
        let r = Rules::compile(&[
            rule(true, None, None),
            rule(false, Some("DELETE"), Some("/**")),
        ])
        .unwrap();
        assert_eq!(r.decide("PATCH", "/anything"), Verdict::Allow);
        let Verdict::Deny(why) = r.decide("DELETE", "/x") else {
            panic!("deny rule ignored")
        };
        assert!(why.contains("deny DELETE /**"), "{why}");
        assert!(matches!(
            Rules::default().decide("GET", "/"),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn ambiguous_spellings_of_a_path_are_refused() {
        let r = Rules::compile(&[rule(true, Some("GET"), Some("/repos/**"))]).unwrap();
        for t in [
            "/repos/../admin",
            "/repos/%2e%2e/admin",
            "/repos/%2E%2E/admin",
            "/repos%2fx",
            "/repos/x%2F..%2Fadmin",
            "//repos/x",
            "/repos//x",
            "/repos/./x",
            "/repos/x\\..\\admin",
            "/repos/%00",
            "/repos/%zz",
            "/repos/..;/admin",
            "/repos/..%3b/admin",
            "/repos/x;jsessionid=1",
            "/repos/x#/../admin",
            "*",
            "repos/x",
        ] {
            assert!(matches!(r.decide("GET", t), Verdict::Deny(_)), "{t}");
        }
        assert_eq!(r.decide("GET", "/repos/a%20b"), Verdict::Allow);
        assert_eq!(r.decide("GET", "http://api.test/repos/x"), Verdict::Allow);
        assert_eq!(r.decide("GET", "/repos/x/"), Verdict::Allow);
    }
}
