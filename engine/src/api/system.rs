//! `/_ping`, `/version` and `/info`: what clients negotiate and display.

use http::{header, HeaderValue, Response};
use serde_json::json;

use super::version::{MAX_API_VERSION, MIN_API_VERSION};
use super::{empty, full, typed_response, Body};
use crate::backend::Backend;
use crate::daemon::Daemon;

use crate::ENGINE_VERSION;

pub fn ping(head: bool) -> Response<Body> {
    let mut r = typed_response(
        if head { empty() } else { full("OK") },
        "text/plain; charset=utf-8",
    );
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // No BuildKit here: the CLI falls back to the legacy builder protocol.
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    r
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn version() -> serde_json::Value {
    json!({
        "Platform": {"Name": "Berth Engine"},
        "Components": [{"Name": "Engine", "Version": ENGINE_VERSION,
                        "Details": {"ApiVersion": MAX_API_VERSION.to_string(),
                                    "MinAPIVersion": MIN_API_VERSION.to_string(),
                                    "Os": "linux", "Arch": go_arch(), "KernelVersion": kernel_version()}}],
        "Version": ENGINE_VERSION,
        "ApiVersion": MAX_API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn info<B: Backend>(d: &Daemon<B>) -> serde_json::Value {
    let recs = d.store.list();
    let running = recs.iter().filter(|r| r.state.status.is_running()).count();
    let images = d.list_images().await.map(|i| i.len()).unwrap_or(0);
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let host = HostSupport::probe();
    json!({
        "ID": "", "Containers": recs.len(), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": recs.len() - running, "Images": images,
        "Driver": "overlayfs", "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": host.memory, "SwapLimit": host.swap, "KernelMemory": host.kmem,
        "KernelMemoryTCP": host.kmem_tcp, "CpuCfsPeriod": host.cfs_period,
        "CpuCfsQuota": host.cfs_quota, "CPUShares": host.shares, "CPUSet": host.cpuset,
        "PidsLimit": host.pids, "IPv4Forwarding": host.ip_forward,
        "BridgeNfIptables": host.bridge_nf_iptables, "BridgeNfIp6tables": host.bridge_nf_ip6tables,
        "Debug": false, "NFd": 0, "OomKillDisable": host.oom_kill_disable, "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "1",
        "KernelVersion": kernel_version(), "OperatingSystem": "Berth", "OSVersion": "",
        "OSType": "linux", "Architecture": std::env::consts::ARCH, "NCPU": ncpu, "MemTotal": 0,
        "IndexServerAddress": "https://index.docker.io/v1/", "RegistryConfig": null,
        "DockerRootDir": d.config.data_root.display().to_string(),
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": hostname, "Labels": [],
        "ExperimentalBuild": false, "ServerVersion": ENGINE_VERSION,
        "Runtimes": {"runc": {"path": "berth-lowrt"}}, "DefaultRuntime": "runc",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true, "Isolation": "", "InitBinary": "docker-init",
        "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": host.warnings(),
    })
}

/// What this host's cgroup v1 controllers and sysctls support, probed as dockerd's
/// `sysinfo` does (a control file present means the feature is there).
struct HostSupport {
    memory: bool,
    swap: bool,
    kmem: bool,
    kmem_tcp: bool,
    oom_kill_disable: bool,
    cfs_period: bool,
    cfs_quota: bool,
    shares: bool,
    cpuset: bool,
    pids: bool,
    ip_forward: bool,
    bridge_nf_iptables: bool,
    bridge_nf_ip6tables: bool,
}

impl HostSupport {
    fn probe() -> Self {
        let cg = |ctrl: &str, file: &str| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(file)
                .exists()
        };
        let on = |path: &str| std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1");
        Self {
            memory: cg("memory", "memory.limit_in_bytes"),
            swap: cg("memory", "memory.memsw.limit_in_bytes"),
            kmem: cg("memory", "memory.kmem.limit_in_bytes"),
            kmem_tcp: cg("memory", "memory.kmem.tcp.limit_in_bytes"),
            oom_kill_disable: cg("memory", "memory.oom_control"),
            cfs_period: cg("cpu", "cpu.cfs_period_us"),
            cfs_quota: cg("cpu", "cpu.cfs_quota_us"),
            shares: cg("cpu", "cpu.shares"),
            cpuset: cg("cpuset", "cpuset.cpus"),
            pids: cg("pids", "pids.max"),
            ip_forward: on("/proc/sys/net/ipv4/ip_forward"),
            bridge_nf_iptables: on("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            bridge_nf_ip6tables: on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        }
    }

    /// dockerd 20.10's `info` warnings for what is missing (the CLI prints them).
    fn warnings(&self) -> Vec<&'static str> {
        [
            (self.memory, "WARNING: No memory limit support"),
            (self.swap, "WARNING: No swap limit support"),
            (self.kmem, "WARNING: No kernel memory limit support"),
            (self.kmem_tcp, "WARNING: No kernel memory TCP limit support"),
            (
                self.oom_kill_disable,
                "WARNING: No oom kill disable support",
            ),
            (self.cfs_quota, "WARNING: No cpu cfs quota support"),
            (self.cfs_period, "WARNING: No cpu cfs period support"),
            (self.shares, "WARNING: No cpu shares support"),
            (self.cpuset, "WARNING: No cpuset support"),
            (self.ip_forward, "WARNING: IPv4 forwarding is disabled"),
            (
                self.bridge_nf_iptables,
                "WARNING: bridge-nf-call-iptables is disabled",
            ),
            (
                self.bridge_nf_ip6tables,
                "WARNING: bridge-nf-call-ip6tables is disabled",
            ),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, w)| w)
        .collect()
    }
}
