use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        join(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}

/// Put process `pid` into the v1 cgroup at `cgroup_path`. A single-threaded process moving
/// itself writes `0` to `tasks`: the kernel moves the calling thread without its global
/// threadgroup lock, whose writer waits for an RCU grace period (milliseconds) whenever
/// nobody took it lately. Every other move goes through `cgroup.procs`. Only the calling
/// thread can add a thread to its process, so it stays single-threaded up to the write.
pub(super) fn join(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        return common::write_cgroup_file(cgroup_path.join("tasks"), 0);
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

/// Whether this process has one thread (`/proc/self/stat`, field 20); false when unreadable.
fn single_threaded() -> bool {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_comm.split_whitespace().nth(17) == Some("1")
}
