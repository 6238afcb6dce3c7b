use super::*;

#[test]
fn pod_fields_come_from_either_cri_runtime() {
    let a: HashMap<String, String> = [
        ("io.kubernetes.cri.sandbox-namespace", "team"),
        ("io.kubernetes.cri.sandbox-name", "agent-1"),
        ("io.kubernetes.cri.sandbox-uid", "u-1"),
        ("io.kubernetes.cri.container-name", "agent"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let pod = Pod::from_annotations(&a).unwrap();
    assert_eq!(pod.namespace.as_deref(), Some("team"));
    assert_eq!(pod.container_name.as_deref(), Some("agent"));
    let crio: HashMap<String, String> =
        [("io.kubernetes.pod.name".to_string(), "p".to_string())].into();
    assert_eq!(
        Pod::from_annotations(&crio).unwrap().name.as_deref(),
        Some("p")
    );
    assert_eq!(Pod::from_annotations(&HashMap::new()), None);
}

#[test]
fn an_oversized_request_is_cut_to_a_bounded_line() {
    let ctx = Context {
        container: "c".into(),
        ..Context::default()
    };
    let ev = Event::new(
        Kind::Exec,
        Decision::Denied,
        "exec_policy",
        "r".repeat(5000),
    )
    .request(serde_json::json!({"command": ["x".repeat(100_000)]}));
    let line = Record::of(&ctx, &ev).to_line();
    assert!(line.len() < MAX_LINE, "{}", line.len());
    let back: Record = serde_json::from_str(&line).unwrap();
    assert!(back.request["bytes"].as_u64().unwrap() > 100_000);
}

/// docs/audit.schema.json is this type's schema; `UPDATE_SCHEMA=1` rewrites it.
#[test]
fn the_documented_schema_is_the_records() {
    let schema = schemars::schema_for!(Record);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            text,
            "docs/audit.schema.json is stale: run UPDATE_SCHEMA=1 cargo test --lib the_documented_schema"
        );
}

#[test]
fn kinds_parse_by_name() {
    for k in Kind::ALL {
        assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
    assert!("disk".parse::<Kind>().is_err());
}
