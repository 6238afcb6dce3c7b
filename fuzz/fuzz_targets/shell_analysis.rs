//! The exec gate's shell analysis must never panic, whatever script it is given
//! (`cargo fuzz run shell_analysis`). The property that accepted scripts run only allowlisted
//! programs under a real shell is checked by `integration/execgate.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nemosandbox::execgate::eval::{evaluate, Context, PrefixFs};

fuzz_target!(|data: &[u8]| {
    let script = String::from_utf8_lossy(data).into_owned();
    let _ = nemosandbox::execgate::shell::parse(&script);
    let allowlist = vec!["/usr/bin/git".to_string()];
    let ctx = Context {
        allowlist: &allowlist,
        safe_builtins: true,
        path_var: None,
        cwd: "/tmp".into(),
        home: "/root".into(),
    };
    let argv = vec!["sh".to_string(), "-c".to_string(), script];
    let _ = evaluate(&argv, &ctx, &PrefixFs { prefix: "/".into() });
});
