//! The `nemosandbox` command: parses runc's command line and calls the library.

mod cli;

fn main() {
    // A hook relay runs in the middle of libcontainer's create: before any of the CLI.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a| a == nemosandbox::hooks::RELAY_ARG0)
    {
        nemosandbox::hooks::relay(&argv);
    }
    nemosandbox::sealed::note_marker();
    nemosandbox::timing::init();
    let timed = nemosandbox::timing::span("main");
    let code = cli::main();
    drop(timed);
    std::process::exit(code);
}
