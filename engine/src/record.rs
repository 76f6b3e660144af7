//! The persisted container record (`config.v2.json`), versioned, with an explicit status
//! and the predicates every operation checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{ContainerConfig, HostConfig};

/// Bumped when the record's meaning changes incompatibly.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
    Removing,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Removing => "removing",
            Self::Dead => "dead",
        }
    }

    pub fn is_running(self) -> bool {
        self == Self::Running
    }

    pub fn can_start(self) -> bool {
        matches!(self, Self::Created | Self::Exited)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: Status,
    pub pid: u32,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The task is frozen (`docker pause`); `status` stays `running`, as dockerd's
    /// `Running` does.
    #[serde(default)]
    pub paused: bool,
    /// Exited, and the restart policy will start it again after the back-off; `status`
    /// is `exited` (no task exists).
    #[serde(default)]
    pub restarting: bool,
    /// dockerd's `HasBeenManuallyStopped`: set by stop/kill, cleared by a user start;
    /// `unless-stopped` does not restart such a container.
    #[serde(default)]
    pub has_been_manually_stopped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::daemon::Health>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: None,
            finished_at: None,
            paused: false,
            restarting: false,
            has_been_manually_stopped: false,
            health: None,
        }
    }
}

impl State {
    /// Records an exit, as dockerd's `SetStopped` does.
    pub fn set_exited(&mut self, code: i64, at: DateTime<Utc>) {
        self.status = Status::Exited;
        self.pid = 0;
        self.exit_code = code;
        self.finished_at = Some(at);
        self.paused = false;
    }

    /// dockerd's `StateString`: `paused` and `restarting` are refinements of the status.
    pub fn status_str(&self) -> &'static str {
        if self.restarting {
            "restarting"
        } else if self.paused && self.status.is_running() {
            "paused"
        } else {
            self.status.as_str()
        }
    }

    /// What `docker ps` without `-a` lists: dockerd counts restarting containers as running.
    pub fn is_up(&self) -> bool {
        self.status.is_running() || self.restarting
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    pub record_version: u32,
    pub id: String,
    /// With the leading slash, like dockerd: `/web`.
    pub name: String,
    pub created: DateTime<Utc>,
    pub path: String,
    pub args: Vec<String>,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    /// Image ID (`sha256:<config digest>`).
    pub image: String,
    pub state: State,
    pub log_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub resolv_conf_path: String,
    pub snapshot_key: String,
    pub restart_count: u32,
    /// Volumes, binds and tmpfs mounts, resolved at create (dockerd's `MountPoints`).
    #[serde(default)]
    pub mount_points: Vec<crate::volumes::MountPoint>,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}
