//! Health checks (`--health-cmd` and friends, the image's `HEALTHCHECK`): dockerd's
//! health monitor, running the probe as an exec in the container.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `State.Health` in inspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

/// One probe's result, as dockerd keeps the last five.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i64,
    pub output: String,
}

/// The word `docker ps` shows after "Up ...": dockerd's `health: starting` while starting.
pub fn ps_word(status: &str) -> String {
    match status {
        "starting" => "health: starting".into(),
        other => other.into(),
    }
}
