//! Seccomp for containers, as dockerd does it: the default profile (kept as data in
//! `seccomp_default.json`, moby's profile format), `--security-opt seccomp=unconfined`
//! or a custom profile (the docker CLI sends the file's content), none for privileged
//! containers. A profile becomes the OCI `linux.seccomp` for this machine: architectures
//! from `archMap`, and only the rules whose arch, capability and kernel conditions hold.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::types::HostConfig;

const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("decoding seccomp profile failed: {message}")]
    Profile { message: String },
    #[error("invalid --security-opt: {opt}")]
    Opt { opt: String },
    #[error("security option {opt:?} is not implemented yet")]
    Unsupported { opt: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What decides which rules apply: the machine and the container's capabilities.
pub struct Target<'a> {
    /// Go's name of the architecture (`amd64`).
    pub arch: &'a str,
    /// libseccomp's name of the native architecture (`SCMP_ARCH_X86_64`).
    pub scmp_arch: &'a str,
    pub kernel: (u32, u32),
    pub caps: &'a [String],
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn host_target_names() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        other => (other, ""),
    }
}

impl Filter {
    fn holds(&self, t: &Target<'_>) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == t.arch))
            && self.caps.iter().all(|c| t.caps.contains(c))
            && self
                .min_kernel
                .as_deref()
                .and_then(parse_kernel)
                .is_none_or(|min| t.kernel >= min)
    }

    fn excludes(&self, t: &Target<'_>) -> bool {
        self.arches.iter().any(|a| a == t.arch) || self.caps.iter().any(|c| t.caps.contains(c))
    }
}

/// Turns a profile (moby's format) into the OCI `linux.seccomp` object for `t`.
pub fn to_oci(profile_json: &str, t: &Target<'_>) -> Result<Value, SeccompError> {
    let p: Profile = serde_json::from_str(profile_json).map_err(|e| SeccompError::Profile {
        message: e.to_string(),
    })?;
    let mut arches = p.architectures.clone();
    if let Some(m) = p.arch_map.iter().find(|m| m.architecture == t.scmp_arch) {
        arches = vec![m.architecture.clone()];
        arches.extend(m.sub_architectures.clone().unwrap_or_default());
    }
    let mut syscalls = Vec::new();
    for rule in &p.syscalls {
        if !rule.includes.holds(t) || rule.excludes.excludes(t) {
            continue;
        }
        let mut names = rule.names.clone();
        names.extend(rule.name.clone());
        if names.is_empty() {
            continue;
        }
        let mut r = json!({"names": names, "action": rule.action});
        if let Some(e) = rule.errno_ret {
            r["errnoRet"] = json!(e);
        }
        if let Some(args) = &rule.args {
            r["args"] = json!(args);
        }
        syscalls.push(r);
    }
    let mut out = json!({
        "defaultAction": p.default_action,
        "architectures": arches,
        "syscalls": syscalls,
    });
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    if !p.flags.is_empty() {
        out["flags"] = json!(p.flags);
    }
    Ok(out)
}

/// What `--security-opt` asks for about seccomp, and `no-new-privileges`.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Default,
    Unconfined,
    Custom(String),
}

fn parse_opts(opts: &[String]) -> Result<(Choice, bool), SeccompError> {
    let mut choice = Choice::Default;
    let mut nnp = false;
    for opt in opts {
        // `key=value`, or the deprecated `key:value`.
        let (k, v) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .unwrap_or((opt.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true") => nnp = true,
            ("no-new-privileges", "false") => nnp = false,
            ("seccomp", "unconfined") => choice = Choice::Unconfined,
            ("seccomp", "builtin") => choice = Choice::Default,
            ("seccomp", "") => return Err(SeccompError::Opt { opt: opt.clone() }),
            ("seccomp", profile) => choice = Choice::Custom(profile.into()),
            ("apparmor" | "label", _) => {
                return Err(SeccompError::Unsupported { opt: opt.clone() })
            }
            _ => return Err(SeccompError::Opt { opt: opt.clone() }),
        }
    }
    Ok((choice, nnp))
}

/// Adds `linux.seccomp` (and `noNewPrivileges`) to a generated spec.
pub fn apply(spec: &mut Value, host: &HostConfig) -> Result<(), SeccompError> {
    let opts: Vec<String> = match host.extra.get("SecurityOpt") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let (choice, nnp) = parse_opts(&opts)?;
    if nnp {
        spec["process"]["noNewPrivileges"] = json!(true);
    }
    let profile = match choice {
        _ if host.privileged => return Ok(()),
        Choice::Unconfined => return Ok(()),
        Choice::Default => DEFAULT_PROFILE.to_string(),
        Choice::Custom(p) => p,
    };
    let caps: Vec<String> = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|s| parse_kernel(&s))
        .unwrap_or((0, 0));
    let (arch, scmp_arch) = host_target_names();
    let target = Target {
        arch,
        scmp_arch,
        kernel,
        caps: &caps,
    };
    spec["linux"]["seccomp"] = to_oci(&profile, &target)?;
    Ok(())
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
