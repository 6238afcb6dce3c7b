//! The `nemosandbox` command: parses runc's command line and calls the library.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
