//! Intel RDT (`linux.intelRdt`) through the resctrl filesystem, as runc's
//! libcontainer/intelrdt does it: the container's tasks go into a resctrl group (the
//! shared `<resctrl>/<closID>`, else `<resctrl>/<container id>`), whose `schemata` file
//! holds the cache and memory-bandwidth allocations; `enableMonitoring` adds a monitoring
//! group `mon_groups/<id>` inside it for the container alone.
//!
//! Every path is under a resctrl root taken from mountinfo, so unit tests run the manager
//! on a plain temp dir (the kernel's side of a write is not there, of course).

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxIntelRdt;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RdtError {
    #[error("Intel RDT (linux.intelRdt) is asked for, but the resctrl filesystem is not mounted (no resctrl mount in /proc/self/mountinfo; mount -t resctrl resctrl /sys/fs/resctrl)")]
    NotMounted,
    #[error("linux.intelRdt.closID: invalid {0:?} (one directory name under the resctrl root: not empty, \".\", \"..\", or with '/')")]
    BadClosId(String),
    #[error("linux.intelRdt.{field} is set, but {feature} is not enabled on this host (no {})", path.display())]
    NotEnabled {
        field: &'static str,
        feature: &'static str,
        path: PathBuf,
    },
    #[error("linux.intelRdt.{field}: writing {data:?} to {} failed: {source}{}", path.display(), status_suffix(.last_cmd_status))]
    Write {
        field: &'static str,
        data: String,
        path: PathBuf,
        source: io::Error,
        /// The kernel's reason, from `<resctrl>/info/last_cmd_status`.
        last_cmd_status: Option<String>,
    },
    #[error("linux.intelRdt: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn status_suffix(status: &Option<String>) -> String {
    status
        .as_deref()
        .map(|s| format!(" (last_cmd_status: {s})"))
        .unwrap_or_default()
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RdtError + 'a {
    move |source| RdtError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The resctrl mount point named in a mountinfo text (filesystem type `resctrl`).
pub fn mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        (right.split(' ').next() == Some("resctrl"))
            .then(|| PathBuf::from(crate::cgroups::unescape_mountinfo(point)))
    })
}

/// Names a directory to use as the resctrl root instead of the mount: the integration
/// tests' fake tree (CI hosts have no resctrl), so create/exec/update/events/delete are
/// tested end to end. Not a user interface.
pub const TEST_ROOT_ENV: &str = "_BERTH_LOWRT_TEST_RESCTRL";

/// This host's resctrl mount, if any.
pub fn host_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os(TEST_ROOT_ENV) {
        return Some(root.into());
    }
    mount_point(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The container's resctrl group, recorded in state.json so `update`, `events`, `exec`
/// and `delete` find it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdtGroup {
    /// The resctrl mount point.
    pub root: PathBuf,
    /// The CTRL_MON group the tasks are in.
    pub path: PathBuf,
    /// Whether this container made `path` (then `delete` removes it; a closID group that
    /// was there before is shared and stays).
    pub created: bool,
    /// Named by `closID`, so other containers may have joined it since: removed only
    /// when no task is left in it.
    #[serde(default)]
    pub shared: bool,
    /// `mon_groups/<id>` when `enableMonitoring` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mon_group: Option<PathBuf>,
}

impl RdtGroup {
    /// Checks `cfg` against the resctrl tree at `root` (None: not mounted) before anything
    /// exists, and names the group; [`RdtGroup::create`] makes it.
    pub fn plan(cfg: &LinuxIntelRdt, id: &str, root: Option<PathBuf>) -> Result<Self, RdtError> {
        let root = root.ok_or(RdtError::NotMounted)?;
        let name = match cfg.clos_id().as_deref() {
            Some(clos) if clos.is_empty() || clos == "." || clos == ".." || clos.contains('/') => {
                return Err(RdtError::BadClosId(clos.to_owned()))
            }
            Some(clos) => clos,
            None => id,
        };
        let needs = [
            (
                "l3CacheSchema",
                cfg.l3_cache_schema().is_some(),
                "L3",
                "Intel RDT/CAT",
            ),
            (
                "memBwSchema",
                cfg.mem_bw_schema().is_some(),
                "MB",
                "Intel RDT/MBA",
            ),
            (
                "enableMonitoring",
                cfg.enable_monitoring().unwrap_or(false),
                "L3_MON",
                "Intel RDT monitoring",
            ),
        ];
        for (field, wanted, info, feature) in needs {
            let path = root.join("info").join(info);
            if wanted && !path.is_dir() {
                return Err(RdtError::NotEnabled {
                    field,
                    feature,
                    path,
                });
            }
        }
        let path = root.join(name);
        let mon_group = cfg
            .enable_monitoring()
            .unwrap_or(false)
            .then(|| path.join("mon_groups").join(id));
        Ok(Self {
            created: false,
            shared: cfg.clos_id().is_some(),
            path,
            root,
            mon_group,
        })
    }

    /// Makes the group (unless the closID group exists), writes the schemata, and makes
    /// the monitoring group. On error, what this call made is removed again.
    pub fn create(&mut self, cfg: &LinuxIntelRdt) -> Result<(), RdtError> {
        match std::fs::create_dir(&self.path) {
            Ok(()) => self.created = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // The kernel says ENOSPC when it is out of CLOSIDs.
            Err(e) => return Err(io_err("create resctrl group", &self.path)(e)),
        }
        let made = (|| {
            self.write_schemata(
                cfg.l3_cache_schema().as_deref(),
                cfg.mem_bw_schema().as_deref(),
                cfg.schemata().as_deref().unwrap_or(&[]),
            )?;
            if let Some(mon) = &self.mon_group {
                match std::fs::create_dir(mon) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(io_err("create monitoring group", mon)(e))
                    }
                    _ => {}
                }
            }
            Ok(())
        })();
        if made.is_err() {
            let _ = self.destroy();
        }
        made
    }

    /// One write of every line, L3 then MB then `schemata` (which the runtime-spec says
    /// overrides the other two: the kernel applies lines in order, per resource).
    pub fn write_schemata(
        &self,
        l3: Option<&str>,
        mb: Option<&str>,
        lines: &[String],
    ) -> Result<(), RdtError> {
        let mut text = String::new();
        let mut field = "schemata";
        for (name, line) in [("l3CacheSchema", l3), ("memBwSchema", mb)] {
            if let Some(line) = line.filter(|l| !l.is_empty()) {
                text.push_str(line);
                text.push('\n');
                field = name;
            }
        }
        for line in lines {
            text.push_str(line);
            text.push('\n');
            field = "schemata";
        }
        if text.is_empty() {
            return Ok(());
        }
        let path = self.path.join("schemata");
        std::fs::write(&path, &text).map_err(|source| RdtError::Write {
            field,
            data: text.trim_end().to_owned(),
            path,
            source,
            last_cmd_status: std::fs::read_to_string(self.root.join("info/last_cmd_status"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && s != "ok"),
        })
    }

    /// Moves `pid` into the group, then into the monitoring group (resctrl only takes a
    /// task there once it is in the parent CTRL_MON group).
    pub fn add_task(&self, pid: i32) -> Result<(), RdtError> {
        for dir in std::iter::once(&self.path).chain(self.mon_group.as_ref()) {
            let tasks = dir.join("tasks");
            std::fs::write(&tasks, pid.to_string()).map_err(io_err("add the task to", &tasks))?;
        }
        Ok(())
    }

    /// Removes the monitoring group and, if this container made it, the group (rmdir of a
    /// group with tasks would move them to the root group: a closID group that another
    /// container has joined since therefore stays). Missing directories are fine: delete
    /// may run twice.
    pub fn destroy(&self) -> Result<(), RdtError> {
        let in_use =
            || std::fs::read_to_string(self.path.join("tasks")).is_ok_and(|t| !t.trim().is_empty());
        let own = self.created && !(self.shared && in_use());
        if self.created && !own {
            tracing::debug!(path = %self.path.display(), "resctrl group still has tasks: kept");
        }
        for dir in self.mon_group.iter().chain(own.then_some(&self.path)) {
            remove_group(dir).map_err(io_err("remove resctrl group", dir))?;
        }
        Ok(())
    }

    /// runc's `intel_rdt` section of `events --stats`.
    pub fn stats(&self) -> Result<IntelRdt, RdtError> {
        let mut out = IntelRdt::default();
        let read = |path: PathBuf| -> Result<String, RdtError> {
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(io_err("read", &path))
        };
        let number = |path: PathBuf| -> Result<u64, RdtError> {
            let text = read(path.clone())?;
            text.parse().map_err(|_| RdtError::Io {
                op: "parse",
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")),
            })
        };
        let line_of = |text: &str, prefix: &str| {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with(prefix))
                .unwrap_or_default()
                .to_owned()
        };
        let info = self.root.join("info");
        let root_schemata = read(self.root.join("schemata"))?;
        let own_schemata = read(self.path.join("schemata"))?;
        if info.join("L3").is_dir() {
            let l3 = info.join("L3");
            out.l3_cache_info = Some(L3CacheInfo {
                cbm_mask: read(l3.join("cbm_mask"))?,
                min_cbm_bits: number(l3.join("min_cbm_bits"))?,
                num_closids: number(l3.join("num_closids"))?,
            });
            out.l3_cache_schema_root = line_of(&root_schemata, "L3");
            out.l3_cache_schema = line_of(&own_schemata, "L3");
        }
        if info.join("MB").is_dir() {
            let mb = info.join("MB");
            out.mem_bw_info = Some(MemBwInfo {
                bandwidth_gran: number(mb.join("bandwidth_gran"))?,
                delay_linear: number(mb.join("delay_linear"))?,
                min_bandwidth: number(mb.join("min_bandwidth"))?,
                num_closids: number(mb.join("num_closids"))?,
            });
            out.mem_bw_schema_root = line_of(&root_schemata, "MB");
            out.mem_bw_schema = line_of(&own_schemata, "MB");
        }
        let features =
            std::fs::read_to_string(info.join("L3_MON/mon_features")).unwrap_or_default();
        let has = |f: &str| features.lines().any(|l| l.trim() == f);
        let (mbm, cmt) = (has("mbm_total_bytes"), has("llc_occupancy"));
        if mbm || cmt {
            // Counters of the container alone when it has its own monitoring group.
            let data = self
                .mon_group
                .as_ref()
                .unwrap_or(&self.path)
                .join("mon_data");
            let mut domains: Vec<PathBuf> = std::fs::read_dir(&data)
                .map_err(io_err("read", &data))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            domains.sort();
            let (mut mbm_stats, mut cmt_stats) = (Vec::new(), Vec::new());
            for dir in domains {
                if mbm {
                    mbm_stats.push(MbmNumaNodeStats {
                        mbm_total_bytes: number(dir.join("mbm_total_bytes"))?,
                        mbm_local_bytes: number(dir.join("mbm_local_bytes"))?,
                    });
                }
                if cmt {
                    cmt_stats.push(CmtNumaNodeStats {
                        llc_occupancy: number(dir.join("llc_occupancy"))?,
                    });
                }
            }
            out.mbm_stats = mbm.then_some(mbm_stats);
            out.cmt_stats = cmt.then_some(cmt_stats);
        }
        Ok(out)
    }
}

/// rmdir, which is how resctrl groups go; a plain directory (a test tree) whose files
/// rmdir cannot drop is removed with its contents, as Go's os.RemoveAll does for runc.
fn remove_group(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => std::fs::remove_dir_all(dir),
        other => other,
    }
}

/// runc's `types.IntelRdt` (field names and omit-when-empty rules of its JSON).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct IntelRdt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l3_cache_info: Option<L3CacheInfo>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema_root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_bw_info: Option<MemBwInfo>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema_root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbm_stats: Option<Vec<MbmNumaNodeStats>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmt_stats: Option<Vec<CmtNumaNodeStats>>,
}

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct L3CacheInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cbm_mask: String,
    #[serde(skip_serializing_if = "zero")]
    pub min_cbm_bits: u64,
    #[serde(skip_serializing_if = "zero")]
    pub num_closids: u64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct MemBwInfo {
    #[serde(skip_serializing_if = "zero")]
    pub bandwidth_gran: u64,
    #[serde(skip_serializing_if = "zero")]
    pub delay_linear: u64,
    #[serde(skip_serializing_if = "zero")]
    pub min_bandwidth: u64,
    #[serde(skip_serializing_if = "zero")]
    pub num_closids: u64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct MbmNumaNodeStats {
    pub mbm_total_bytes: u64,
    pub mbm_local_bytes: u64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct CmtNumaNodeStats {
    pub llc_occupancy: u64,
}

#[cfg(test)]
#[path = "intelrdt_tests.rs"]
mod tests;
