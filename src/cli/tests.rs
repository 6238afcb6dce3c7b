use super::*;

#[test]
fn the_command_line_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
    let cli =
        Cli::try_parse_from(["nemosandbox", "policy", "update", "c1", "--preset", "npm"]).unwrap();
    assert!(
        cli.preset.is_empty(),
        "the update's preset is not a global one"
    );
    assert!(matches!(
        cli.cmd,
        Some(Cmd::Policy(PolicyCmd::Update { add_preset: Some(ref p), remove: None, .. })) if p == "npm"
    ));
    assert!(Cli::try_parse_from([
        "nemosandbox",
        "policy",
        "update",
        "c1",
        "--preset",
        "a",
        "--remove",
        "b"
    ])
    .is_err());
}

#[test]
fn every_argument_has_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    // Built, so that the verbs' deferred arguments are there to walk.
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    walk(&cmd, "nemosandbox", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:#?}");
}

#[test]
fn intervals_parse_like_go_durations() {
    assert_eq!(parse_interval("5s").unwrap().as_secs(), 5);
    assert_eq!(parse_interval("500ms").unwrap().as_millis(), 500);
    assert_eq!(parse_interval("2").unwrap().as_secs(), 2);
    assert_eq!(parse_interval("1m30s").unwrap().as_secs(), 90);
    assert_eq!(parse_interval("1h").unwrap().as_secs(), 3600);
    assert!(parse_interval("5x").is_err());
    assert!(parse_interval("").is_err());
    assert!(parse_interval("0s").is_err());
}

#[test]
fn runc_spellings_parse() {
    for argv in [
        &[
            "nemosandbox",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ][..],
        &["nemosandbox", "kill", "c1"],
        &["nemosandbox", "kill", "--all", "c1", "KILL"],
        &["nemosandbox", "events", "--interval=5s", "c1"],
        &[
            "nemosandbox",
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/pid",
            "c1",
        ],
        &["nemosandbox", "exec", "-t", "c1", "sh", "-c", "echo hi"],
        &["nemosandbox", "ps", "--format", "json", "c1"],
        &["nemosandbox", "update", "--resources", "-", "c1"],
        &[
            "nemosandbox",
            "--rootless",
            "false",
            "run",
            "-d",
            "--bundle",
            "/b",
            "c1",
        ],
        &["nemosandbox", "sandbox", "--", "ls", "-la"],
        &["nemosandbox", "--preset", "npm", "sandbox", "--", "true"],
        &["nemosandbox", "policy", "lint", "a.yaml", "b.yaml"],
        &[
            "nemosandbox",
            "--preset",
            "npm",
            "--preset",
            "pypi",
            "policy",
            "show",
            "--format",
            "json",
        ],
        &["nemosandbox", "policy", "explain", "--bundle", "/b"],
        &["nemosandbox", "checkpoint", "--image-path", "/x", "c1"],
    ] {
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    }
}
