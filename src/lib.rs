//! nemosandbox: a runc-compatible OCI runtime on libcontainer that confines untrusted code with
//! kernel-enforced policies. The CLI (`src/main.rs`, `src/cli/`) is a thin layer over this crate.

pub mod audit;
pub mod bundle;
pub mod cgroups;
pub mod cgroupv1;
pub mod confine;
pub mod console;
pub mod container_dir;
pub mod container_root;
pub mod doctor;
pub mod execgate;
pub mod executor;
pub mod foreground;
pub mod helper;
pub mod hooks;
pub mod identity;
pub mod info;
pub mod install;
pub mod layout;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod netguard;
pub mod path_error;
pub mod plan;
pub mod policy;
pub mod privilege;
pub mod sandbox;
pub mod sealed;
pub mod signals;
pub mod state;
pub mod symlinks;
/// Helpers the unit tests and the integration suite share (not part of the API).
#[doc(hidden)]
pub mod testutil;
pub mod timing;
