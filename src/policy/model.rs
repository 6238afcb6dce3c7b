//! The policy document format: NemoClaw/OpenShell-compatible YAML plus the
//! nemosandbox extensions. Every struct refuses unknown keys; semantic rules live in
//! `validate`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One policy document: a baseline or a preset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Format version; required in a baseline, optional in a preset; must be 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Present in presets: name and description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<PresetHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem_policy: Option<FilesystemPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessPolicy>,
    /// Egress allowed per destination and per executable, keyed by policy id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_policies: BTreeMap<String, NetworkPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_policy: Option<ExecPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_guards: Option<Vec<SymlinkGuard>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPolicy {
    /// The process's working directory becomes read-write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_workdir: Option<bool>,
    /// Each path means `path → r-x`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<String>,
    /// Each path means `path → rwx`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_write: Vec<String>,
    /// Glob → `rwx` permission string (`[r-][w-][x-]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub permissions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LandlockPolicy {
    pub compatibility: Compatibility,
}

/// What a missing kernel feature means.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// Apply what the kernel supports; log each right that could not be enforced.
    #[default]
    BestEffort,
    /// Fail `create`/`exec` when anything the policy needs is missing.
    HardRequirement,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<IdOrName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<IdOrName>,
}

/// A user or group: a name looked up in the container's /etc/passwd or /etc/group, or an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// The executables allowed to reach the endpoints (exact paths or globs).
    pub binaries: Vec<Binary>,
    /// nemosandbox extension: environment variables whose values the container only sees as
    /// placeholders; the layer-7 proxy puts the real value back in request headers sent to
    /// these endpoints by these binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<Credential>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The environment variable holding the secret.
    pub env: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Exact name, `*.x.com`/`**.x.com` label glob, or an IP literal.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Layer-7 rules; need `protocol`; never together with `access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<L7Rule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// CIDRs this endpoint may resolve to inside private ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Rest,
    Websocket,
    Tcp,
    Http,
    Grpc,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    #[default]
    Enforce,
    /// Allow, and write an audit event.
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tls {
    Skip,
    /// Deprecated (accepted with a warning).
    Terminate,
    /// Deprecated (accepted with a warning).
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L7Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<L7Match>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<L7Match>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L7Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// Exact path or glob (`*`, `**`, `?`), resolved inside the container's root.
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecPolicy {
    #[serde(default)]
    pub allowlist: Vec<ExecPattern>,
    /// Files (absolute paths in the container) that wrap scripts like a shell (`X -c
    /// SCRIPT`), besides the image's `/bin/sh`, `/bin/bash`, `/bin/dash` and `/bin/busybox`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shells: Vec<String>,
    /// `:` `true` `false` `pwd` `cd` `test` `[` allowed inside shell scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_builtins: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecPattern {
    /// Glob on the resolved executable path.
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SymlinkGuard {
    pub dir: String,
    pub target_dir: String,
    /// Default true; false = a missing dir is logged as `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}
