use super::*;

#[test]
fn program_compares_the_callers_cgroup_and_pid_with_the_guards() {
    let cg_only = program(GuardTask {
        cgroup: 0x1_0000_0002,
        process: None,
    });
    assert_eq!(cg_only.len(), 8);
    assert_eq!(
        (cg_only[1].imm, cg_only[2].imm),
        (2, 1),
        "64-bit immediate, low then high"
    );
    assert_eq!(
        (cg_only[3].code, cg_only[3].off),
        (0x5d, 2),
        "not equal: to the refusal"
    );
    assert_eq!(
        (cg_only[4].imm, cg_only[6].imm),
        (1, 0),
        "allow, then refuse"
    );
    assert_eq!(encode(&cg_only)[8 * 3 + 1], 0x20, "src r2, dst r0");
    let full = program(GuardTask {
        cgroup: 7,
        process: Some((4, 4026531836, 1234)),
    });
    let deny = full.len() - 2;
    for (at, insn) in full.iter().enumerate() {
        if matches!(insn.code, 0x5d | 0x55) {
            assert_eq!(at + 1 + insn.off as usize, deny, "jump at {at}");
        }
    }
    assert!(full.iter().any(|i| i.code == 0x55 && i.imm == 1234));
    assert_eq!(full[deny].imm, 0);
}

#[test]
fn mountinfo_fields_and_escapes() {
    assert_eq!(unescape("/a\\040b"), "/a b");
    assert_eq!(unescape("/plain"), "/plain");
}
