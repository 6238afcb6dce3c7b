//! seccomp profiles compiled to BPF once, on the host, and loaded as raw filters in the
//! container. libseccomp needs ~6 ms per architecture to build a Docker-sized allowlist; doing
//! that in every init and exec'd process doubled `run`. The compiled program is cached by the
//! profile's hash under the runtime root, and copied into the container's state directory so
//! `exec` never depends on the cache.

use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag};
use sha2::{Digest, Sha256};

use crate::path_error::io_err;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("seccomp profile: {0}")]
    Profile(String),
    #[error(transparent)]
    Io(#[from] crate::path_error::PathError),
}

fn prof<E: std::fmt::Display>(e: E) -> BpfError {
    BpfError::Profile(e.to_string())
}

/// The `SCMP_…` spelling oci-spec serializes an enum to.
fn spelling<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, BpfError> {
    let val = Some(errno.map_or(libc::EPERM, |e| e as i32));
    ScmpAction::from_str(&spelling(&a), val).map_err(prof)
}

/// Profiles the compiler does not take (user notification needs the listener fd libcontainer
/// returns) keep libcontainer's loader.
pub fn compilable(p: &LinuxSeccomp) -> bool {
    p.default_action() != LinuxSeccompAction::ScmpActNotify
        && p.syscalls().as_ref().is_none_or(|s| {
            s.iter()
                .all(|r| r.action() != LinuxSeccompAction::ScmpActNotify)
        })
}

/// seccomp(2) filter flags the profile asks for.
pub fn flags(p: &LinuxSeccomp) -> u32 {
    p.flags().as_ref().map_or(0, |fs| {
        fs.iter()
            .map(|f| match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // The process is single-threaded here; notify flags never reach this path.
                _ => 0,
            } as u32)
            .fold(0, |a, b| a | b)
    })
}

/// Build the filter with libseccomp and export its BPF program.
pub fn compile(p: &LinuxSeccomp) -> Result<Vec<u8>, BpfError> {
    let default = action(p.default_action(), p.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(prof)?;
    for arch in p.architectures().as_deref().unwrap_or_default() {
        ctx.add_arch(ScmpArch::from_str(&spelling(arch)).map_err(prof)?)
            .map_err(prof)?;
    }
    ctx.set_ctl_nnp(false).map_err(prof)?;
    let mut rules = 0usize;
    for rule in p.syscalls().as_deref().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or_default();
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let conds: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                let op = match ScmpCompareOp::from_str(&spelling(&a.op())).map_err(prof)? {
                    // As libcontainer reads the spec: `valueTwo` is the mask.
                    ScmpCompareOp::MaskedEqual(_) => {
                        ScmpCompareOp::MaskedEqual(a.value_two().unwrap_or(0))
                    }
                    op => op,
                };
                Ok(ScmpArgCompare::new(a.index() as u32, op, a.value()))
            })
            .collect::<Result<_, BpfError>>()?;
        for name in rule.names() {
            // A name this libseccomp or architecture does not know cannot be called either.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            rules += 1;
            if conds.is_empty() {
                ctx.add_rule(act, sc).map_err(prof)?;
            } else if indexes.len() == conds.len() {
                ctx.add_rule_conditional(act, sc, &conds).map_err(prof)?;
            } else {
                // Several conditions on one argument: one rule each (runc's reading).
                for c in &conds {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(prof)?;
                }
            }
        }
    }
    // A binary tree of syscall numbers instead of one long chain: the kernel walks the
    // program for every syscall number when it loads it (to find the ones it can allow
    // without running it), so a chain of hundreds of rules cost a millisecond per container.
    // Short programs stay chains (libseccomp before 2.5.4 built a wrong tree for none).
    if rules >= TREE_FROM_RULES {
        ctx.set_ctl_optimize(2).map_err(prof)?;
    }
    let mut tmp = tempfile_in_memory()?;
    ctx.export_bpf(tmp.as_fd()).map_err(prof)?;
    let mut out = Vec::new();
    tmp.rewind()
        .map_err(io_err(std::path::Path::new("memfd")))?;
    tmp.read_to_end(&mut out)
        .map_err(io_err(std::path::Path::new("memfd")))?;
    Ok(out)
}

fn tempfile_in_memory() -> Result<std::fs::File, BpfError> {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"nemosandbox-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io_err(std::path::Path::new("memfd"))(std::io::Error::last_os_error()).into());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Part of the cache key: changes whenever `compile` emits a different program for the same
/// profile, so a runtime root never serves a program an older build compiled.
const COMPILE_FORMAT: &str = "binary-tree-1";

/// Rules from which a profile compiles to a binary tree.
const TREE_FROM_RULES: usize = 8;

/// The compiled program for `p`, from `cache` when an earlier container compiled it.
pub fn compile_cached(cache: &Path, p: &LinuxSeccomp) -> Result<Vec<u8>, BpfError> {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(COMPILE_FORMAT);
    // The library that compiles it (linked statically, but a rebuild may bring another).
    if let Ok(v) = libseccomp::ScmpVersion::current() {
        h.update(format!("libseccomp {}.{}.{}", v.major, v.minor, v.micro));
    }
    h.update(serde_json::to_vec(p).expect("profile serializes"));
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let path = cache.join(format!("{key}.bpf"));
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() && bytes.len() % 8 == 0 {
            return Ok(bytes);
        }
    }
    let bytes = compile(p)?;
    // Best effort: a cache that cannot be written costs time, not correctness.
    if std::fs::create_dir_all(cache).is_ok() {
        let tmp = cache.join(format!("{key}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(bytes)
}

/// Install a compiled program in the calling thread (no_new_privs already set).
pub fn load(bpf: &[u8], flags: u32) -> Result<(), nix::Error> {
    install(bpf, flags).map(drop)
}

/// Install a program whose `SCMP_ACT_NOTIFY` rules go to a new listener, returned.
pub fn load_listener(bpf: &[u8]) -> Result<std::os::fd::OwnedFd, nix::Error> {
    let fd = install(bpf, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32)?;
    // SAFETY: `fd` was just returned by the kernel to this process and is owned by nobody.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

fn install(bpf: &[u8], flags: u32) -> Result<libc::c_long, nix::Error> {
    if bpf.is_empty() || bpf.len() % 8 != 0 || bpf.len() / 8 > u16::MAX as usize {
        return Err(nix::Error::EINVAL);
    }
    let prog = libc::sock_fprog {
        len: (bpf.len() / 8) as u16,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `bpf`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(rc)
}
