//! Linux security modules: `process.apparmorProfile` and `process.selinuxLabel` become the
//! exec-time label of the container process (proc(5) /proc/self/attr/exec, taken over by
//! the kernel at the next execve), as runc does. A spec that asks for a label the host
//! cannot apply is refused by name: running the container unconfined instead would
//! silently drop a protection the caller asked for.

use std::path::Path;

use oci_spec::runtime::Process;

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("apparmor profile {profile:?} requested but AppArmor is not enabled on this host")]
    NoAppArmor { profile: String },
    #[error("selinux label {label:?} requested but SELinux is not enabled on this host")]
    NoSelinux { label: String },
    #[error("set {what} exec label {label:?}: {source}")]
    Apply {
        what: &'static str,
        label: String,
        source: std::io::Error,
    },
}

/// Where the kernel tells whether each module is active.
pub struct Host<'a> {
    pub apparmor_enabled: &'a str,
    pub selinuxfs: &'a str,
}

pub const HOST: Host<'static> = Host {
    apparmor_enabled: "/sys/module/apparmor/parameters/enabled",
    selinuxfs: "/sys/fs/selinux/enforce",
};

impl Host<'_> {
    fn apparmor(&self) -> bool {
        std::fs::read_to_string(self.apparmor_enabled).is_ok_and(|s| s.starts_with('Y'))
    }

    fn selinux(&self) -> bool {
        Path::new(self.selinuxfs).exists()
    }
}

/// The labels `process` asks for, refused when the host lacks the module.
pub fn check(host: &Host<'_>, process: &Process) -> Result<Labels, LsmError> {
    let apparmor = process.apparmor_profile().clone().filter(|p| !p.is_empty());
    let selinux = process.selinux_label().clone().filter(|l| !l.is_empty());
    if let Some(profile) = &apparmor {
        if !host.apparmor() {
            return Err(LsmError::NoAppArmor {
                profile: profile.clone(),
            });
        }
    }
    if let Some(label) = &selinux {
        if !host.selinux() {
            return Err(LsmError::NoSelinux {
                label: label.clone(),
            });
        }
    }
    Ok(Labels { apparmor, selinux })
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub apparmor: Option<String>,
    pub selinux: Option<String>,
}

impl Labels {
    /// Sets the labels for our next execve. Called before capabilities are dropped:
    /// changing the exec label is a privileged write for a confined process.
    pub fn apply(&self) -> Result<(), LsmError> {
        if let Some(profile) = &self.apparmor {
            // Newer kernels give AppArmor its own attr directory next to the shared one.
            let own = Path::new("/proc/self/attr/apparmor/exec");
            let path = if own.exists() {
                own
            } else {
                Path::new("/proc/self/attr/exec")
            };
            write_attr(path, &format!("exec {profile}"), "apparmor", profile)?;
        }
        if let Some(label) = &self.selinux {
            write_attr(Path::new("/proc/self/attr/exec"), label, "selinux", label)?;
        }
        Ok(())
    }
}

fn write_attr(path: &Path, value: &str, what: &'static str, label: &str) -> Result<(), LsmError> {
    std::fs::write(path, value).map_err(|source| LsmError::Apply {
        what,
        label: label.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: serde_json::Value) -> Process {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn labels_are_refused_by_name_when_the_host_lacks_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let enabled = dir.path().join("enabled");
        let enforce = dir.path().join("enforce");
        let host = Host {
            apparmor_enabled: enabled.to_str().unwrap(),
            selinuxfs: enforce.to_str().unwrap(),
        };
        let p = process(
            serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "docker-default"}),
        );
        let err = check(&host, &p).unwrap_err().to_string();
        assert!(
            err.contains("\"docker-default\"") && err.contains("AppArmor"),
            "{err}"
        );
        std::fs::write(&enabled, "Y\n").unwrap();
        assert_eq!(
            check(&host, &p).unwrap().apparmor.as_deref(),
            Some("docker-default")
        );

        let p = process(
            serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}, "selinuxLabel": "system_u:system_r:container_t:s0"}),
        );
        let err = check(&host, &p).unwrap_err().to_string();
        assert!(err.contains("SELinux"), "{err}");
        // Empty strings mean "no label", as in runc.
        let p = process(
            serde_json::json!({"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "", "selinuxLabel": ""}),
        );
        assert_eq!(check(&host, &p).unwrap(), Labels::default());
    }
}
