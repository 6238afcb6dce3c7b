use super::*;

/// One connect: in the container through the probe, and through `policy explain`.
struct Case {
    label: &'static str,
    exe: &'static str,
    host: &'static str,
    port: u16,
    /// What the test DNS server answers for `host`.
    address: Option<Ipv4Addr>,
    allowed: bool,
}

#[test]
fn policy_explain_agrees_with_the_guard_case_by_case() {
    let rt = Runtime::new();
    let net = TestNetns::new();
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let _dns = TestDns::start(&net.path(), t(53), &nemo_test_names());
    let pol = policy(
        &rt,
        "version: 1\nfilesystem_policy:\n  permissions:\n    \"/**\": \"r-x\"\n    \"/tmp/**\": \"rwx\"\n\
         network_policies:\n  named:\n    endpoints:\n      - { host: ok.nemo.test, port: 18531 }\n\
         \x20     - { host: \"*.glob.nemo.test\", port: 18531 }\n\
         \x20     - { host: priv.nemo.test, port: 18531 }\n\
         \x20     - { host: 127.0.0.1, ports: [18533] }\n\
         \x20   binaries:\n      - { path: /bin/probe }\n",
    );
    let case = |label, exe, host, port, address, allowed| Case {
        label,
        exe,
        host,
        port,
        address,
        allowed,
    };
    let cases = [
        case("literal", "/bin/probe", "127.0.0.1", 18533, None, true),
        case(
            "literal-port",
            "/bin/probe",
            "127.0.0.1",
            18534,
            None,
            false,
        ),
        case("literal-copy", "/bin/copy", "127.0.0.1", 18533, None, false),
        // An address no allowed name resolved to (before any lookup).
        case("ip-first", "/bin/probe", "203.0.113.10", 18531, None, false),
        case(
            "name",
            "/bin/probe",
            "ok.nemo.test",
            18531,
            Some(t(10)),
            true,
        ),
        case(
            "name-port",
            "/bin/probe",
            "ok.nemo.test",
            18532,
            Some(t(10)),
            false,
        ),
        case(
            "name-copy",
            "/bin/copy",
            "ok.nemo.test",
            18531,
            Some(t(10)),
            false,
        ),
        case(
            "glob",
            "/bin/probe",
            "a.glob.nemo.test",
            18531,
            Some(t(11)),
            true,
        ),
        case(
            "glob-deep",
            "/bin/probe",
            "a.b.glob.nemo.test",
            18531,
            Some(t(11)),
            false,
        ),
        case(
            "other",
            "/bin/probe",
            "other.nemo.test",
            18531,
            Some(t(12)),
            false,
        ),
        case(
            "private",
            "/bin/probe",
            "priv.nemo.test",
            18531,
            Some(Ipv4Addr::new(127, 0, 0, 5)),
            false,
        ),
    ];
    let script: String = cases
        .iter()
        .map(|c| {
            let cmd = match c.address {
                None => format!("{} connect {} {}", c.exe, c.port, c.host),
                Some(_) => format!("{} name {} {}", c.exe, c.host, c.port),
            };
            p(c.label, &cmd)
        })
        .collect::<String>();
    let script = format!("{{ {script} }} > /tmp/out 2>&1; echo done > /tmp/done; sleep 1000");
    let b = bundle(&["sh", "-c", &script]);
    std::fs::copy(probe(), b.path().join("rootfs/bin/copy")).unwrap();
    std::fs::write(
        b.path().join("rootfs/etc/resolv.conf"),
        "nameserver 203.0.113.53\noptions attempts:1 timeout:2\n",
    )
    .unwrap();
    net.join(&b);
    let id = unique("explain");
    let (_, out) = start_and_read(&rt, &pol, &b, &id);
    let got = results(&out);

    for c in &cases {
        let in_container = got
            .get(c.label)
            .unwrap_or_else(|| panic!("{}: no result in {out}", c.label));
        assert_eq!(
            in_container == "ok",
            c.allowed,
            "{}: the guard said {in_container}",
            c.label
        );
        let target = format!("{}:{}", c.host, c.port);
        let mut bundle_args = vec![
            "--policy",
            pol.as_str(),
            "policy",
            "explain",
            "--format",
            "json",
            "--connect",
            &target,
            "--exe",
            c.exe,
        ];
        let address = c.address.map(|a| a.to_string());
        if let Some(a) = &address {
            bundle_args.extend(["--address", a]);
        }
        let mut live_args = bundle_args.clone();
        bundle_args.extend(["--bundle", b.path().to_str().unwrap()]);
        live_args.push(&id);
        for (how, args) in [("bundle", &bundle_args), ("running container", &live_args)] {
            let answer: serde_json::Value = serde_json::from_str(&rt.ok(args)).unwrap();
            assert_eq!(
                answer["allowed"], c.allowed,
                "{} ({how}): explain says {answer}, the guard said {in_container}",
                c.label
            );
            assert!(!answer["reason"].as_str().unwrap().is_empty(), "{answer}");
        }
    }
    // The text form names the rule.
    let text = rt.ok(&[
        "--policy",
        &pol,
        "policy",
        "explain",
        "--connect",
        "ok.nemo.test:18531",
        "--address",
        "203.0.113.10",
        "--exe",
        "/bin/probe",
        &id,
    ]);
    assert!(
        text.starts_with("allowed: /bin/probe connecting to 203.0.113.10:18531 (ok.nemo.test)")
            && text.contains("named.endpoints[0] ok.nemo.test"),
        "{text}"
    );
    rt.remove(&id);
    assert_nothing_left(&rt, &id);
}
