use super::*;

#[test]
fn default_profile_follows_capabilities() {
    let plain = default_profile(&[]);
    let names = |p: &LinuxSeccomp| -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    };
    assert!(names(&plain).contains(&"memfd_create".to_string()));
    assert!(!names(&plain).contains(&"mount".to_string()));
    let admin = default_profile(&["CAP_SYS_ADMIN".into()]);
    assert!(names(&admin).contains(&"mount".to_string()));
    for denied in ALWAYS_DENIED {
        assert!(!names(&admin).contains(&denied.to_string()), "{denied}");
    }
}
