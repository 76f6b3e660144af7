//! `features`: the runtime-spec features.md document, what containerd asks a runtime for.

use serde_json::json;

use crate::container::ContainerError;

/// Prints what this runtime supports.
pub fn features() -> Result<i32, ContainerError> {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    // Filters are loaded with seccomp(2) directly, so what works is what this kernel
    // accepts, probed without loading anything.
    let supported_flags = crate::seccomp::supported_flags();
    // `intelRdt.enabled` is support built in (runtime-spec features.md, and runc reports
    // it unconditionally); whether this host can use it is the resctrl mount.
    let resctrl = crate::intelrdt::host_root()
        .map_or_else(|| "not mounted".to_owned(), |p| p.display().to_string());
    let doc = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.0.2-dev",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "idmap", "nosuid", "private", "rbind", "relatime", "remount", "ridmap", "ro", "rprivate",
            "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid",
            "sync", "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                               "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": supported_flags,
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
            },
            "mountExtensions": {"idmap": {"enabled": true}},
            "intelRdt": {"enabled": true, "schemata": true, "monitoring": true},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "io.github.berth.lowrt.version": env!("CARGO_PKG_VERSION"),
            "io.github.berth.lowrt.resctrl": resctrl
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    Ok(0)
}
