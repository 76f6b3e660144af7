//! `/_ping`, `/version` and `/info`: what clients negotiate and display.

use http::{header, HeaderValue, Response};
use serde_json::json;

use super::version::{MAX_API_VERSION, MIN_API_VERSION};
use super::{empty, full, typed_response, Body};
use crate::backend::Backend;
use crate::daemon::Daemon;

const ENGINE_VERSION: &str = "28.0.0-berth";

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
    json!({
        "ID": "", "Containers": recs.len(), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": recs.len() - running, "Images": images,
        "Driver": "overlayfs", "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true, "SwapLimit": false, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": true, "PidsLimit": true, "IPv4Forwarding": false,
        "Debug": false, "NFd": 0, "OomKillDisable": false, "NGoroutines": 0,
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
        "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": [],
    })
}
