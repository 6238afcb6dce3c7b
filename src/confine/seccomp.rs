//! seccomp: a Docker-default-equivalent allowlist for specs without a profile, and
//! the always-denied filter stacked on top of whatever profile runs. Socket families, types
//! and options are refused by the hand-written filter in `sockets`. Two filters, not one
//! merged profile: the kernel applies the stricter verdict, and the spec's profile is loaded
//! exactly as written.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Syscalls a container may make without any capability (the shape of Docker's default).
const BASE: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "send",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "getxattrat",
    "listxattrat",
    "removexattrat",
    "setxattrat",
    "uretprobe",
];

/// Syscalls allowed only with a capability in the container's bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "clone",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
];

/// Denied whatever the profile says.
pub const ALWAYS_DENIED: &[&str] = &[
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "ptrace",
    "process_vm_writev",
    "process_vm_readv",
];

const EPERM: u32 = libc::EPERM as u32;
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    b.build().expect("syscall rule fields set")
}

/// A rule matching when `(arg[index] & mask) == value`. libcontainer hands `valueTwo` to
/// libseccomp as the mask and `value` as the datum.
fn masked(
    names: &[&str],
    index: usize,
    mask: u64,
    value: u64,
    action: LinuxSeccompAction,
    errno: Option<u32>,
) -> LinuxSyscall {
    let mut r = rule(names, action, errno);
    r.set_args(Some(vec![masked_arg(index, mask, value)]));
    r
}

/// Argument `index`, masked with `mask`, equals `value`.
fn masked_arg(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .value_two(mask)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("arg fields set")
}

/// The allowlist for a spec without a profile; `caps` is the container's bounding set.
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    let mut names: Vec<&str> = BASE.to_vec();
    let has = |c: &str| caps.iter().any(|x| x == c);
    for (cap, calls) in BY_CAPABILITY {
        if has(cap) {
            names.extend_from_slice(calls);
        }
    }
    let mut syscalls = vec![rule(&names, LinuxSeccompAction::ScmpActAllow, None)];
    if !has("CAP_SYS_ADMIN") {
        // Threads and processes, but no new namespaces; clone3's flags live in memory the
        // filter cannot read, so it reports ENOSYS and libc falls back to clone.
        syscalls.push(masked(
            &["clone"],
            0,
            NAMESPACE_FLAGS,
            0,
            LinuxSeccompAction::ScmpActAllow,
            None,
        ));
        syscalls.push(rule(
            &["clone3"],
            LinuxSeccompAction::ScmpActErrno,
            Some(libc::ENOSYS as u32),
        ));
    }
    for persona in [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        let mut r = rule(&["personality"], LinuxSeccompAction::ScmpActAllow, None);
        r.set_args(Some(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(persona)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .expect("arg fields set")]));
        syscalls.push(r);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .expect("profile fields set")
}

/// The filter stacked on every process of every container.
pub fn always_denied() -> LinuxSeccomp {
    let errno = LinuxSeccompAction::ScmpActErrno;
    let syscalls = vec![
        rule(ALWAYS_DENIED, errno, Some(EPERM)),
        // New user namespaces: through unshare or clone flags; clone3 cannot be inspected.
        masked(
            &["unshare", "clone"],
            0,
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64,
            errno,
            Some(EPERM),
        ),
        rule(&["clone3"], errno, Some(libc::ENOSYS as u32)),
        // A second notification listener: on top of the guard's filter it would
        // take the notifications; once the guard is gone it would let the workload answer
        // "continue" for its own connects. The guard's filter is loaded before this one.
        masked(
            &["seccomp"],
            1,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            errno,
            Some(EPERM),
        ),
        // Moving the argument and environment areas would change what the guard captured as
        // the process's identity at execve (also needs CAP_SYS_RESOURCE).
        masked(
            &["prctl"],
            0,
            0xffff_ffff,
            libc::PR_SET_MM as u64,
            errno,
            Some(EPERM),
        ),
    ];
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .expect("profile fields set")
}

/// What `sandbox` refuses beyond `always_denied`, as a filter of its own (default allow).
/// `no_named_unix`: the kernel cannot hand unix connects to the guard (no cgroup unix hooks),
/// so unix sockets are not created at all (`socketpair` still works: it names nothing).
/// `no_reuseport`: the sandbox shares the host's network namespace, where `SO_REUSEPORT` would
/// let it take a share of a host service's port.
pub fn local_denials(no_named_unix: bool, no_reuseport: bool) -> Option<LinuxSeccomp> {
    let errno = LinuxSeccompAction::ScmpActErrno;
    let mut syscalls = Vec::new();
    if no_named_unix {
        syscalls.push(masked(
            &["socket"],
            0,
            0xffff_ffff,
            libc::AF_UNIX as u64,
            errno,
            Some(libc::EACCES as u32),
        ));
        // A datagram socket of a pair can still be aimed at any path (`connect`, `sendto`,
        // `sendmsg` with an address) or bound to one: only stream and seqpacket pairs stay
        // unnamed. SOCK_RAW is a datagram socket for AF_UNIX; the mask 0xe takes 2 and 3.
        let mut pair = rule(&["socketpair"], errno, Some(libc::EACCES as u32));
        pair.set_args(Some(vec![
            masked_arg(0, 0xffff_ffff, libc::AF_UNIX as u64),
            masked_arg(1, 0xe, libc::SOCK_DGRAM as u64),
        ]));
        syscalls.push(pair);
    }
    if no_reuseport {
        let mut r = rule(&["setsockopt"], errno, Some(libc::EPERM as u32));
        r.set_args(Some(vec![
            masked_arg(1, 0xffff_ffff, libc::SOL_SOCKET as u64),
            masked_arg(2, 0xffff_ffff, libc::SO_REUSEPORT as u64),
        ]));
        syscalls.push(r);
    }
    if syscalls.is_empty() {
        return None;
    }
    Some(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(architectures())
            .syscalls(syscalls)
            .build()
            .expect("profile fields set"),
    )
}

#[cfg(test)]
mod tests;
