//! cgroup v2: one directory in the unified hierarchy; controllers must be enabled in
//! every ancestor's cgroup.subtree_control before their files appear (cgroups(7)).

use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::devices_bpf;
use crate::sys::bpf;

use super::{
    mkdir_all, open_cgroup_file, read_file, read_pids, remove_dir, under, write_file, CgroupError,
    CgroupManager, Placement,
};

/// The v2 manager for `<root>/<path>`.
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    path: PathBuf,
    /// Whether limits are managed here (false on a hybrid host: placement only).
    controllers: bool,
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl V2Manager {
    pub fn new(root: PathBuf, path: PathBuf, controllers: bool) -> Self {
        Self {
            root,
            path,
            controllers,
        }
    }

    pub fn dir(&self) -> PathBuf {
        under(&self.root, &self.path)
    }

    fn available(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Enables the wanted controllers from the root down to our parent.
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        let wanted: Vec<String> = self
            .available()
            .into_iter()
            .filter(|c| {
                matches!(
                    c.as_str(),
                    "cpu" | "cpuset" | "memory" | "pids" | "io" | "hugetlb"
                )
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let line: String = wanted.iter().map(|c| format!("+{c} ")).collect();
        let mut current = self.root.clone();
        for part in self.path.components().skip(1) {
            write_file(&current.join("cgroup.subtree_control"), line.trim_end())?;
            current.push(part);
        }
        Ok(())
    }

    /// Replaces the container's device program: attach the new one first, then detach the
    /// old ones, so there is no moment without a filter (runc does the same).
    fn set_device_filter(&self, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
        let prog = devices_bpf::device_filter(&devices_bpf::effective_rules(rules)?)?;
        let dir = self.dir();
        let fail = |op: &'static str| {
            let path = dir.clone();
            move |source| CgroupError::Bpf { op, path, source }
        };
        let cgroup = nix::fcntl::open(
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("open"))?;
        let old = bpf::query_device_programs(cgroup.as_fd()).map_err(fail("BPF_PROG_QUERY"))?;
        let new = bpf::load_device_program(&prog)
            .map_err(|(source, log)| CgroupError::BpfVerifier { source, log })?;
        bpf::attach_device_program(cgroup.as_fd(), new.as_fd()).map_err(fail("BPF_PROG_ATTACH"))?;
        for id in old {
            // Someone else detached it meanwhile (ENOENT): the end state is the same.
            let fd = match bpf::program_by_id(id) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(fail("BPF_PROG_GET_FD_BY_ID")(e)),
            };
            match bpf::detach_device_program(cgroup.as_fd(), fd.as_fd()) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(fail("BPF_PROG_DETACH")(e)),
            }
        }
        Ok(())
    }

    fn need(&self, controller: &str, what: &'static str) -> Result<(), CgroupError> {
        if self.available().iter().any(|c| c == controller) {
            Ok(())
        } else {
            Err(CgroupError::ControllerMissing {
                controller: controller.into(),
                root: self.root.clone(),
                what,
            })
        }
    }
}

impl CgroupManager for V2Manager {
    fn create(&self) -> Result<(), CgroupError> {
        mkdir_all(&self.dir())?;
        if self.controllers {
            self.enable_controllers()?;
        }
        Ok(())
    }

    fn apply(&self, res: &LinuxResources) -> Result<(), CgroupError> {
        if !self.controllers {
            return Ok(());
        }
        if res
            .cpu()
            .as_ref()
            .is_some_and(|c| c.realtime_period().is_some() || c.realtime_runtime().is_some())
        {
            return Err(CgroupError::V2Realtime);
        }
        let dir = self.dir();
        if let Some(mem) = res.memory() {
            if let Some(limit) = mem.limit() {
                self.need("memory", "memory.limit")?;
                let v = if limit < 0 {
                    "max".to_owned()
                } else {
                    limit.to_string()
                };
                write_file(&dir.join("memory.max"), &v)?;
                // v1's swap is memory+swap; v2's swap.max is swap alone.
                if let Some(swap) = mem.swap() {
                    let v = if swap < 0 {
                        "max".to_owned()
                    } else {
                        (swap - limit).max(0).to_string()
                    };
                    write_file(&dir.join("memory.swap.max"), &v)?;
                }
            }
            if let Some(reservation) = mem.reservation() {
                self.need("memory", "memory.reservation")?;
                write_file(&dir.join("memory.low"), &reservation.to_string())?;
            }
        }
        if let Some(pids) = res.pids() {
            self.need("pids", "pids.limit")?;
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_owned()
            };
            write_file(&dir.join("pids.max"), &v)?;
        }
        if let Some(cpu) = res.cpu() {
            if let Some(shares) = cpu.shares() {
                self.need("cpu", "cpu.shares")?;
                write_file(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(shares).to_string(),
                )?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                self.need("cpu", "cpu.quota")?;
                let quota = cpu
                    .quota()
                    .filter(|q| *q > 0)
                    .map_or("max".to_owned(), |q| q.to_string());
                let period = cpu.period().unwrap_or(100_000);
                write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
            }
            if let Some(cpus) = cpu.cpus() {
                self.need("cpuset", "cpu.cpus")?;
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                self.need("cpuset", "cpu.mems")?;
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let Some(unified) = res.unified() {
            for (key, value) in unified {
                write_file(&dir.join(key), value)?;
            }
        }
        if let Some(rules) = res.devices() {
            self.set_device_filter(rules)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: Pid) -> Result<(), CgroupError> {
        write_file(&self.dir().join("cgroup.procs"), &pid.as_raw().to_string())
    }

    fn placement(&self) -> Result<Placement, CgroupError> {
        let dir = self.dir();
        let (_, clone_into) = open_cgroup_file(dir.clone(), true)?;
        Ok(Placement {
            clone_into: Some(clone_into),
            v2_procs: Some(open_cgroup_file(dir.join("cgroup.procs"), false)?),
            ..Placement::default()
        })
    }

    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        read_pids(&self.dir().join("cgroup.procs"))
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.dir();
        write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        // cgroup.events reports "frozen 1" once every task has stopped.
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match std::fs::read_to_string(dir.join("cgroup.events")) {
                Ok(ev)
                    if !ev.lines().any(|l| l.starts_with("frozen"))
                        || ev.lines().any(|l| l == want) =>
                {
                    break
                }
                Err(_) => break,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Ok(())
    }

    fn frozen(&self) -> Result<bool, CgroupError> {
        match read_file(&self.dir().join("cgroup.freeze")) {
            Ok(v) => Ok(v.trim() == "1"),
            Err(_) => Ok(false),
        }
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        remove_dir(&self.dir())
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        vec![(String::new(), self.dir())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        tmp
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn fake_tree_enables_controllers_and_writes_limits() {
        let tmp = fake_root();
        let mgr = V2Manager::new(tmp.path().to_path_buf(), PathBuf::from("/parent/ctr"), true);
        mgr.create().unwrap();
        assert!(tmp.path().join("parent/ctr").is_dir());
        let top = std::fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(top, "+cpuset +cpu +io +memory +pids");
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":4194304,"swap":8388608},"pids":{"limit":20},"cpu":{"shares":1024,"quota":50000,"period":100000}}"#,
        )
        .unwrap();
        mgr.apply(&res).unwrap();
        let read =
            |f: &str| std::fs::read_to_string(tmp.path().join("parent/ctr").join(f)).unwrap();
        assert_eq!(read("memory.max"), "4194304");
        assert_eq!(read("memory.swap.max"), "4194304");
        assert_eq!(read("pids.max"), "20");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
    }

    #[test]
    fn missing_controller_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mgr = V2Manager::new(tmp.path().to_path_buf(), PathBuf::from("/c"), true);
        mgr.create().unwrap();
        let res: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":5}}"#).unwrap();
        let err = mgr.apply(&res).unwrap_err().to_string();
        assert!(err.contains("controller pids is not available"), "{err}");
    }
}
