//! `(method, path, query)` → a typed [`Route`], with no I/O, so routing is unit-tested
//! without sockets. Bodies are decoded by the handlers with [`decode_json`].

use chrono::{DateTime, Utc};
use http::Method;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::filters::ContainerFilters;
use super::version::{split_version, ApiVersion};

/// What the client asked for, with its query parameters parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping {
        head: bool,
    },
    Version,
    Info,
    ImageCreate(ImageCreate),
    ImageInspect {
        name: String,
    },
    ImageTag {
        name: String,
        repo: String,
        tag: String,
    },
    ImageRemove {
        name: String,
        force: bool,
    },
    /// `POST /containers/prune?filters=` (raw; parsed by the handler).
    ContainerPrune {
        filters: String,
    },
    /// `POST /auth` (`docker login`).
    Auth,
    /// `POST /images/{name}/push?tag=` (`docker push`).
    ImagePush {
        name: String,
        tag: String,
    },
    /// `GET /events?since=&until=&filters=` (raw; parsed by the handler).
    Events {
        since: String,
        until: String,
        filters: String,
    },
    /// `GET /networks?filters=` (raw; parsed by the handler).
    NetworkList {
        filters: String,
    },
    NetworkInspect {
        id: String,
    },
    NetworkCreate,
    NetworkRemove {
        id: String,
    },
    NetworkPrune {
        filters: String,
    },
    NetworkConnect {
        id: String,
    },
    NetworkDisconnect {
        id: String,
    },
    ContainerCreate {
        name: Option<String>,
    },
    ContainerList {
        all: bool,
        limit: Option<usize>,
        filters: ContainerFilters,
    },
    ContainerInspect {
        id: String,
    },
    ContainerStart {
        id: String,
    },
    ContainerStop {
        id: String,
        timeout: Option<i64>,
        signal: Option<String>,
    },
    ContainerRestart {
        id: String,
        timeout: Option<i64>,
        signal: Option<String>,
    },
    ContainerKill {
        id: String,
        signal: Option<String>,
    },
    ContainerRemove {
        id: String,
        force: bool,
        /// `v`: remove the container's anonymous volumes too.
        volumes: bool,
    },
    ContainerPause {
        id: String,
    },
    ContainerUnpause {
        id: String,
    },
    ContainerRename {
        id: String,
        name: String,
    },
    /// `POST /containers/{id}/update` (`docker update`).
    ContainerUpdate {
        id: String,
    },
    /// `GET /volumes?filters=` (raw; parsed by the handler).
    VolumeList {
        filters: String,
    },
    VolumeCreate,
    VolumeInspect {
        name: String,
    },
    VolumeRemove {
        name: String,
        force: bool,
    },
    VolumePrune {
        filters: String,
        /// API 1.42+: only anonymous volumes unless the `all` filter says otherwise.
        anonymous_only: bool,
    },
    /// `GET /system/df?type=...`: the object types asked for (none: all); API < 1.42
    /// ignores `type` and gets `BuilderSize`, API < 1.44 gets images' `VirtualSize`.
    SystemDf {
        types: Vec<String>,
        before_1_42: bool,
        before_1_44: bool,
    },
    ContainerWait {
        id: String,
        condition: WaitCondition,
    },
    ContainerAttach {
        id: String,
        opts: AttachOptions,
    },
    ContainerLogs {
        id: String,
        opts: LogOptions,
    },
    ExecCreate {
        id: String,
    },
    ExecStart {
        id: String,
    },
    ExecInspect {
        id: String,
    },
    /// commit, history, build, save/load, prune (`super::images_api`).
    Images(super::images_api::ImageRoute),
    /// cp, export, diff (`super::archive_api`).
    Archive(super::archive_api::ArchiveRoute),
    /// `POST /containers/{id}/resize?h=&w=`.
    ContainerResize {
        id: String,
        height: u32,
        width: u32,
    },
    /// `POST /exec/{id}/resize?h=&w=`.
    ExecResize {
        id: String,
        height: u32,
        width: u32,
    },
    /// `GET /containers/{id}/top?ps_args=`.
    ContainerTop {
        id: String,
        ps_args: String,
    },
    /// `GET /containers/{id}/stats?stream=&one-shot=`.
    ContainerStats {
        id: String,
        stream: bool,
        one_shot: bool,
    },
}

/// `POST /images/create`: dockerd pulls with `fromImage` and imports with `fromSrc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCreate {
    Pull {
        image: String,
        tag: String,
    },
    Import {
        src: String,
        repo: String,
        tag: String,
        /// `docker import -m`: the history comment.
        message: String,
        /// `docker import --change` (repeated `changes`).
        changes: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    pub stream: bool,
    pub logs: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// `detachKeys`: empty means dockerd's default (ctrl-p,ctrl-q).
    pub detach_keys: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    /// `None` means all lines (`tail=all` or absent).
    pub tail: Option<usize>,
    /// Only entries at or after / at or before these times (the CLI sends UNIX times).
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A parsed request: the API version it was made with and the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub version: ApiVersion,
    pub route: Route,
}

pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Parsed, ApiError> {
    let (version, rest) = split_version(path)?;
    let q = Query::new(query.unwrap_or(""));
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    if let Some(r) = super::images_api::route(method, &segs, query.unwrap_or(""))? {
        return Ok(Parsed {
            version,
            route: Route::Images(r),
        });
    }
    if let Some(r) = super::archive_api::route(method, &segs, query.unwrap_or(""))? {
        return Ok(Parsed {
            version,
            route: Route::Archive(r),
        });
    }
    let mut route = route(method, rest, &segs, &q)?;
    let v1_42 = ApiVersion {
        major: 1,
        minor: 42,
    };
    if let Route::VolumePrune { anonymous_only, .. } = &mut route {
        *anonymous_only = version >= v1_42;
    }
    if let Route::SystemDf {
        before_1_42,
        before_1_44,
        ..
    } = &mut route
    {
        *before_1_42 = version < v1_42;
        *before_1_44 = version
            < ApiVersion {
                major: 1,
                minor: 44,
            };
    }
    Ok(Parsed { version, route })
}

fn route(method: &Method, rest: &str, segs: &[&str], q: &Query) -> Result<Route, ApiError> {
    let m = method.clone();
    let id = |s: &str| s.to_string();
    let r = match (m, segs) {
        (Method::GET, ["_ping"]) => Route::Ping { head: false },
        (Method::HEAD, ["_ping"]) => Route::Ping { head: true },
        (Method::GET, ["version"]) => Route::Version,
        (Method::GET, ["info"]) => Route::Info,
        (Method::POST, ["images", "create"]) => Route::ImageCreate(image_create(q)?),
        (Method::POST, ["auth"]) => Route::Auth,
        (Method::GET, ["events"]) => Route::Events {
            since: q.get("since").unwrap_or("").to_string(),
            until: q.get("until").unwrap_or("").to_string(),
            filters: q.get("filters").unwrap_or("").to_string(),
        },
        // Image names contain slashes: everything between /images/ and /json is the name.
        (Method::GET, ["images", .., "json"]) if segs.len() > 2 => Route::ImageInspect {
            name: rest["/images/".len()..rest.len() - "/json".len()].to_string(),
        },
        (Method::POST, ["images", .., "tag"]) if segs.len() > 2 => Route::ImageTag {
            name: rest["/images/".len()..rest.len() - "/tag".len()].to_string(),
            repo: q.get("repo").unwrap_or("").to_string(),
            tag: q.get("tag").unwrap_or("").to_string(),
        },
        (Method::POST, ["images", .., "push"]) if segs.len() > 2 => Route::ImagePush {
            name: rest["/images/".len()..rest.len() - "/push".len()].to_string(),
            tag: q.get("tag").unwrap_or("").to_string(),
        },
        (Method::DELETE, ["images", _, ..]) => Route::ImageRemove {
            name: rest["/images/".len()..].to_string(),
            force: q.bool("force"),
        },
        (Method::POST, ["containers", "prune"]) => Route::ContainerPrune {
            filters: q.get("filters").unwrap_or("").to_string(),
        },
        (Method::POST, ["containers", "create"]) => Route::ContainerCreate {
            name: q.get("name").filter(|n| !n.is_empty()).map(str::to_string),
        },
        (Method::GET, ["containers", "json"]) => Route::ContainerList {
            all: q.bool("all"),
            limit: q
                .get("limit")
                .and_then(|l| l.parse::<i64>().ok())
                .and_then(|l| usize::try_from(l).ok().filter(|l| *l > 0)),
            filters: ContainerFilters::parse(q.get("filters").unwrap_or(""))?,
        },
        (Method::GET, ["containers", c, "json"]) => Route::ContainerInspect { id: id(c) },
        (Method::POST, ["containers", c, "start"]) => Route::ContainerStart { id: id(c) },
        (Method::POST, ["containers", c, "restart"]) => Route::ContainerRestart {
            id: id(c),
            timeout: q.int("t")?,
            signal: q
                .get("signal")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        },
        (Method::POST, ["containers", c, "stop"]) => Route::ContainerStop {
            id: id(c),
            timeout: q.int("t")?,
            signal: q
                .get("signal")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        },
        (Method::POST, ["containers", c, "kill"]) => Route::ContainerKill {
            id: id(c),
            signal: q
                .get("signal")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        },
        (Method::POST, ["containers", c, "pause"]) => Route::ContainerPause { id: id(c) },
        (Method::POST, ["containers", c, "unpause"]) => Route::ContainerUnpause { id: id(c) },
        (Method::POST, ["containers", c, "rename"]) => Route::ContainerRename {
            id: id(c),
            name: q.get("name").unwrap_or("").to_string(),
        },
        (Method::POST, ["containers", c, "update"]) => Route::ContainerUpdate { id: id(c) },
        (Method::DELETE, ["containers", c]) => Route::ContainerRemove {
            id: id(c),
            force: q.bool("force"),
            volumes: q.bool("v"),
        },
        (Method::GET, ["volumes"]) => Route::VolumeList {
            filters: q.get("filters").unwrap_or("").to_string(),
        },
        (Method::POST, ["volumes", "create"]) => Route::VolumeCreate,
        (Method::POST, ["volumes", "prune"]) => Route::VolumePrune {
            filters: q.get("filters").unwrap_or("").to_string(),
            anonymous_only: true,
        },
        (Method::GET, ["volumes", v]) => Route::VolumeInspect { name: id(v) },
        (Method::DELETE, ["volumes", v]) => Route::VolumeRemove {
            name: id(v),
            force: q.bool("force"),
        },
        (Method::GET, ["system", "df"]) => Route::SystemDf {
            types: q.all("type"),
            before_1_42: false,
            before_1_44: false,
        },
        (Method::POST, ["containers", c, "wait"]) => Route::ContainerWait {
            id: id(c),
            condition: wait_condition(q.get("condition"))?,
        },
        (Method::POST, ["containers", c, "attach"]) => Route::ContainerAttach {
            id: id(c),
            opts: AttachOptions {
                stream: q.bool("stream"),
                logs: q.bool("logs"),
                stdin: q.bool("stdin"),
                stdout: q.bool("stdout"),
                stderr: q.bool("stderr"),
                detach_keys: q.get("detachKeys").unwrap_or("").to_string(),
            },
        },
        (Method::POST, ["containers", c, "resize"]) => {
            let (height, width) = dimensions(q)?;
            Route::ContainerResize {
                id: id(c),
                height,
                width,
            }
        }
        (Method::POST, ["exec", e, "resize"]) => {
            let (height, width) = dimensions(q)?;
            Route::ExecResize {
                id: id(e),
                height,
                width,
            }
        }
        (Method::GET, ["containers", c, "top"]) => Route::ContainerTop {
            id: id(c),
            ps_args: q.get("ps_args").unwrap_or("").to_string(),
        },
        (Method::GET, ["containers", c, "stats"]) => Route::ContainerStats {
            id: id(c),
            stream: q.get("stream").is_none_or(|_| q.bool("stream")),
            one_shot: q.bool("one-shot"),
        },
        (Method::GET, ["containers", c, "logs"]) => Route::ContainerLogs {
            id: id(c),
            opts: log_options(q)?,
        },
        (Method::POST, ["containers", c, "exec"]) => Route::ExecCreate { id: id(c) },
        (Method::POST, ["exec", e, "start"]) => Route::ExecStart { id: id(e) },
        (Method::GET, ["exec", e, "json"]) => Route::ExecInspect { id: id(e) },
        (Method::GET, ["networks"]) => Route::NetworkList {
            filters: q.get("filters").unwrap_or("").to_string(),
        },
        (Method::POST, ["networks", "create"]) => Route::NetworkCreate,
        (Method::POST, ["networks", "prune"]) => Route::NetworkPrune {
            filters: q.get("filters").unwrap_or("").to_string(),
        },
        (Method::GET, ["networks", n]) => Route::NetworkInspect { id: id(n) },
        (Method::DELETE, ["networks", n]) => Route::NetworkRemove { id: id(n) },
        (Method::POST, ["networks", n, "connect"]) => Route::NetworkConnect { id: id(n) },
        (Method::POST, ["networks", n, "disconnect"]) => Route::NetworkDisconnect { id: id(n) },
        _ => return Err(ApiError::page_not_found()),
    };
    Ok(r)
}

fn image_create(q: &Query) -> Result<ImageCreate, ApiError> {
    let get = |k| q.get(k).unwrap_or("").to_string();
    if let Some(image) = q.get("fromImage").filter(|s| !s.is_empty()) {
        return Ok(ImageCreate::Pull {
            image: image.to_string(),
            tag: get("tag"),
        });
    }
    match q.get("fromSrc").filter(|s| !s.is_empty()) {
        Some(src) => Ok(ImageCreate::Import {
            src: src.to_string(),
            repo: get("repo"),
            tag: get("tag"),
            message: get("message"),
            changes: q.all("changes"),
        }),
        None => Err(ApiError::bad_request(
            "either fromImage or fromSrc is required",
        )),
    }
}

/// `h` and `w` of a resize, checked as dockerd's Atoi does.
fn dimensions(q: &Query) -> Result<(u32, u32), ApiError> {
    let get = |k| crate::daemon::parse_dimension(q.get(k)).map_err(ApiError::bad_request);
    Ok((get("h")?, get("w")?))
}

fn wait_condition(value: Option<&str>) -> Result<WaitCondition, ApiError> {
    match value.unwrap_or("") {
        "" | "not-running" => Ok(WaitCondition::NotRunning),
        "next-exit" => Ok(WaitCondition::NextExit),
        "removed" => Ok(WaitCondition::Removed),
        other => Err(ApiError::bad_request(format!(
            "invalid condition: \"{other}\""
        ))),
    }
}

fn log_options(q: &Query) -> Result<LogOptions, ApiError> {
    let tail = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => match n.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for \"tail\": {n:?}"
                )))
            }
        },
    };
    let opts = LogOptions {
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        follow: q.bool("follow"),
        timestamps: q.bool("timestamps"),
        tail,
        since: unix_time(q, "since")?,
        until: unix_time(q, "until")?,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    Ok(opts)
}

/// docker's `seconds[.nanoseconds]` timestamps; absent or 0 means no bound.
fn unix_time(q: &Query, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = q.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("invalid value for \"{key}\": {v:?}"));
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse().map_err(|_| bad())?
    };
    if secs == 0 && nanos == 0 {
        return Ok(None);
    }
    DateTime::from_timestamp(secs, nanos)
        .map(Some)
        .ok_or_else(bad)
}

/// Decodes a JSON request body the way dockerd reports failures: 400 "invalid JSON: ...".
pub fn decode_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// Decoded query string. Later keys win, like Go's `Form.Get` returns the first: dockerd
/// clients never repeat keys, so either is fine.
struct Query(Vec<(String, String)>);

impl Query {
    fn new(raw: &str) -> Self {
        Self(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// moby's `httputils.BoolValue`: anything but "", "0", "no", "false", "none" is true.
    fn bool(&self, key: &str) -> bool {
        let v = self.get(key).unwrap_or("").trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for \"{key}\": {v:?}"))),
        }
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
