//! Instructions that only change the image config (ENV, LABEL, CMD, ENTRYPOINT, EXPOSE,
//! VOLUME, USER, WORKDIR, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER), shared by
//! the builder and by `docker commit --change` / `docker import --change`.

use serde_json::{json, Map, Value};

use super::dockerfile::{Args, Instruction};
use super::words::{self, Vars};
use super::BuildError;
use crate::types::{ImageRuntimeConfig, StrSlice};

pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// What metadata steps track besides the config itself.
#[derive(Debug, Clone, Default)]
pub struct MetaState {
    /// CMD was set in this stage: a later ENTRYPOINT keeps it.
    pub cmd_set: bool,
    pub author: Option<String>,
}

fn invalid(message: String) -> BuildError {
    BuildError::Invalid { message }
}

fn upper(i: &Instruction) -> String {
    i.keyword.to_ascii_uppercase()
}

/// The `SHELL` in effect for shell-form commands.
pub fn shell_of(cfg: &ImageRuntimeConfig) -> Vec<String> {
    match cfg.extra.get("Shell").and_then(|v| v.as_array()) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    }
}

/// A RUN/CMD/ENTRYPOINT argument list: the exec form as is, the shell form behind SHELL.
pub fn command(i: &Instruction, cfg: &ImageRuntimeConfig) -> Vec<String> {
    match &i.args {
        Args::Json(v) => v.clone(),
        Args::Shell(s) => {
            let mut v = shell_of(cfg);
            v.push(s.clone());
            v
        }
    }
}

fn map_entry<'a>(cfg: &'a mut ImageRuntimeConfig, key: &str) -> &'a mut Map<String, Value> {
    let slot = cfg
        .extra
        .entry(key.to_string())
        .or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("just made an object")
}

/// Go duration strings as HEALTHCHECK flags take them (`30s`, `1m30s`, `500ms`), in ns.
/// A bad one is dockerd's `time: invalid duration "x"` (the flag is not named).
fn duration_ns(s: &str) -> Result<i64, BuildError> {
    let bad = || invalid(format!("time: invalid duration \"{s}\""));
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..n].parse().map_err(|_| bad())?;
        let unit_len = rest[n..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - n);
        let mult = match &rest[n..n + unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * mult;
        rest = &rest[n + unit_len..];
    }
    Ok(total as i64)
}

pub(crate) fn healthcheck(i: &Instruction) -> Result<Value, BuildError> {
    let (kind, rest) = match &i.args {
        Args::Shell(s) => {
            let s = s.trim();
            let (k, r) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
            (k.to_ascii_uppercase(), Args::Shell(r.trim().to_string()))
        }
        Args::Json(_) => return Err(invalid("HEALTHCHECK requires CMD or NONE".into())),
    };
    if kind == "NONE" {
        if !rest.is_empty() || !i.flags.is_empty() {
            return Err(invalid("HEALTHCHECK NONE takes no arguments".into()));
        }
        return Ok(json!({"Test": ["NONE"]}));
    }
    if kind != "CMD" {
        return Err(invalid(format!(
            "Unknown type {kind:?} in HEALTHCHECK (try CMD)"
        )));
    }
    let rest = super::dockerfile::instruction(
        i.line,
        &format!(
            "CMD {}",
            match &rest {
                Args::Shell(s) => s.clone(),
                Args::Json(_) => String::new(),
            }
        ),
    )?;
    let test = match rest.args {
        Args::Json(v) => std::iter::once("CMD".to_string())
            .chain(v)
            .collect::<Vec<_>>(),
        Args::Shell(s) => vec!["CMD-SHELL".to_string(), s],
    };
    let mut hc = json!({ "Test": test });
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = i.flag(flag) {
            hc[key] = json!(duration_ns(v)?);
        }
    }
    if let Some(v) = i.flag("retries") {
        let n: i64 = v
            .parse()
            .map_err(|_| invalid(format!("invalid value for --retries: {v:?}")))?;
        hc["Retries"] = json!(n);
    }
    for (k, _) in &i.flags {
        if !matches!(
            k.as_str(),
            "interval" | "timeout" | "start-period" | "start-interval" | "retries"
        ) {
            return Err(invalid(format!("Unknown flag: {k}")));
        }
    }
    Ok(hc)
}

/// Applies one metadata instruction. Returns false when `i` is not a metadata step.
pub fn apply(
    i: &Instruction,
    cfg: &mut ImageRuntimeConfig,
    st: &mut MetaState,
    vars: &Vars,
) -> Result<bool, BuildError> {
    let raw = match &i.args {
        Args::Shell(s) => s.clone(),
        Args::Json(v) => v.join(" "),
    };
    let need_args = |n: &str| {
        if i.args.is_empty() {
            Err(invalid(format!("{n} requires at least one argument")))
        } else {
            Ok(())
        }
    };
    match i.keyword.as_str() {
        "env" => {
            need_args("ENV")?;
            for (k, v) in words::pairs(&raw, vars, "env")? {
                let prefix = format!("{k}=");
                cfg.env.retain(|e| !e.starts_with(&prefix) && e != &k);
                cfg.env.push(format!("{k}={v}"));
            }
        }
        "label" => {
            need_args("LABEL")?;
            for (k, v) in words::pairs(&raw, vars, "label")? {
                cfg.labels.insert(k, v);
            }
        }
        "maintainer" => {
            need_args("MAINTAINER")?;
            st.author = Some(words::expand(&raw, vars)?);
        }
        "cmd" => {
            cfg.cmd = StrSlice(Some(command(i, cfg)));
            st.cmd_set = true;
        }
        "entrypoint" => {
            cfg.entrypoint = match &i.args {
                Args::Shell(s) if s.trim().is_empty() => StrSlice(None),
                _ => StrSlice(Some(command(i, cfg))),
            };
            if !st.cmd_set {
                cfg.cmd = StrSlice(None);
            }
        }
        "expose" => {
            need_args("EXPOSE")?;
            for p in words::words(&raw, vars)? {
                let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
                    return Err(invalid(format!("Invalid proto: {proto}")));
                }
                if port.is_empty() || !port.split('-').all(|n| n.parse::<u16>().is_ok()) {
                    return Err(invalid(format!("Invalid containerPort: {p}")));
                }
                map_entry(cfg, "ExposedPorts")
                    .insert(format!("{port}/{}", proto.to_ascii_lowercase()), json!({}));
            }
        }
        "volume" => {
            let vols = match &i.args {
                Args::Json(v) => v.clone(),
                Args::Shell(s) => words::words(s, vars)?,
            };
            if vols.is_empty() || vols.iter().any(|v| v.trim().is_empty()) {
                return Err(invalid(
                    "VOLUME specified can not be an empty string".into(),
                ));
            }
            for v in vols {
                map_entry(cfg, "Volumes").insert(v, json!({}));
            }
        }
        "user" => {
            need_args("USER")?;
            cfg.user = words::expand(raw.trim(), vars)?;
        }
        "workdir" => {
            need_args("WORKDIR")?;
            let dir = words::expand(raw.trim(), vars)?;
            cfg.working_dir = join_workdir(&cfg.working_dir, &dir);
        }
        "stopsignal" => {
            need_args("STOPSIGNAL")?;
            let sig = words::expand(raw.trim(), vars)?;
            crate::daemon::parse_signal(&sig)
                .map_err(|_| invalid(format!("Invalid signal: {sig}")))?;
            cfg.stop_signal = Some(sig);
        }
        "healthcheck" => {
            cfg.extra.insert("Healthcheck".into(), healthcheck(i)?);
        }
        "shell" => match &i.args {
            Args::Json(v) if !v.is_empty() => {
                cfg.extra.insert("Shell".into(), json!(v));
            }
            _ => {
                return Err(invalid(
                    "SHELL requires the arguments to be in JSON form".into(),
                ))
            }
        },
        "onbuild" => {
            need_args("ONBUILD")?;
            let inner = raw.trim();
            check_onbuild(inner)?;
            let slot = cfg
                .extra
                .entry("OnBuild".to_string())
                .or_insert_with(|| json!([]));
            if let Some(a) = slot.as_array_mut() {
                a.push(json!(inner));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Refuses the triggers dockerd refuses, with its words.
pub fn check_onbuild(trigger: &str) -> Result<(), BuildError> {
    let kw = trigger
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match kw.as_str() {
        "ONBUILD" => Err(invalid(
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
        )),
        "FROM" | "MAINTAINER" => Err(invalid(format!("{kw} isn't allowed as an ONBUILD trigger"))),
        _ => Ok(()),
    }
}

/// WORKDIR semantics: absolute replaces, relative joins the previous one.
pub fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{}/{dir}", base.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `docker commit --change` / `docker import --change`: only these instructions apply
/// (dockerd's `validCommitCommands`).
pub fn parse_changes(changes: &[String]) -> Result<Vec<Instruction>, BuildError> {
    let mut out = Vec::new();
    for c in changes.iter().filter(|c| !c.trim().is_empty()) {
        let i = super::dockerfile::instruction(1, c.trim()).map_err(|e| match e {
            BuildError::Parse { message, .. } => {
                invalid(format!("dockerfile parse error line 1: {message}"))
            }
            e => e,
        })?;
        if !matches!(
            i.keyword.as_str(),
            "cmd"
                | "entrypoint"
                | "env"
                | "expose"
                | "label"
                | "onbuild"
                | "stopsignal"
                | "user"
                | "volume"
                | "workdir"
                | "healthcheck"
                | "shell"
        ) {
            return Err(invalid(format!(
                "{} is not a valid change command",
                upper(&i)
            )));
        }
        out.push(i);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::instruction;

    fn run(lines: &[&str]) -> ImageRuntimeConfig {
        let mut cfg = ImageRuntimeConfig {
            cmd: StrSlice(Some(vec!["sh".into()])),
            ..Default::default()
        };
        let mut st = MetaState::default();
        let vars = Vars::default();
        for l in lines {
            assert!(apply(&instruction(1, l).unwrap(), &mut cfg, &mut st, &vars).unwrap());
        }
        cfg
    }

    #[test]
    fn config_instructions() {
        let c = run(&[
            "ENV A=1 B=\"x y\"",
            "ENV A 2",
            "WORKDIR /app",
            "WORKDIR sub/..//w",
            "EXPOSE 80 53/udp",
            "ENTRYPOINT [\"/bin/app\"]",
            "HEALTHCHECK --interval=1m30s --retries=2 CMD true",
            "STOPSIGNAL SIGUSR1",
        ]);
        assert_eq!(c.env, vec!["B=x y", "A=2"]);
        assert_eq!(c.working_dir, "/app/w");
        assert!(c.extra["ExposedPorts"]["53/udp"].is_object());
        assert_eq!(c.entrypoint.as_slice(), ["/bin/app"]);
        assert!(c.cmd.0.is_none(), "ENTRYPOINT resets an inherited CMD");
        assert_eq!(c.extra["Healthcheck"]["Interval"], 90_000_000_000i64);
        assert_eq!(c.extra["Healthcheck"]["Test"], json!(["CMD-SHELL", "true"]));
        let c = run(&["SHELL [\"/bin/bash\", \"-x\"]", "CMD echo hi"]);
        assert_eq!(c.cmd.as_slice(), ["/bin/bash", "-x", "echo hi"]);
        assert!(parse_changes(&["RUN true".into()]).is_err());
        assert!(parse_changes(&["EXPOSE 80".into()]).is_ok());
    }
}
