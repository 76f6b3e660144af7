//! cgroup v2 device rules: v2 has no devices controller, so `linux.resources.devices` becomes
//! a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup, as runc and crun
//! do. The kernel runs it on every open/mknod of a device node with
//! `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` (type in the low 16
//! bits of access_type, access in the high 16) and allows the access when it returns 1.
//!
//! Semantics (crun's, and what runc's emulator yields for docker's rule lists): rules are
//! evaluated in order and the last matching rule wins, so the program tests them in reverse
//! and returns the first match; nothing matching means deny. A rule of type `a` with wildcard
//! numbers and `rwm` matches everything, so the rules before the last such rule can never
//! decide and are left out.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;

/// One eBPF instruction, `struct bpf_insn` (8 bytes, little-endian bitfield for the regs).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// BPF_DEVCG_DEV_* and BPF_DEVCG_ACC_* of linux/bpf.h.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A rule reduced to what the program tests; `None` is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    kind: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: i32,
    allow: bool,
}

impl Rule {
    fn matches_all(&self) -> bool {
        self.kind.is_none()
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }
}

fn parse(rule: &LinuxDeviceCgroup) -> Result<Rule, CgroupError> {
    let bad = |reason: String| CgroupError::DeviceRule {
        rule: super::v1::device_rule(rule),
        reason,
    };
    let kind = match rule.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        Some(LinuxDeviceType::P) => {
            return Err(bad("type p (fifo) cannot be a device cgroup rule".into()))
        }
    };
    let num = |n: Option<i64>, what: &str| match n {
        None => Ok(None),
        Some(v) if v < 0 => Ok(None),
        Some(v) => i32::try_from(v)
            .map(Some)
            .map_err(|_| bad(format!("{what} {v} is out of range"))),
    };
    let access = match rule.access().as_deref() {
        None | Some("") => ACC_ALL,
        Some(text) => {
            let mut bits = 0;
            for c in text.chars() {
                bits |= match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    other => return Err(bad(format!("unknown access {other:?} (want r, w, m)"))),
                };
            }
            bits
        }
    };
    Ok(Rule {
        kind,
        major: num(rule.major(), "major")?,
        minor: num(rule.minor(), "minor")?,
        access,
        allow: rule.allow(),
    })
}

/// The rule list as the container gets it: the spec's rules, then the devices runc always
/// allows (the same list the v1 manager writes).
pub fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<LinuxDeviceCgroup>, CgroupError> {
    let mut all = spec.to_vec();
    for line in super::v1::RUNC_ALLOWED_DEVICES {
        all.push(parse_line(line)?);
    }
    Ok(all)
}

/// "c 1:3 rwm" (the v1 file syntax) as an allow rule.
fn parse_line(line: &str) -> Result<LinuxDeviceCgroup, CgroupError> {
    let bad = || CgroupError::DeviceRule {
        rule: line.into(),
        reason: "not of the form \"TYPE MAJOR:MINOR ACCESS\"".into(),
    };
    let mut parts = line.split(' ');
    let (Some(kind), Some(nums), Some(access)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (major, minor) = nums.split_once(':').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Option<i64>, CgroupError> {
        if s == "*" {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| bad())
        }
    };
    let json = serde_json::json!({
        "allow": true, "type": kind, "major": num(major)?, "minor": num(minor)?, "access": access,
    });
    serde_json::from_value(json).map_err(|_| bad())
}

/// The program for `rules` (already including any always-allowed devices).
pub fn device_filter(rules: &[LinuxDeviceCgroup]) -> Result<Vec<BpfInsn>, CgroupError> {
    let parsed: Vec<Rule> = rules.iter().map(parse).collect::<Result<_, _>>()?;
    // R2 = type, R3 = access, R4 = major, R5 = minor (R1 is the ctx, then scratch).
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in parsed.iter().rev() {
        if rule.matches_all() {
            prog.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
            prog.push(insn(EXIT, 0, 0, 0, 0));
            return Ok(prog);
        }
        prog.extend(rule_block(rule));
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    Ok(prog)
}

/// Tests that jump past the block on a mismatch, then return the rule's verdict.
fn rule_block(rule: &Rule) -> Vec<BpfInsn> {
    // Jump offsets are filled in once the block's length is known (relative to the next insn).
    let mut block: Vec<BpfInsn> = Vec::new();
    if let Some(kind) = rule.kind {
        block.push(insn(JNE_K, R2, 0, 0, kind));
    }
    if rule.access != ACC_ALL {
        // The request's access bits must all be in the rule's: (R3 & access) == R3.
        block.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
        block.push(insn(ALU32_AND_K, R1, 0, 0, rule.access));
        block.push(insn(JNE_X, R1, R3, 0, 0));
    }
    if let Some(major) = rule.major {
        block.push(insn(JNE_K, R4, 0, 0, major));
    }
    if let Some(minor) = rule.minor {
        block.push(insn(JNE_K, R5, 0, 0, minor));
    }
    block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
    block.push(insn(EXIT, 0, 0, 0, 0));
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.code == JNE_K || ins.code == JNE_X {
            ins.off = (len - i - 1) as i16;
        }
    }
    block
}

/// Runs `prog` on one request the way the kernel would (only the instructions we emit), so
/// the unit tests can check verdicts without root.
#[cfg(test)]
fn interpret(prog: &[BpfInsn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
    let ctx = [((access as u32) << 16) | kind as u32, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        pc += 1;
        match i.code {
            LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
            ALU32_AND_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
            ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
            ALU32_MOV_X => r[dst] = u64::from(r[src] as u32),
            ALU64_MOV_K => r[dst] = i64::from(i.imm) as u64,
            JNE_K if r[dst] != i64::from(i.imm) as u64 => pc += i.off as usize,
            JNE_X if r[dst] != r[src] => pc += i.off as usize,
            JNE_K | JNE_X => {}
            EXIT => return r[0],
            other => panic!("opcode {other:#x} not emitted by device_filter"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    const R: i32 = ACC_READ;
    const W: i32 = ACC_WRITE;
    const M: i32 = ACC_MKNOD;

    #[test]
    fn docker_like_rules_allow_defaults_and_deny_the_rest() {
        let spec = rules(r#"[{"allow":false,"access":"rwm"}]"#);
        let prog = device_filter(&effective_rules(&spec).unwrap()).unwrap();
        assert_eq!(interpret(&prog, DEV_CHAR, R, 1, 3), 1, "/dev/null");
        assert_eq!(interpret(&prog, DEV_CHAR, W, 136, 7), 1, "/dev/pts/7");
        assert_eq!(
            interpret(&prog, DEV_BLOCK, M, 8, 0),
            1,
            "mknod of any block device"
        );
        assert_eq!(interpret(&prog, DEV_BLOCK, R, 8, 0), 0, "/dev/sda");
        assert_eq!(interpret(&prog, DEV_CHAR, R, 10, 229), 0, "/dev/fuse");
    }

    #[test]
    fn last_matching_rule_wins() {
        let spec = rules(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"access":"rwm"},
                {"allow":false,"type":"c","major":1,"minor":5,"access":"w"}]"#,
        );
        let prog = device_filter(&spec).unwrap();
        assert_eq!(interpret(&prog, DEV_CHAR, R, 1, 5), 1);
        assert_eq!(interpret(&prog, DEV_CHAR, W, 1, 5), 0);
        assert_eq!(interpret(&prog, DEV_CHAR, W, 1, 3), 1);
        assert_eq!(interpret(&prog, DEV_BLOCK, R, 1, 3), 0, "type is checked");
        assert_eq!(interpret(&prog, DEV_CHAR, R, 2, 0), 0, "default deny");
    }

    #[test]
    fn an_allow_all_rule_hides_what_came_before() {
        let spec = rules(
            r#"[{"allow":false,"type":"c","major":1,"minor":3},
                {"allow":true,"type":"a"},
                {"allow":false,"type":"b","major":8,"minor":0,"access":"r"}]"#,
        );
        let prog = device_filter(&spec).unwrap();
        assert_eq!(interpret(&prog, DEV_CHAR, R, 1, 3), 1);
        assert_eq!(interpret(&prog, DEV_BLOCK, R, 8, 0), 0);
        assert_eq!(interpret(&prog, DEV_BLOCK, W, 8, 0), 1);
        // 6 loads; type, access (3), major, minor tests + verdict; the allow-all verdict.
        assert_eq!(prog.len(), 6 + 8 + 2);
        assert_eq!(prog.last().unwrap().code, EXIT);
    }

    #[test]
    fn encoding_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
        let prog = device_filter(&rules(
            r#"[{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]"#,
        ))
        .unwrap();
        // ldxw r3, [r1+0]: dst 3 in the low nibble, src 1 in the high one.
        assert_eq!(prog[2], insn(LDX_MEM_W, 3, 1, 0, 0));
        assert_eq!(prog[2].regs, 0x13);
        // jne r2, 2 (char), skipping the rest of the block (3 access insns, 2 numbers, mov, exit).
        assert_eq!(prog[6], insn(JNE_K, R2, 0, 7, DEV_CHAR));
        assert_eq!(prog[9].off, 4);
    }

    #[test]
    fn bad_rules_are_named() {
        let err = device_filter(&rules(r#"[{"allow":true,"type":"c","access":"rwx"}]"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown access 'x'") && err.contains("c *:* rwx"),
            "{err}"
        );
        let err = device_filter(&rules(r#"[{"allow":true,"type":"p"}]"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("type p"), "{err}");
    }
}
