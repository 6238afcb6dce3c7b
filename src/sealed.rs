//! The unconfined `oci` baseline runs the runtime from a sealed in-memory copy of itself.
//!
//! Threat (CVE-2019-5736): the container's init process and every `exec`'d process are the
//! runtime binary until they execute the workload. A process of the container that gets hold
//! of that binary (`/proc/PID/exe` of a process joining the container, or an entrypoint whose
//! interpreter is `/proc/self/exe`) could write to it and own the host at the next runtime
//! call. Confining baselines deny execute and write outside the container's files (Landlock);
//! under `oci` nothing does, so there, as runc does, the runtime re-executes itself from a
//! sealed memfd before anything of the container exists: what a container process can reach
//! is a copy that cannot be written.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;

/// Set in the environment of the re-executed runtime (and removed by it at once).
const MARKER: &str = "_NEMOSANDBOX_SEALED";

static SEALED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// At the start of `main`, before any thread: note whether this process runs from the sealed
/// copy, and drop the marker so nothing it starts inherits it.
pub fn note_marker() {
    if std::env::var_os(MARKER).is_some() {
        // SAFETY: called at the start of `main`, before any thread exists.
        unsafe { std::env::remove_var(MARKER) };
        SEALED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Re-execute this command from a sealed copy of the binary, unless it already runs from
/// one. Returns only when it does, or on failure.
pub fn ensure() -> Result<(), String> {
    if SEALED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut exe =
        std::fs::File::open("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let flags = nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
        | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING;
    let fd = nix::sys::memfd::memfd_create(c"nemosandbox", flags)
        .map_err(|e| format!("memfd_create: {e}"))?;
    let mut copy = std::fs::File::from(fd);
    std::io::copy(&mut exe, &mut copy).map_err(|e| format!("copying the runtime: {e}"))?;
    copy.flush().map_err(|e| e.to_string())?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor this function owns, with integer arguments.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(format!(
            "sealing the copy: {}",
            std::io::Error::last_os_error()
        ));
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<Result<_, _>>()
        .map_err(|_| "a NUL in an argument".to_string())?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            kv.push(b'=');
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARKER}=1")).expect("no NUL"));
    let err = nix::unistd::fexecve(copy.as_raw_fd(), &args, &env).unwrap_err();
    Err(format!("re-executing from the sealed copy: {err}"))
}
