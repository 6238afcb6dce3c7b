//! The runc verbs through the real binary, as root, on busybox-static bundles.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;

#[path = "lifecycle/basics.rs"]
mod basics;
#[path = "lifecycle/cgroups.rs"]
mod cgroups;
#[path = "lifecycle/failures.rs"]
mod failures;
#[path = "lifecycle/sandbox.rs"]
mod sandbox;
