//! The JSON dockerd answers for inspect and list calls, built from records.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::images::ImageView;
use crate::record::{ContainerRecord, Status};

/// Go's zero time, which dockerd prints for "never".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || ZERO_TIME.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Nanos, true),
    )
}

/// `docker ps` status text.
pub fn status_text(rec: &ContainerRecord, now: DateTime<Utc>) -> String {
    let s = &rec.state;
    if s.restarting {
        return format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            human_duration(now - s.finished_at.unwrap_or(now))
        );
    }
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let up = format!("Up {}", human_duration(now - s.started_at.unwrap_or(now)));
            if s.paused {
                format!("{up} (Paused)")
            } else if let Some(h) = &s.health {
                format!("{up} ({})", super::health::ps_word(&h.status))
            } else {
                up
            }
        }
        Status::Exited if s.finished_at.is_none() => format!("Exited ({})", s.exit_code),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human_duration(now - s.finished_at.unwrap_or(now))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

/// `GET /containers/json` entry.
pub fn container_summary(rec: &ContainerRecord, now: DateTime<Utc>) -> Value {
    // dockerd quotes the arguments that have a space, and nothing else.
    let mut command = rec.path.clone();
    for a in &rec.args {
        command.push(' ');
        if a.contains(' ') {
            command.push_str(&format!("'{a}'"));
        } else {
            command.push_str(a);
        }
    }
    json!({
        "Id": rec.id,
        "Names": [rec.name],
        "Image": rec.config.image,
        "ImageID": rec.image,
        "Command": command,
        "Created": rec.created.timestamp(),
        "Ports": [],
        "Labels": rec.config.labels,
        "State": rec.state.status_str(),
        "Status": status_text(rec, now),
        "HostConfig": {"NetworkMode": if rec.host_config.network_mode.is_empty() { "default" } else { &rec.host_config.network_mode }},
        "NetworkSettings": {"Networks": {}},
        "Mounts": mounts(rec),
    })
}

/// dockerd's `Mounts`: the container's mount points in destination order.
fn mounts(rec: &ContainerRecord) -> Value {
    let mut list: Vec<&crate::volumes::MountPoint> = rec.mount_points.iter().collect();
    list.sort_by(|a, b| a.destination.cmp(&b.destination));
    Value::Array(list.iter().map(|m| m.inspect()).collect())
}

/// `GET /containers/{id}/json`.
pub fn container_inspect(rec: &ContainerRecord) -> Value {
    let mut v = inspect_base(rec);
    if let Some(h) = &rec.state.health {
        v["State"]["Health"] = json!(h);
    }
    v
}

fn inspect_base(rec: &ContainerRecord) -> Value {
    let s = &rec.state;
    json!({
        "Id": rec.id,
        "Created": time(Some(rec.created)),
        "Path": rec.path,
        "Args": rec.args,
        "State": {
            "Status": s.status_str(),
            "Running": s.is_up(),
            "Paused": s.paused && s.status.is_running(),
            "Restarting": s.restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": time(s.started_at),
            "FinishedAt": time(s.finished_at),
        },
        "Image": rec.image,
        "ResolvConfPath": rec.resolv_conf_path,
        "HostnamePath": rec.hostname_path,
        "HostsPath": rec.hosts_path,
        "LogPath": rec.log_path,
        "Name": rec.name,
        "RestartCount": rec.restart_count,
        "Driver": "overlayfs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": super::inspect_defaults::host_config(&rec.host_config),
        "GraphDriver": {"Name": "overlayfs", "Data": null},
        "Mounts": mounts(rec),
        "Config": super::inspect_defaults::config(&rec.config),
        "NetworkSettings": {"Networks": {}, "Ports": {}, "SandboxKey": ""},
    })
}

/// `GET /images/json` entry.
pub fn image_summary(img: &ImageView) -> Value {
    json!({
        "Id": img.id,
        "ParentId": "",
        "RepoTags": img.repo_tags(),
        "RepoDigests": img.repo_digests(),
        "Created": created(img).map_or(0, |t| t.timestamp()),
        "Size": img.size(),
        "SharedSize": -1,
        "Labels": img.runtime_config().labels,
        "Containers": -1,
    })
}

fn created(img: &ImageView) -> Option<DateTime<Utc>> {
    img.config
        .created
        .as_deref()
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.with_timezone(&Utc))
        .or(img.created_at)
}

/// `GET /images/{name}/json`.
pub fn image_inspect(img: &ImageView) -> Value {
    json!({
        "Id": img.id,
        "RepoTags": img.repo_tags(),
        "RepoDigests": img.repo_digests(),
        "Parent": "",
        "Comment": img.config.extra.get("comment").cloned().unwrap_or(json!("")),
        "Created": time(created(img)),
        "DockerVersion": img.config.extra.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": img.config.extra.get("author").cloned().unwrap_or(json!("")),
        "Config": img.config.config,
        "Architecture": img.config.architecture,
        "Os": img.config.os,
        "Size": img.size(),
        "GraphDriver": {"Name": "overlayfs", "Data": null},
        "RootFS": {"Type": "layers", "Layers": img.config.rootfs.diff_ids},
        "Metadata": {"LastTagTime": time(img.created_at)},
    })
}

/// docker's `units.HumanDuration` ("3 seconds", "About a minute", "2 hours").
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    let mins = d.num_minutes();
    let hours = d.num_hours();
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if mins == 1 {
        "About a minute".into()
    } else if mins < 60 {
        format!("{mins} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let s = chrono::Duration::seconds;
        assert_eq!(human_duration(s(0)), "Less than a second");
        assert_eq!(human_duration(s(3)), "3 seconds");
        assert_eq!(human_duration(s(61)), "About a minute");
        assert_eq!(human_duration(s(600)), "10 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
    }
}
