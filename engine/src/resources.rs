//! A container's cgroup limits (`HostConfig` resource fields): dockerd's checks with its
//! messages, its merge rules for `docker update`, and the OCI `linux.resources` they
//! become. Pure functions; the host facts the checks need come in as [`HostCpus`].

use serde_json::{json, Map, Value};

use crate::types::HostConfig;

/// dockerd's `linuxMinMemory`.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The CFS period `--cpus` uses (100 ms), as dockerd sets it.
const NANO_CPU_PERIOD: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooSmall,
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    #[error("Minimum memory reservation allowed is 6MB")]
    ReservationTooSmall,
    #[error("Minimum memory limit can not be less than memory reservation limit, see usage")]
    MemoryBelowReservation,
    #[error("Conflicting options: Nano CPUs and CPU Period cannot both be set")]
    NanoCpusAndPeriod,
    #[error("Conflicting options: Nano CPUs and CPU Quota cannot both be set")]
    NanoCpusAndQuota,
    #[error("Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available")]
    CpuRange { n: usize },
    #[error(
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
    )]
    CpuPeriod,
    #[error("CPU cfs quota can not be less than 1ms (i.e. 1000)")]
    CpuQuota,
    /// moby 28's `validateResources` (cgroup v2, or a kernel without RT group scheduling).
    #[error("kernel does not support CPU real-time scheduler")]
    NoRealtime,
    #[error("cpu real-time runtime cannot be higher than cpu real-time period")]
    RealtimeRuntime,
    #[error("Range of blkio weight is from 10 to 1000")]
    BlkioWeight,
    #[error("Invalid value {value} for cpuset {what}: invalid format: {value}")]
    CpusetFormat { what: &'static str, value: String },
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusUnavailable {
        requested: String,
        available: String,
    },
    #[error(
        "Requested memory nodes are not available - requested {requested}, available: {available}"
    )]
    MemsUnavailable {
        requested: String,
        available: String,
    },
}

/// Conflicts between an update and what the container already has (dockerd's
/// `conflictingUpdateOptions`, a 409 wrapped in "Cannot update container ID").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateConflict {
    #[error("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")]
    NanoCpusAfterPeriod,
    #[error("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")]
    NanoCpusAfterQuota,
    #[error("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")]
    PeriodAfterNanoCpus,
    #[error("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")]
    QuotaAfterNanoCpus,
    #[error("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time")]
    MemoryAboveSwap,
    #[error("Restart policy cannot be updated because AutoRemove is enabled for the container")]
    RestartWithAutoRemove,
}

/// The host's CPUs and memory nodes, for the range and cpuset checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpus {
    pub ncpu: usize,
    /// Like `0-3`: the CPUs and memory nodes containers may use.
    pub cpus: String,
    pub mems: String,
    /// The cgroup v1 cpu controller has real-time group scheduling (`cpu.rt_runtime_us`),
    /// dockerd's `sysInfo.CPURealtime`.
    pub realtime: bool,
}

impl HostCpus {
    /// Read from the root cpuset (v1, else v2), else from sysfs, as dockerd's sysinfo does.
    pub fn probe() -> Self {
        let read = |paths: &[&str]| {
            paths
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
        let cpus = read(&[
            "/sys/fs/cgroup/cpuset/cpuset.cpus",
            "/sys/fs/cgroup/cpuset.cpus.effective",
            "/sys/devices/system/cpu/online",
        ])
        .unwrap_or_else(|| format!("0-{}", ncpu.saturating_sub(1)));
        let mems = read(&[
            "/sys/fs/cgroup/cpuset/cpuset.mems",
            "/sys/fs/cgroup/cpuset.mems.effective",
            "/sys/devices/system/node/online",
        ])
        .unwrap_or_else(|| "0".into());
        let realtime = std::path::Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists();
        Self {
            ncpu,
            cpus,
            mems,
            realtime,
        }
    }
}

/// The resource fields of a `HostConfig` (or of a `docker update` body) that Berth applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    /// cgroup v1 `cpu.rt_period_us` / `cpu.rt_runtime_us` (`--cpu-rt-period/-runtime`).
    pub cpu_rt_period: i64,
    pub cpu_rt_runtime: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// `None`: unset (no pids limit); zero or negative: unlimited, as dockerd reads it.
    pub pids_limit: Option<i64>,
    pub blkio_weight: i64,
}

fn int(map: &Map<String, Value>, key: &str) -> i64 {
    map.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn text(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

impl Resources {
    /// From a JSON object with dockerd's field names (`Memory`, `NanoCpus`, ...).
    pub fn from_map(map: &Map<String, Value>) -> Self {
        Self {
            memory: int(map, "Memory"),
            memory_swap: int(map, "MemorySwap"),
            memory_reservation: int(map, "MemoryReservation"),
            nano_cpus: int(map, "NanoCpus"),
            cpu_shares: int(map, "CpuShares"),
            cpu_period: int(map, "CpuPeriod"),
            cpu_quota: int(map, "CpuQuota"),
            cpu_rt_period: int(map, "CpuRealtimePeriod"),
            cpu_rt_runtime: int(map, "CpuRealtimeRuntime"),
            cpuset_cpus: text(map, "CpusetCpus"),
            cpuset_mems: text(map, "CpusetMems"),
            pids_limit: map.get("PidsLimit").and_then(Value::as_i64),
            blkio_weight: int(map, "BlkioWeight"),
        }
    }

    pub fn of(host: &HostConfig) -> Self {
        Self {
            memory: host.memory,
            ..Self::from_map(&host.extra)
        }
    }

    /// Writes the fields back into `host` (inspect shows them from there).
    pub fn store(&self, host: &mut HostConfig) {
        host.memory = self.memory;
        let e = &mut host.extra;
        e.insert("MemorySwap".into(), json!(self.memory_swap));
        e.insert("MemoryReservation".into(), json!(self.memory_reservation));
        e.insert("NanoCpus".into(), json!(self.nano_cpus));
        e.insert("CpuShares".into(), json!(self.cpu_shares));
        e.insert("CpuPeriod".into(), json!(self.cpu_period));
        e.insert("CpuQuota".into(), json!(self.cpu_quota));
        e.insert("CpuRealtimePeriod".into(), json!(self.cpu_rt_period));
        e.insert("CpuRealtimeRuntime".into(), json!(self.cpu_rt_runtime));
        e.insert("CpusetCpus".into(), json!(self.cpuset_cpus));
        e.insert("CpusetMems".into(), json!(self.cpuset_mems));
        e.insert("PidsLimit".into(), json!(self.pids_limit));
        e.insert("BlkioWeight".into(), json!(self.blkio_weight));
    }

    /// dockerd's `verifyPlatformContainerResources` for what Berth supports. `update`
    /// relaxes the rule that a swap limit needs a memory limit (the container may have one).
    pub fn verify(&self, update: bool, host: &HostCpus) -> Result<(), ResourceError> {
        use ResourceError as E;
        if self.memory != 0 && self.memory < MIN_MEMORY {
            return Err(E::MemoryTooSmall);
        }
        if self.memory > 0 && self.memory_swap > 0 && self.memory_swap < self.memory {
            return Err(E::SwapBelowMemory);
        }
        if self.memory == 0 && self.memory_swap > 0 && !update {
            return Err(E::SwapWithoutMemory);
        }
        if self.memory_reservation > 0 && self.memory_reservation < MIN_MEMORY {
            return Err(E::ReservationTooSmall);
        }
        if self.memory > 0 && self.memory_reservation > 0 && self.memory < self.memory_reservation {
            return Err(E::MemoryBelowReservation);
        }
        if self.nano_cpus > 0 && self.cpu_period > 0 {
            return Err(E::NanoCpusAndPeriod);
        }
        if self.nano_cpus > 0 && self.cpu_quota > 0 {
            return Err(E::NanoCpusAndQuota);
        }
        let max_nano = i64::try_from(host.ncpu)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        if self.nano_cpus < 0 || self.nano_cpus > max_nano {
            return Err(E::CpuRange { n: host.ncpu });
        }
        if self.cpu_period != 0 && !(1000..=1_000_000).contains(&self.cpu_period) {
            return Err(E::CpuPeriod);
        }
        if self.cpu_quota > 0 && self.cpu_quota < 1000 {
            return Err(E::CpuQuota);
        }
        if (self.cpu_rt_period != 0 || self.cpu_rt_runtime != 0) && !host.realtime {
            return Err(E::NoRealtime);
        }
        if self.cpu_rt_period != 0
            && self.cpu_rt_runtime != 0
            && self.cpu_rt_runtime > self.cpu_rt_period
        {
            return Err(E::RealtimeRuntime);
        }
        check_cpuset("cpus", &self.cpuset_cpus, &host.cpus)?;
        check_cpuset("mems", &self.cpuset_mems, &host.mems)?;
        if self.blkio_weight > 0 && !(10..=1000).contains(&self.blkio_weight) {
            return Err(E::BlkioWeight);
        }
        Ok(())
    }

    /// What dockerd fills in at create: a memory limit without a swap limit gets twice
    /// the memory as memory+swap.
    pub fn adapt_for_create(&mut self) {
        if self.memory > 0 && self.memory_swap == 0 {
            self.memory_swap = self.memory * 2;
        }
    }

    /// dockerd's `Container.UpdateContainer`: zero (or empty) fields of `new` leave the
    /// current value; the pids limit changes whenever `new` has one.
    pub fn merge(&mut self, new: &Resources) -> Result<(), UpdateConflict> {
        use UpdateConflict as C;
        if new.nano_cpus > 0 && self.cpu_period > 0 {
            return Err(C::NanoCpusAfterPeriod);
        }
        if new.nano_cpus > 0 && self.cpu_quota > 0 {
            return Err(C::NanoCpusAfterQuota);
        }
        if new.cpu_period > 0 && self.nano_cpus > 0 {
            return Err(C::PeriodAfterNanoCpus);
        }
        if new.cpu_quota > 0 && self.nano_cpus > 0 {
            return Err(C::QuotaAfterNanoCpus);
        }
        if new.memory != 0 && new.memory > self.memory_swap && new.memory_swap == 0 {
            return Err(C::MemoryAboveSwap);
        }
        let set = |cur: &mut i64, v: i64| {
            if v != 0 {
                *cur = v;
            }
        };
        set(&mut self.blkio_weight, new.blkio_weight);
        set(&mut self.cpu_shares, new.cpu_shares);
        set(&mut self.nano_cpus, new.nano_cpus);
        set(&mut self.cpu_period, new.cpu_period);
        set(&mut self.cpu_quota, new.cpu_quota);
        set(&mut self.cpu_rt_period, new.cpu_rt_period);
        set(&mut self.cpu_rt_runtime, new.cpu_rt_runtime);
        set(&mut self.memory, new.memory);
        set(&mut self.memory_swap, new.memory_swap);
        set(&mut self.memory_reservation, new.memory_reservation);
        if !new.cpuset_cpus.is_empty() {
            self.cpuset_cpus.clone_from(&new.cpuset_cpus);
        }
        if !new.cpuset_mems.is_empty() {
            self.cpuset_mems.clone_from(&new.cpuset_mems);
        }
        if new.pids_limit.is_some() {
            self.pids_limit = new.pids_limit;
        }
        Ok(())
    }

    /// OCI `linux.resources` (without `devices`), as dockerd's `getMemoryResources`,
    /// `getCPUResources`, `getPidsLimit` and `getBlkioWeight` build it.
    pub fn to_oci(&self) -> Map<String, Value> {
        let mut out = Map::new();
        let mut memory = Map::new();
        if self.memory != 0 {
            memory.insert("limit".into(), json!(self.memory));
        }
        if self.memory_reservation != 0 {
            memory.insert("reservation".into(), json!(self.memory_reservation));
        }
        if self.memory_swap != 0 {
            memory.insert("swap".into(), json!(self.memory_swap));
        }
        if !memory.is_empty() {
            out.insert("memory".into(), Value::Object(memory));
        }
        let mut cpu = Map::new();
        if self.cpu_shares > 0 {
            cpu.insert("shares".into(), json!(self.cpu_shares));
        }
        if !self.cpuset_cpus.is_empty() {
            cpu.insert("cpus".into(), json!(self.cpuset_cpus));
        }
        if !self.cpuset_mems.is_empty() {
            cpu.insert("mems".into(), json!(self.cpuset_mems));
        }
        if self.nano_cpus > 0 {
            cpu.insert("period".into(), json!(NANO_CPU_PERIOD));
            cpu.insert(
                "quota".into(),
                json!(self.nano_cpus * NANO_CPU_PERIOD / 1_000_000_000),
            );
        }
        if self.cpu_period != 0 {
            cpu.insert("period".into(), json!(self.cpu_period));
        }
        if self.cpu_quota != 0 {
            cpu.insert("quota".into(), json!(self.cpu_quota));
        }
        if self.cpu_rt_period != 0 {
            cpu.insert("realtimePeriod".into(), json!(self.cpu_rt_period));
        }
        if self.cpu_rt_runtime != 0 {
            cpu.insert("realtimeRuntime".into(), json!(self.cpu_rt_runtime));
        }
        if !cpu.is_empty() {
            out.insert("cpu".into(), Value::Object(cpu));
        }
        if let Some(limit) = self.pids_limit {
            // runc needs -1 to lift a previous limit; the API's 0 also means unlimited.
            out.insert(
                "pids".into(),
                json!({"limit": if limit > 0 { limit } else { -1 }}),
            );
        }
        if self.blkio_weight > 0 {
            out.insert("blockIO".into(), json!({"weight": self.blkio_weight}));
        }
        out
    }
}

/// Validates a create's resources and fills in dockerd's defaults.
pub fn check_create(host: &mut HostConfig) -> Result<(), ResourceError> {
    let mut r = Resources::of(host);
    r.verify(false, &HostCpus::probe())?;
    r.adapt_for_create();
    r.store(host);
    Ok(())
}

/// Parses a cpuset list like `0-2,5` (dockerd's `parsers.ParseUintList`).
fn parse_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

fn check_cpuset(what: &'static str, requested: &str, available: &str) -> Result<(), ResourceError> {
    if requested.is_empty() {
        return Ok(());
    }
    let wanted = parse_list(requested).ok_or_else(|| ResourceError::CpusetFormat {
        what,
        value: requested.to_string(),
    })?;
    let have = parse_list(available).unwrap_or_default();
    if wanted.iter().all(|c| have.contains(c)) {
        return Ok(());
    }
    let (requested, available) = (requested.to_string(), available.to_string());
    Err(if what == "cpus" {
        ResourceError::CpusUnavailable {
            requested,
            available,
        }
    } else {
        ResourceError::MemsUnavailable {
            requested,
            available,
        }
    })
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
