//! cgroup v1: one directory per mounted hierarchy, limits written per controller.

use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::{
    mkdir_all, open_cgroup_file, read_file, read_pids, remove_dir, under, write_file, CgroupError,
    CgroupManager, Placement, V1Hierarchy,
};

/// The v1 manager: `<mountpoint>/<path>` in every hierarchy.
#[derive(Debug, Clone)]
pub struct V1Manager {
    hierarchies: Vec<V1Hierarchy>,
    path: PathBuf,
}

impl V1Manager {
    pub fn new(hierarchies: Vec<V1Hierarchy>, path: PathBuf) -> Self {
        Self { hierarchies, path }
    }

    fn dir(&self, h: &V1Hierarchy) -> PathBuf {
        under(&h.mountpoint, &self.path)
    }

    /// The container's directory of the hierarchy holding `controller`, if mounted.
    fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| self.dir(h))
    }

    /// New cpuset directories start with empty cpus/mems, which refuse tasks; copy them
    /// down from the parent at every level we may have created (cpuset(7)).
    fn init_cpuset(&self, h: &V1Hierarchy) -> Result<(), CgroupError> {
        let mut current = h.mountpoint.clone();
        for part in self.path.components().skip(1) {
            let parent = current.clone();
            current.push(part);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = read_file(&current.join(file))?;
                if value.trim().is_empty() {
                    let inherited = read_file(&parent.join(file))?;
                    write_file(&current.join(file), inherited.trim())?;
                }
            }
        }
        Ok(())
    }
}

/// Device rules runc always allows: mknod of any char/block device, the default devices,
/// /dev/console, /dev/pts/*, /dev/ptmx and /dev/net/tun.
pub const RUNC_ALLOWED_DEVICES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// One line for devices.allow / devices.deny, e.g. "c 1:3 rwm".
pub(crate) fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let kind = match rule.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let num = |n: Option<i64>| {
        n.filter(|v| *v >= 0)
            .map_or("*".to_owned(), |v| v.to_string())
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".to_owned());
    format!(
        "{kind} {}:{} {access}",
        num(rule.major()),
        num(rule.minor())
    )
}

impl CgroupManager for V1Manager {
    fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            mkdir_all(&self.dir(h))?;
            if h.has("cpuset") {
                self.init_cpuset(h)?;
            }
        }
        Ok(())
    }

    fn apply(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        if let (Some(mem), Some(dir)) = (res.memory(), self.controller_dir("memory")) {
            let limit_file = dir.join("memory.limit_in_bytes");
            // memsw exists only with swap accounting; runc also refuses silently
            // ignoring a requested swap limit, so an absent file is an error.
            let swap_file = dir.join("memory.memsw.limit_in_bytes");
            // The kernel keeps limit <= memsw at every write: raising both (an update)
            // must write memsw first, lowering must write the limit first (runc's
            // setMemoryAndSwap makes the same choice).
            let swap_first = match (mem.limit(), mem.swap()) {
                (Some(_), Some(swap)) => {
                    let current = read_file(&limit_file)?;
                    swap == -1 || current.trim().parse::<i64>().is_ok_and(|c| c < swap)
                }
                _ => false,
            };
            if swap_first {
                if let Some(swap) = mem.swap() {
                    write_file(&swap_file, &swap.to_string())?;
                }
            }
            if let Some(limit) = mem.limit() {
                write_file(&limit_file, &limit.to_string())?;
            }
            if let (false, Some(swap)) = (swap_first, mem.swap()) {
                write_file(&swap_file, &swap.to_string())?;
            }
            if let Some(reservation) = mem.reservation() {
                write_file(
                    &dir.join("memory.soft_limit_in_bytes"),
                    &reservation.to_string(),
                )?;
            }
            if let Some(swappiness) = mem.swappiness() {
                write_file(&dir.join("memory.swappiness"), &swappiness.to_string())?;
            }
            if mem.disable_oom_killer() == Some(true) {
                write_file(&dir.join("memory.oom_control"), "1")?;
            }
        }
        if let (Some(pids), Some(dir)) = (res.pids(), self.controller_dir("pids")) {
            let value = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_owned()
            };
            write_file(&dir.join("pids.max"), &value)?;
        }
        if let Some(cpu) = res.cpu() {
            if let Some(dir) = self.controller_dir("cpu") {
                if let Some(shares) = cpu.shares() {
                    write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                // The period first: the kernel validates quota against the current period.
                if let Some(period) = cpu.period() {
                    write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
                if let Some(quota) = cpu.quota() {
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                // Period before runtime, as for CFS; both files exist only with
                // CONFIG_RT_GROUP_SCHED, and silently ignoring the request would be a lie.
                let rt = [
                    (
                        "cpu.rt_period_us",
                        cpu.realtime_period().map(|v| v.to_string()),
                    ),
                    (
                        "cpu.rt_runtime_us",
                        cpu.realtime_runtime().map(|v| v.to_string()),
                    ),
                ];
                for (file, value) in rt {
                    let Some(value) = value else { continue };
                    let path = dir.join(file);
                    if !path.exists() {
                        return Err(CgroupError::NoRtGroupSched { file });
                    }
                    write_file(&path, &value)?;
                }
            }
            if let Some(dir) = self.controller_dir("cpuset") {
                if let Some(cpus) = cpu.cpus() {
                    write_file(&dir.join("cpuset.cpus"), cpus)?;
                }
                if let Some(mems) = cpu.mems() {
                    write_file(&dir.join("cpuset.mems"), mems)?;
                }
            }
        }
        if let (Some(blkio), Some(dir)) = (res.block_io(), self.controller_dir("blkio")) {
            // 0 means unset (docker sends it); kernels without CFQ only have the BFQ file.
            if let Some(weight) = blkio.weight().filter(|w| *w != 0) {
                let bfq = dir.join("blkio.bfq.weight");
                let file = if bfq.exists() {
                    bfq
                } else {
                    dir.join("blkio.weight")
                };
                write_file(&file, &weight.to_string())?;
            }
        }
        if let (Some(rules), Some(dir)) = (res.devices(), self.controller_dir("devices")) {
            for rule in rules {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&dir.join(file), &device_rule(rule))?;
            }
            // runc appends these to every container's rules (libcontainer/specconv
            // AllowedDevices); images and docker expect them.
            for rule in RUNC_ALLOWED_DEVICES {
                write_file(&dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: Pid) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            write_file(&self.dir(h).join("cgroup.procs"), &pid.as_raw().to_string())?;
        }
        Ok(())
    }

    fn placement(&self) -> Result<Placement, CgroupError> {
        let v1_tasks = self
            .hierarchies
            .iter()
            .map(|h| open_cgroup_file(self.dir(h).join("tasks"), false))
            .collect::<Result<_, _>>()?;
        Ok(Placement {
            v1_tasks,
            ..Placement::default()
        })
    }

    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let h = self
            .hierarchies
            .iter()
            .find(|h| h.has("pids") || h.has("memory"))
            .or(self.hierarchies.first());
        match h {
            Some(h) => read_pids(&self.dir(h).join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let Some(dir) = self.controller_dir("freezer") else {
            return Err(CgroupError::ControllerMissing {
                controller: "freezer".into(),
                root: PathBuf::from("/sys/fs/cgroup"),
                what: "pause/resume",
            });
        };
        let file = dir.join("freezer.state");
        write_file(&file, if frozen { "FROZEN" } else { "THAWED" })?;
        // FREEZING is transitional; poll until the kernel settles.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read_file(&file)?.trim() == "FREEZING" && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn frozen(&self) -> Result<bool, CgroupError> {
        match self.controller_dir("freezer") {
            Some(dir) => match std::fs::read_to_string(dir.join("freezer.state")) {
                Ok(s) => Ok(s.trim() == "FROZEN"),
                Err(_) => Ok(false),
            },
            None => Ok(false),
        }
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = remove_dir(&self.dir(h)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        self.hierarchies
            .iter()
            .map(|h| (h.dir_name(), self.dir(h)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn device_rules_format_like_the_kernel_expects() {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&deny_all), "a *:* rwm");
        let null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&null), "c 1:3 rwm");
    }

    #[test]
    fn fake_tree_gets_limits_and_cpuset_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, ctrl: &[&str]| {
            let mp = tmp.path().join(name);
            std::fs::create_dir_all(&mp).unwrap();
            V1Hierarchy {
                mountpoint: mp,
                controllers: ctrl.iter().map(|s| s.to_string()).collect(),
            }
        };
        let cpuset = mk("cpuset", &["cpuset"]);
        std::fs::write(cpuset.mountpoint.join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(cpuset.mountpoint.join("cpuset.mems"), "0\n").unwrap();
        // A real new cpuset dir has empty files; pre-create them to mimic the kernel.
        for level in ["a", "a/b"] {
            let d = cpuset.mountpoint.join(level);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpuset.cpus"), "").unwrap();
            std::fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        let memory = mk("memory", &["memory"]);
        let mgr = V1Manager::new(vec![cpuset.clone(), memory.clone()], PathBuf::from("/a/b"));
        mgr.create().unwrap();
        assert_eq!(
            std::fs::read_to_string(cpuset.mountpoint.join("a/b/cpuset.cpus")).unwrap(),
            "0-1"
        );
        let res: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":1048576}}"#).unwrap();
        mgr.apply(&res).unwrap();
        let limit =
            std::fs::read_to_string(memory.mountpoint.join("a/b/memory.limit_in_bytes")).unwrap();
        assert_eq!(limit, "1048576");
    }

    #[test]
    fn blkio_weight_zero_is_unset_and_bfq_file_is_preferred() {
        // docker sends `"blockIO": {"weight": 0}`; kernels without CFQ have no
        // blkio.weight at all, and writing a missing cgroupfs file fails.
        let tmp = tempfile::tempdir().unwrap();
        let mp = tmp.path().join("blkio");
        std::fs::create_dir_all(mp.join("c")).unwrap();
        let blkio = V1Hierarchy {
            mountpoint: mp.clone(),
            controllers: vec!["blkio".into()],
        };
        let mgr = V1Manager::new(vec![blkio], PathBuf::from("/c"));
        let zero: LinuxResources = serde_json::from_str(r#"{"blockIO":{"weight":0}}"#).unwrap();
        mgr.apply(&zero).unwrap();
        assert!(!mp.join("c/blkio.weight").exists());
        std::fs::write(mp.join("c/blkio.bfq.weight"), "100").unwrap();
        let w: LinuxResources = serde_json::from_str(r#"{"blockIO":{"weight":500}}"#).unwrap();
        mgr.apply(&w).unwrap();
        assert_eq!(
            std::fs::read_to_string(mp.join("c/blkio.bfq.weight")).unwrap(),
            "500"
        );
    }
}
