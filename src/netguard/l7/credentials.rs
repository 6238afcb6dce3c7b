//! Credential placeholders: the container holds an opaque stand-in for each secret a network
//! policy names (`credentials: [{env: X}]`); the real value stays in the state directory
//! (0600) and the layer-7 proxy puts it back only in the request headers of connections that
//! policy allowed.
//!
//! Threat: a workload that reads its own environment, `/proc/1/environ` or a core dump learns
//! only placeholders; sending a placeholder anywhere else sends nothing of value. An `exec`
//! whose environment carries a real value (engines pass the container's configured
//! environment again) gets the placeholder instead.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::container_dir::ContainerDir;
use crate::policy::merge::Effective;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("credential {0}: its value holds a line break, which a header cannot carry")]
    LineBreak(String),
}

/// One secret: the policy whose requests get it, the variable, and both values.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secret {
    pub policy: String,
    pub env: String,
    pub placeholder: String,
    pub value: String,
}

impl std::fmt::Debug for Secret {
    // Never the value, whoever prints this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secret({} {} {})",
            self.policy, self.env, self.placeholder
        )
    }
}

fn random_hex() -> Result<String, std::io::Error> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Replace the named variables' values in the spec's environment by placeholders and keep the
/// real ones in the state directory `own`. Variables the spec does not set are skipped.
pub fn install(
    spec: &mut Spec,
    eff: &Effective,
    own: &ContainerDir,
) -> Result<usize, CredentialError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CredentialError::Io { path, source }
    };
    let Some(process) = spec.process_mut() else {
        return Ok(0);
    };
    let mut env = process.env().clone().unwrap_or_default();
    let mut secrets: Vec<Secret> = Vec::new();
    for (key, net) in &eff.network_policies {
        for c in net.policy.credentials.iter().flatten() {
            let prefix = format!("{}=", c.env);
            // The last entry wins, as libcontainer builds the environment.
            let Some(value) = env
                .iter()
                .rev()
                .find_map(|e| e.strip_prefix(&prefix))
                .map(str::to_string)
            else {
                continue;
            };
            if value.contains(['\r', '\n']) {
                return Err(CredentialError::LineBreak(c.env.clone()));
            }
            let existing = secrets
                .iter()
                .find(|s| s.env == c.env)
                .map(|s| s.placeholder.clone());
            let placeholder = match existing {
                Some(p) => p,
                None => format!("nemosandbox-credential-{}", random_hex().map_err(io(own))?),
            };
            secrets.push(Secret {
                policy: key.clone(),
                env: c.env.clone(),
                placeholder,
                value,
            });
        }
    }
    if secrets.is_empty() {
        return Ok(0);
    }
    scrub(&mut env, &secrets);
    for s in &secrets {
        let prefix = format!("{}=", s.env);
        for e in env.iter_mut().filter(|e| e.starts_with(&prefix)) {
            *e = format!("{prefix}{}", s.placeholder);
        }
    }
    process.set_env(Some(env));
    let path = own.credentials();
    let text = serde_json::to_vec(&secrets).map_err(|source| CredentialError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&text))
        .map_err(io(&path))?;
    Ok(secrets.len())
}

/// The secrets of a state directory (none when it has no file).
pub fn load(own: &ContainerDir) -> Result<Vec<Secret>, CredentialError> {
    let path = own.credentials();
    match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|source| CredentialError::Json { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CredentialError::Io { path, source }),
    }
}

/// Replace every variable whose value is a real secret by the secret's placeholder.
pub fn scrub(env: &mut [String], secrets: &[Secret]) {
    for e in env.iter_mut() {
        let Some((k, v)) = e.split_once('=') else {
            continue;
        };
        if let Some(s) = secrets.iter().find(|s| !s.value.is_empty() && s.value == v) {
            *e = format!("{k}={}", s.placeholder);
        }
    }
}

/// A policy's (placeholder, value) pairs.
pub fn by_policy(secrets: &[Secret]) -> HashMap<String, Vec<(String, String)>> {
    let mut m: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for s in secrets {
        m.entry(s.policy.clone())
            .or_default()
            .push((s.placeholder.clone(), s.value.clone()));
    }
    m
}

/// Put real values back for placeholders in a request head's header values (not the request
/// line: a secret in a URL would end up in logs; not field names).
pub fn substitute(head: &[u8], pairs: &[(String, String)]) -> Vec<u8> {
    in_values(
        head,
        pairs.iter().map(|(p, v)| (p.as_bytes(), v.as_bytes())),
    )
}

/// Turn real values in a response head back into placeholders (a server that reflects a
/// request header must not hand the secret to the container).
pub fn mask(head: &[u8], pairs: &[(String, String)]) -> Vec<u8> {
    in_values(
        head,
        pairs.iter().map(|(p, v)| (v.as_bytes(), p.as_bytes())),
    )
}

fn in_values<'a>(
    head: &[u8],
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    for (i, line) in head.split_inclusive(|b| *b == b'\n').enumerate() {
        let colon = line.iter().position(|b| *b == b':');
        match colon {
            Some(c) if i > 0 => {
                out.extend_from_slice(&line[..=c]);
                let mut value = line[c + 1..].to_vec();
                for (from, to) in pairs.clone() {
                    value = replace_all(&value, from, to);
                }
                out.extend_from_slice(&value);
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(policy: &str, env: &str, ph: &str, v: &str) -> Secret {
        Secret {
            policy: policy.into(),
            env: env.into(),
            placeholder: ph.into(),
            value: v.into(),
        }
    }

    #[test]
    fn values_go_back_in_headers_only() {
        let pairs = vec![("PH1".to_string(), "real-token".to_string())];
        let head =
            b"GET /x?t=PH1 HTTP/1.1\r\nAuthorization: Bearer PH1\r\nX: aPH1b\r\nPH1: v\r\n\r\n";
        let out = substitute(head, &pairs);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "GET /x?t=PH1 HTTP/1.1\r\nAuthorization: Bearer real-token\r\nX: areal-tokenb\r\nPH1: v\r\n\r\n"
        );
        let reflected = b"HTTP/1.1 200 OK\r\nEcho: Bearer real-token\r\n\r\n";
        assert_eq!(
            String::from_utf8(mask(reflected, &pairs)).unwrap(),
            "HTTP/1.1 200 OK\r\nEcho: Bearer PH1\r\n\r\n"
        );
    }

    #[test]
    fn real_values_in_an_exec_environment_become_placeholders() {
        let s = vec![secret("p", "TOKEN", "PH", "hunter2")];
        let mut env = vec![
            "TOKEN=hunter2".to_string(),
            "COPY=hunter2".to_string(),
            "OTHER=x".to_string(),
        ];
        scrub(&mut env, &s);
        assert_eq!(env, vec!["TOKEN=PH", "COPY=PH", "OTHER=x"]);
        assert!(
            !format!("{s:?}").contains("hunter2"),
            "Debug never shows a value"
        );
    }
}
