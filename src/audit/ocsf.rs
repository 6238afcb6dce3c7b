//! The same events as OCSF 1.3 classes, for SIEMs that take OCSF: Network Activity (4001),
//! HTTP Activity (4002), DNS Activity (4003), Process Activity (1007) and File System
//! Activity (1001); events of no OCSF class (the audit machinery's own) are Base Events.
//!
//! Fields OCSF has no place for (pod, the deciding rule, the policy hash) go under
//! `unmapped`, and the whole native event rides along as `unmapped.nemosandbox`, so
//! `nemosandbox audit` reads an OCSF sink as well as a native one.

use serde_json::{json, Value};

use super::{Kind, Record};

pub const VERSION: &str = "1.3.0";

/// (class_uid, class_name, category_uid, category_name, activity_id, activity_name)
fn class(rec: &Record) -> (u32, &'static str, u32, &'static str, u32, &'static str) {
    match rec.kind {
        Kind::Network => (4001, "Network Activity", 4, "Network Activity", 1, "Open"),
        Kind::Http => {
            let (id, name) = http_activity(rec.request["method"].as_str().unwrap_or(""));
            (4002, "HTTP Activity", 4, "Network Activity", id, name)
        }
        Kind::Dns => (4003, "DNS Activity", 4, "Network Activity", 1, "Query"),
        Kind::Exec => (1007, "Process Activity", 1, "System Activity", 1, "Launch"),
        Kind::Fs | Kind::Symlink => (
            1001,
            "File System Activity",
            1,
            "System Activity",
            99,
            "Other",
        ),
        Kind::Policy => (0, "Base Event", 0, "Uncategorized", 99, "Other"),
    }
}

fn http_activity(method: &str) -> (u32, &'static str) {
    match method.to_ascii_uppercase().as_str() {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        _ => (99, "Other"),
    }
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// Allowed decisions (an audit-mode pass, a hardened guard) and the rest.
fn allowed(decision: &str) -> bool {
    decision.starts_with("allowed") || decision == "hardened"
}

/// An address `host:port` (IPv6 in brackets) as an OCSF endpoint.
fn endpoint(dest: &str) -> Value {
    match dest.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        Err(_) => json!({"hostname": dest}),
    }
}

/// One record as an OCSF event.
pub fn event(rec: &Record) -> Value {
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) =
        class(rec);
    let ok = allowed(&rec.decision);
    let mut v = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": millis(&rec.time),
        "severity_id": if ok { 1 } else { 3 },
        "severity": if ok { "Informational" } else { "Medium" },
        "status_id": if ok { 1 } else { 2 },
        "status": if ok { "Success" } else { "Failure" },
        "action_id": if ok { 1 } else { 2 },
        "action": if ok { "Allowed" } else { "Denied" },
        "disposition_id": if ok { 1 } else { 2 },
        "disposition": if ok { "Allowed" } else { "Blocked" },
        "message": format!("{}: {}", rec.decision, rec.reason),
        "metadata": {
            "version": VERSION,
            "log_name": "nemosandbox audit",
            "product": {
                "name": "nemosandbox",
                "vendor_name": "nemosandbox",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "container": {"uid": rec.container},
        "unmapped": {
            "by": rec.by,
            "policy_sha256": rec.policy_sha256,
            "nemosandbox": rec,
        },
    });
    if let Some(name) = rec.pod.as_ref().and_then(|p| p.container_name.clone()) {
        v["container"]["name"] = name.into();
    }
    if let Some(pod) = &rec.pod {
        v["unmapped"]["pod"] = json!(pod);
    }
    if let Some(n) = rec.count {
        v["count"] = n.into();
        if let Some(first) = &rec.first_time {
            v["start_time"] = millis(first).into();
            v["end_time"] = millis(&rec.time).into();
        }
    }
    let mut process = json!({});
    if let Some(pid) = rec.pid {
        process["pid"] = pid.into();
    }
    if let Some(exe) = &rec.executable {
        process["file"] = json!({"path": exe, "name": exe.rsplit('/').next().unwrap_or(exe)});
    }
    let req = &rec.request;
    match rec.kind {
        Kind::Network | Kind::Http => {
            if let Some(d) = req["destination"].as_str() {
                v["dst_endpoint"] = endpoint(d);
            }
            if let Some(name) = req["names"].as_array().and_then(|n| n.first()) {
                v["dst_endpoint"]["hostname"] = name.clone();
            }
            if rec.kind == Kind::Http {
                v["http_request"] = json!({
                    "http_method": req["method"],
                    "url": {"hostname": req["host"], "path": req["path"]},
                });
            }
            v["actor"] = json!({"process": process});
        }
        Kind::Dns => {
            v["query"] = json!({"hostname": req["name"]});
            v["rcode_id"] = 5.into();
            v["rcode"] = "Refused".into();
        }
        Kind::Exec => {
            let cmd = req["command"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            v["process"] = json!({"cmd_line": cmd});
            v["actor"] = json!({"process": process});
        }
        Kind::Fs | Kind::Symlink => {
            let path = req["path"].as_str().or(req["dir"].as_str()).unwrap_or("");
            v["file"] = json!({"path": path, "name": path.rsplit('/').next().unwrap_or(path)});
            v["actor"] = json!({"process": process});
        }
        Kind::Policy => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Context, Decision, Event, Pod};

    fn rec(kind: Kind, request: Value) -> Record {
        let ctx = Context {
            container: "c1".into(),
            pod: Some(Pod {
                namespace: Some("ns".into()),
                name: Some("p".into()),
                uid: None,
                container_name: Some("agent".into()),
            }),
            policy_sha256: "ab".into(),
            sink: None,
            kernel_records: false,
        };
        Record::of(
            &ctx,
            &Event::new(kind, Decision::Denied, "network_policies", "no")
                .request(request)
                .pid(7)
                .executable("/usr/bin/curl"),
        )
    }

    #[test]
    fn classes_and_required_fields() {
        let n = event(&rec(
            Kind::Network,
            json!({"destination": "1.2.3.4:443", "names": ["x.test"]}),
        ));
        assert_eq!(n["class_uid"], 4001);
        assert_eq!(n["type_uid"], 400101);
        assert_eq!(n["dst_endpoint"]["ip"], "1.2.3.4");
        assert_eq!(n["dst_endpoint"]["port"], 443);
        assert_eq!(n["dst_endpoint"]["hostname"], "x.test");
        assert_eq!(n["actor"]["process"]["file"]["name"], "curl");
        assert_eq!(n["disposition_id"], 2);
        assert_eq!(n["container"]["name"], "agent");
        assert!(n["time"].as_i64().unwrap() > 1_600_000_000_000);
        let d = event(&rec(Kind::Dns, json!({"name": "x.test"})));
        assert_eq!(d["class_uid"], 4003);
        assert_eq!(d["query"]["hostname"], "x.test");
        assert_eq!(d["rcode_id"], 5);
        let p = event(&rec(Kind::Exec, json!({"command": ["sh", "-c", "id"]})));
        assert_eq!(p["class_uid"], 1007);
        assert_eq!(p["process"]["cmd_line"], "sh -c id");
        for v in [n, d, p] {
            let back: Record =
                serde_json::from_value(v["unmapped"]["nemosandbox"].clone()).unwrap();
            assert_eq!(back.container, "c1");
            assert_eq!(v["metadata"]["version"], VERSION);
        }
    }
}
