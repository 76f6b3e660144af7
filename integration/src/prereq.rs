//! What a test needs from the machine. A test whose needs are not met is reported as
//! ignored, with a visible "SKIP:" line naming the missing piece.

use std::path::{Path, PathBuf};

/// The docker CLI the tests drive (docker 28 is installed there on the dev machines).
pub const DOCKER_CLI: &str = "/usr/local/bin/docker";
/// The static busybox the test image is built from (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Namespaces, mounts and cgroups need root.
    Root,
    /// The real docker CLI.
    Docker,
    /// A static busybox to build the image from.
    Busybox,
    /// A local registry and the tools to fill it: Debian's docker-registry, skopeo and
    /// htpasswd (apache2-utils).
    Registry,
    /// Debian's docker-py (python3-docker) under Debian's python3.
    DockerPy,
    /// Debian's docker-compose (v1, on docker-py).
    Compose,
}

/// Debian's docker-compose v1.
pub const COMPOSE: &str = "/usr/bin/docker-compose";

/// The interpreter docker-py tests use: Debian's, so they run the packaged docker-py
/// (python3-docker), not whatever a pip install put first in `$PATH`.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The registry tools `Need::Registry` asks for.
pub const REGISTRY_TOOLS: [&str; 3] = [
    "/usr/bin/docker-registry",
    "/usr/bin/skopeo",
    "/usr/bin/htpasswd",
];

impl Need {
    /// `None` when met, else why not.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root()).then(|| "not running as root".into()),
            Need::Docker => docker_cli()
                .is_none()
                .then(|| format!("docker CLI not found at {DOCKER_CLI} or in PATH")),
            Need::Busybox => (!Path::new(BUSYBOX).is_file())
                .then(|| format!("{BUSYBOX} missing (apt-get install busybox-static)")),
            Need::Registry => {
                let missing: Vec<&str> = REGISTRY_TOOLS
                    .into_iter()
                    .filter(|p| !Path::new(p).is_file())
                    .collect();
                (!missing.is_empty()).then(|| {
                    format!(
                        "{} missing (apt-get install docker-registry skopeo apache2-utils)",
                        missing.join(", ")
                    )
                })
            }
            Need::Compose => (!Path::new(COMPOSE).is_file())
                .then(|| format!("{COMPOSE} missing (apt-get install docker-compose)")),
            Need::DockerPy => {
                let ok = std::process::Command::new(SYSTEM_PYTHON)
                    .args(["-c", "import docker"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                (!ok).then(|| {
                    format!("{SYSTEM_PYTHON} cannot import docker (apt-get install python3-docker)")
                })
            }
        }
    }
}

/// The first unmet need among `needs`, as a human-readable reason.
pub fn unmet(needs: &[Need]) -> Option<String> {
    needs.iter().find_map(|n| n.missing())
}

/// The docker CLI binary: the fixed path first, then `$PATH`.
pub fn docker_cli() -> Option<PathBuf> {
    let fixed = PathBuf::from(DOCKER_CLI);
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}
