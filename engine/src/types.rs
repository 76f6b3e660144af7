//! Docker API JSON shapes the engine reads and keeps (moby `api/types/container`), and the
//! image config it reads from highd's content store. Unknown fields are kept in `extra` so
//! inspect returns what the client sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Treats JSON `null` like an absent field (Go clients send `null` for nil slices).
pub(crate) fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// docker's `StrSlice`: a JSON string or an array of strings (or null).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StrSlice(pub Option<Vec<String>>);

impl<'de> Deserialize<'de> for StrSlice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(Self(Option::<Either>::deserialize(d)?.map(|e| match e {
            Either::One(s) => vec![s],
            Either::Many(v) => v,
        })))
    }
}

impl StrSlice {
    pub fn as_slice(&self) -> &[String] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// `Config` of a container create request (the top-level fields of the body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<String>,
    pub cmd: StrSlice,
    pub image: String,
    pub working_dir: String,
    pub entrypoint: StrSlice,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub network_mode: String,
    pub auto_remove: bool,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub shm_size: i64,
    pub memory: i64,
    #[serde(deserialize_with = "nullable")]
    pub extra_hosts: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub restart_policy: crate::daemon::RestartPolicy,
    /// `--init`; `None` takes the engine's default.
    pub init: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Body of `POST /containers/create`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    #[serde(flatten)]
    pub config: ContainerConfig,
    #[serde(rename = "HostConfig", deserialize_with = "nullable")]
    pub host_config: HostConfig,
    #[serde(rename = "NetworkingConfig")]
    pub networking_config: Option<Value>,
}

/// Body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub user: String,
    pub privileged: bool,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub detach: bool,
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<String>,
    pub working_dir: String,
    pub cmd: StrSlice,
    pub detach_keys: String,
    /// `[height, width]` of the CLI's terminal (API ≥ 1.42).
    pub console_size: Option<Vec<u64>>,
}

/// Body of `POST /exec/{id}/start`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartConfig {
    pub detach: bool,
    pub tty: bool,
}

/// The OCI/docker image config blob, as far as the engine uses it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ImageRuntimeConfig>,
    pub rootfs: RootFs,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageRuntimeConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "is_none_slice")]
    pub entrypoint: StrSlice,
    #[serde(skip_serializing_if = "is_none_slice")]
    pub cmd: StrSlice,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_none_slice(s: &StrSlice) -> bool {
    s.0.is_none()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_from_the_docker_cli() {
        let body = r#"{"Hostname":"","User":"","AttachStdout":true,"Tty":false,
            "Env":null,"Cmd":["echo","hello"],"Image":"busybox","Entrypoint":null,
            "Labels":{},"OnBuild":null,
            "HostConfig":{"Binds":null,"NetworkMode":"default","AutoRemove":true,
              "CapAdd":null,"ExtraHosts":null,"LogConfig":{"Type":"","Config":{}}},
            "NetworkingConfig":{"EndpointsConfig":{}}}"#;
        let r: CreateRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.config.cmd.as_slice(), ["echo", "hello"]);
        assert!(r.config.entrypoint.0.is_none());
        assert!(r.config.env.is_empty());
        assert!(r.host_config.auto_remove);
        assert_eq!(r.host_config.network_mode, "default");
        assert!(r.config.extra.contains_key("OnBuild"));
        assert!(!r.config.extra.contains_key("HostConfig"));
        assert!(r.host_config.extra.contains_key("LogConfig"));
    }

    #[test]
    fn str_slice_accepts_a_string() {
        let c: ContainerConfig = serde_json::from_str(r#"{"Cmd":"sh"}"#).unwrap();
        assert_eq!(c.cmd.as_slice(), ["sh"]);
    }
}
