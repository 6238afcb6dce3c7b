// Build-time work:
// - the git commit for `nemosandbox --version` (runc prints a `commit:` line);
// - the shipped policies converted from YAML to JSON, so `create` deserializes them without
//   running the YAML parser (the YAML text is embedded too, for lint positions).
#[allow(dead_code)]
#[path = "src/policy/yaml.rs"]
mod yaml;

use std::path::Path;

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    println!("cargo:rustc-env=NEMOSANDBOX_COMMIT={}", commit());
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=policies");
    println!("cargo:rerun-if-changed=src/policy/yaml.rs");

    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut names: Vec<String> = std::fs::read_dir("policies")
        .expect("policies/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let text = std::fs::read_to_string(format!("policies/{name}.yaml")).unwrap();
        let parsed = yaml::parse(&text).unwrap_or_else(|e| {
            panic!(
                "policies/{name}.yaml:{}:{}: {}",
                e.pos.line, e.pos.col, e.msg
            )
        });
        std::fs::write(
            Path::new(&out).join(format!("{name}.json")),
            parsed.value.to_string(),
        )
        .unwrap();
    }
}
