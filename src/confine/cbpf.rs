//! A minimal assembler for classic BPF seccomp programs written by hand (where libseccomp's
//! rule model cannot express the check), and, for tests, an interpreter of the same subset.

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

/// A forward jump target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Instructions with symbolic forward jumps, resolved by `finish`.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label, which field: true = jt or ja's k, false = jf).
    fixups: Vec<(usize, Label, bool)>,
    bound: Vec<Option<usize>>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.bound.push(None);
        Label(self.bound.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        assert!(self.bound[l.0].is_none(), "label bound twice");
        self.bound[l.0] = Some(self.insns.len());
    }

    fn push(&mut self, code: u16, k: u32) {
        self.insns.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    /// A = the 32-bit word at `offset` of `struct seccomp_data`.
    pub fn load(&mut self, offset: u32) {
        self.push(LD_W_ABS, offset);
    }

    pub fn and(&mut self, mask: u32) {
        self.push(ALU_AND_K, mask);
    }

    pub fn ret(&mut self, action: u32) {
        self.push(RET_K, action);
    }

    /// if A == k goto `to`.
    pub fn jeq(&mut self, k: u32, to: Label) {
        self.fixups.push((self.insns.len(), to, true));
        self.push(JMP_JEQ_K, k);
    }

    /// if A != k goto `to`.
    pub fn jne(&mut self, k: u32, to: Label) {
        self.fixups.push((self.insns.len(), to, false));
        self.push(JMP_JEQ_K, k);
    }

    pub fn jump(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to, true));
        self.push(JMP_JA, 0);
    }

    /// Resolve every jump. Panics on an unbound label or a jump too far for its field: both
    /// are mistakes in a static program, caught by its unit tests.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, label, taken) in std::mem::take(&mut self.fixups) {
            let target = self.bound[label.0].expect("label bound");
            let off = target
                .checked_sub(at + 1)
                .expect("classic BPF jumps go forward only");
            let insn = &mut self.insns[at];
            if insn.code == JMP_JA {
                insn.k = off as u32;
            } else {
                let off = u8::try_from(off).expect("conditional jump within 255");
                if taken {
                    insn.jt = off;
                } else {
                    insn.jf = off;
                }
            }
        }
        self.insns
    }
}

pub fn to_bytes(prog: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for i in prog {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// Run `prog` on `data` (a `struct seccomp_data`) as the kernel would, for the subset the
/// assembler emits.
#[cfg(test)]
pub fn run(prog: &[Insn], data: &[u8]) -> u32 {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let o = i.k as usize;
                a = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            ALU_AND_K => a &= i.k,
            RET_K => return i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += if a == i.k { i.jt } else { i.jf } as usize,
            c => panic!("opcode {c:#x} not supported"),
        }
    }
}
