//! Test networks: a network namespace per test with TEST-NET-3 local, and a small
//! authoritative DNS server inside it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// A network namespace for one test, removed on drop. `203.0.113.0/24` (TEST-NET-3, never
/// routed) is local on its loopback, so the tests can give names public-looking addresses.
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        let name = unique("nstest");
        let ip = |args: &[&str]| {
            let st = Command::new("ip")
                .args(args)
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = TestNetns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "route",
            "add",
            "local",
            "203.0.113.0/24",
            "dev",
            "lo",
        ]);
        ns
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    /// Put the bundle's container in this namespace.
    pub fn join(&self, b: &Bundle) {
        let path = self.path();
        b.edit(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "network");
            ns.push(serde_json::json!({"type": "network", "path": path}));
        });
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The names the resolver tests serve: one an endpoint names, two under an endpoint's glob
/// (one and two labels deep), one no endpoint names, one that answers a private address.
pub fn nemo_test_names() -> [(&'static str, Ipv4Addr); 5] {
    let t = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    [
        ("ok.nemo.test", t(10)),
        ("a.glob.nemo.test", t(11)),
        ("a.b.glob.nemo.test", t(11)),
        ("other.nemo.test", t(12)),
        ("priv.nemo.test", Ipv4Addr::new(127, 0, 0, 5)),
    ]
}

/// An authoritative DNS server for a fixed set of A records, on UDP port 53 of `addr` inside
/// a network namespace; it records every name it was asked.
pub struct TestDns {
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    pub fn start(netns: &str, addr: Ipv4Addr, records: &[(&str, Ipv4Addr)]) -> TestDns {
        Self::start_with_extra(netns, addr, records, &[])
    }

    /// Like `start`; answers for a name in `extra` also carry an A record owned by another
    /// name (what a lying or compromised upstream would add).
    pub fn start_with_extra(
        netns: &str,
        addr: Ipv4Addr,
        records: &[(&str, Ipv4Addr)],
        extra: &[(&str, &str, Ipv4Addr)],
    ) -> TestDns {
        let ns = std::fs::File::open(netns).unwrap();
        let records: HashMap<String, Ipv4Addr> =
            records.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let extra: Vec<(String, String, Ipv4Addr)> = extra
            .iter()
            .map(|(n, o, a)| (n.to_string(), o.to_string(), *a))
            .collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (asked.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // setns affects this thread only: the socket is created in the test namespace.
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = UdpSocket::bind((addr, 53)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_reply(&buf[..n], &records, &extra, &a) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("test DNS server started");
        TestDns { asked, stop }
    }
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn dns_reply(
    query: &[u8],
    records: &HashMap<String, Ipv4Addr>,
    extra: &[(String, String, Ipv4Addr)],
    asked: &Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    use simple_dns::{rdata::RData, Name, Packet, ResourceRecord, CLASS, QTYPE, TYPE};
    let q = Packet::parse(query).ok()?;
    let question = q.questions.first()?.clone();
    let name = question.qname.to_string();
    asked.lock().unwrap().push(name.clone());
    let mut reply = Packet::new_reply(q.id());
    reply.questions.push(question.clone());
    match records.get(&name) {
        Some(ip) if question.qtype == QTYPE::TYPE(TYPE::A) => {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                60,
                RData::A((*ip).into()),
            ));
            for (_, owner, ip) in extra.iter().filter(|(n, _, _)| *n == name) {
                reply.answers.push(ResourceRecord::new(
                    Name::new_unchecked(owner),
                    CLASS::IN,
                    60,
                    RData::A((*ip).into()),
                ));
            }
        }
        Some(_) => {}
        None => *reply.rcode_mut() = simple_dns::RCODE::NameError,
    }
    reply.build_bytes_vec().ok()
}
