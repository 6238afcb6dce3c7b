use super::*;

#[test]
fn rest_rules_are_kept_per_request_through_the_transparent_proxy() {
    let lab = lab();
    let rt = &lab.rt;
    let b = lab.bundle(
        "python3 /app/client.py all; cp /usr/bin/python3.11 /tmp/py; /tmp/py /app/client.py one; \
         curl -s -o /dev/null -w 'curl-get: %{http_code}\\n' https://api.test/repos/x; \
         curl -s -o /dev/null -w 'curl-post: %{http_code}\\n' -d x https://api.test/repos/x; \
         curl --http2 -s -o /dev/null -w 'curl-h2: %{http_code} %{http_version}\\n' https://api.test/repos/x; \
         node /app/client.js; \
         echo static-get: $(HTTPS_PROXY=http://0.0.0.0:1 https_proxy=http://0.0.0.0:1 /app/tls-client api.test 443 GET /repos/x); \
         echo static-system-bundle: $(SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt /app/tls-client api.test 443 GET /repos/x); \
         echo static-post: $(/app/tls-client api.test 443 POST /repos/x); \
         echo static-admin: $(/app/tls-client api.test 443 GET /admin); \
         echo static-bad: $(/app/tls-client bad.test 443 GET /repos/x)",
    );
    let id = unique("l7");
    let out = lab.run(&b, &id);
    let audit = std::fs::read_to_string(rt.audit_file(&id)).unwrap_or_default();
    let key = rt.own_dir(&id).ca_key();
    let key_mode = std::fs::metadata(&key).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    // The secret is in the credentials file only: not in the rewritten spec, the audit trail
    // or anything else the runtime keeps.
    let leaks = Command::new("grep")
        .args(["-rl", "real-secret-123"])
        .arg(rt.root.path())
        .output()
        .unwrap();
    let leaks = String::from_utf8_lossy(&leaks.stdout).into_owned();
    rt.remove(&id);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}\n{audit}", String::from_utf8_lossy(&out.stderr));
    expect(
        &stdout,
        &[
            ("get", "200"),
            ("post", "403"),
            ("admin", "403"),
            ("dotdot", "403"),
            ("keepalive", "200-403-200"),
            ("host-mismatch", "403"),
            ("plain", "200"),
            ("plain-post", "403"),
            ("bad-upstream", "URLError"),
            ("wrong-binary", "URLError"),
            ("curl-get", "200"),
            ("curl-post", "403"),
            // HTTP/2 is not offered: curl falls back to HTTP/1.1 through the proxy.
            ("curl-h2", "200 1.1"),
            ("node-get", "200"),
            ("node-post", "403"),
            ("ws", "101-ping"),
            ("ws-path", "403"),
            ("ws-on-rest", "403"),
            ("proxy-direct", "errno13"),
            ("udp-443", "errno13"),
            ("token-env", "True"),
            ("token-environ", "False"),
            ("token-api", "200-masked"),
            ("token-other", "200-masked"),
            ("h2c-upgrade", "403"),
            ("smuggle-lf", "400"),
            ("absolute-form", "400"),
            ("two-hosts", "400"),
            ("path-param", "403"),
            // A static client that ignores proxy variables is spliced all the same; it
            // trusts the container CA through the variable or the image's system bundle.
            ("static-get", "200"),
            ("static-system-bundle", "200"),
            ("static-post", "403"),
            ("static-admin", "403"),
            ("static-bad", "tls-error"),
        ],
    );
    assert_eq!(
        leaks
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["credentials.json"],
        "{leaks}"
    );
    let seen = lab.seen.lock().unwrap().clone();
    eprintln!("upstreams saw: {seen:?}");
    assert!(
        seen.iter().all(|r| r.contains(" GET /repos/")
            || r.starts_with("other.test GET /t")
            || r.starts_with("ws.test GET /ws/chat")),
        "a refused request reached an upstream: {seen:?}"
    );
    assert!(seen.contains(&"api.test GET /repos/t auth=Bearer real-secret-123".to_string()));
    let other = seen.iter().find(|r| r.starts_with("other.test")).unwrap();
    assert!(
        other.contains("auth=Bearer nemosandbox-credential-"),
        "another policy's endpoint got {other}"
    );
    assert!(!seen.iter().any(|r| r.starts_with("bad.test")));
    assert!(audit.contains("\"kind\":\"http\""), "{audit}");
    assert!(
        audit.contains("POST /repos/x: no rule allows it"),
        "{audit}"
    );
    assert!(audit.contains("upstream bad.test"), "{audit}");
    assert!(
        audit.contains("the executable is not one of api"),
        "{audit}"
    );
    assert_eq!(key_mode.ok(), Some(0o600), "the CA key is root's alone");
}

#[test]
fn a_hostile_client_is_bounded_and_leaves_other_containers_alone() {
    let lab = lab();
    let a = lab.bundle("python3 /app/client.py hostile 3");
    let b = lab.bundle("sleep 1; python3 /app/client.py neighbour 6");
    let (ida, idb) = (unique("l7-hostile"), unique("l7-neighbour"));
    let (out_a, out_b) = std::thread::scope(|s| {
        let a = s.spawn(|| lab.run(&a, &ida));
        let b = s.spawn(|| lab.run(&b, &idb));
        (a.join().unwrap(), b.join().unwrap())
    });
    let audit = std::fs::read_to_string(lab.rt.audit_file(&ida)).unwrap_or_default();
    lab.rt.remove(&ida);
    lab.rt.remove(&idb);
    let stdout = String::from_utf8_lossy(&out_a.stdout).into_owned()
        + &String::from_utf8_lossy(&out_b.stdout);
    eprintln!(
        "{stdout}{}{}",
        String::from_utf8_lossy(&out_a.stderr),
        String::from_utf8_lossy(&out_b.stderr)
    );
    expect(
        &stdout,
        &[
            // 300 idle connections: the proxy serves its bound and closes the rest, this
            // container's next request waits its turn, and all is well once they go.
            ("flood", "bounded-refused-200"),
            ("during-slowloris", "200"),
            ("slowloris", "408-in-time"),
            ("slow-record", "408-in-time"),
            ("slow-handshake", "closed-in-time"),
            ("huge-head", "431"),
            ("many-headers", "400"),
            ("garbage", "400"),
            ("after", "200"),
            ("neighbour", "all-200"),
        ],
    );
    assert!(audit.contains("head not complete within"), "{audit}");
}
