//! Where start-up time goes: `NEMOSANDBOX_TIMING=FILE` makes the runtime append one JSON line
//! per stage to FILE, `{"pid":…,"stage":"…","us":…}`, from every process that takes part (the
//! runtime, the container's init before it executes the workload, the helper). `bench/
//! breakdown.sh` turns them into medians per stage.
//!
//! Off (no variable), a span costs one load of an initialised cell. The file is opened once,
//! before any fork, with `O_APPEND`: each line is one `write`, whole, whichever process wrote
//! it; the container's init inherits the descriptor and writes its lines before `execve`
//! closes it.

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

/// The variable naming the file; unset or empty: no timing.
pub const VARIABLE: &str = "NEMOSANDBOX_TIMING";

static SINK: OnceLock<Option<File>> = OnceLock::new();

fn sink() -> Option<&'static File> {
    SINK.get_or_init(|| {
        let path = std::env::var_os(VARIABLE).filter(|p| !p.is_empty())?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    })
    .as_ref()
}

/// Open the file now, in the process every later one is forked from.
pub fn init() {
    let _ = sink();
}

/// The file's descriptor, for a process that closes the others (the helper).
pub fn fd() -> Option<i32> {
    use std::os::fd::AsRawFd;
    sink().map(|f| f.as_raw_fd())
}

/// One stage, timed from now until it is dropped.
pub struct Span {
    stage: &'static str,
    start: Option<(Instant, u64)>,
}

/// Microseconds on the monotonic clock, which every process reads alike: where a stage starts
/// on the machine's timeline (`bench/breakdown.sh --timeline`).
fn monotonic_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// Time `stage` until the returned span is dropped.
pub fn span(stage: &'static str) -> Span {
    Span {
        stage,
        start: sink().map(|_| (Instant::now(), monotonic_us())),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some((start, at)), Some(mut file)) = (self.start, sink()) else {
            return;
        };
        let line = format!(
            "{{\"pid\":{},\"stage\":\"{}\",\"us\":{},\"at\":{at}}}\n",
            std::process::id(),
            self.stage,
            start.elapsed().as_micros()
        );
        let _ = file.write_all(line.as_bytes());
    }
}
