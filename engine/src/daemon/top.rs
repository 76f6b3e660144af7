//! `docker top`: the container's pids from highd (ListPids), shown through the host's
//! `ps` the way dockerd does it (`ps <ps_args> -q <pids>`, retried without `-q`, then
//! only the lines of the container's processes kept).

use serde::Serialize;

use super::{Daemon, DaemonError, DaemonResult};
use crate::backend::Backend;

/// dockerd's `ContainerTopOKBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopBody {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopError {
    /// Refused arguments (400).
    #[error("{0}")]
    BadArgs(String),
    /// `ps` failed or printed something unusable (500).
    #[error("{0}")]
    Ps(String),
}

/// moby's `validatePSArgs`: a `-o` column renamed to something starting with `PID` would
/// hide the real PID column.
fn validate_ps_args(args: &str) -> Result<(), TopError> {
    let words: Vec<&str> = args.split_ascii_whitespace().collect();
    for w in words.iter().skip(1) {
        if let Some((k, v)) = w.split_once('=') {
            if v.starts_with("PID") && k != "pid" {
                return Err(TopError::BadArgs(format!(
                    "specifying \"{k}={v}\" is not allowed"
                )));
            }
        }
    }
    Ok(())
}

/// moby's `parsePSOutput`: the PID column located by title, the lines of `pids` kept
/// (and the thread lines, `-`, that follow one of them), overhanging fields merged into
/// the last column.
pub fn parse_ps_output(output: &str, pids: &[u32]) -> Result<TopBody, TopError> {
    let mut lines = output.split('\n');
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect();
    let pid_index = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| TopError::Ps("Couldn't find PID field in ps output".into()))?;
    let mut body = TopBody {
        titles,
        processes: Vec::new(),
    };
    let mut in_container = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(pid) = fields.get(pid_index) else {
            continue;
        };
        if *pid == "-" {
            if in_container {
                push_row(&mut body, &fields);
            }
            continue;
        }
        let p: u32 = pid
            .parse()
            .map_err(|e| TopError::Ps(format!("Unexpected pid '{pid}': {e}")))?;
        in_container = pids.contains(&p);
        if in_container {
            push_row(&mut body, &fields);
        }
    }
    Ok(body)
}

fn push_row(body: &mut TopBody, fields: &[&str]) {
    let n = body.titles.len();
    let mut row: Vec<String> = fields.iter().take(n - 1).map(|f| f.to_string()).collect();
    row.push(fields.get(n - 1..).unwrap_or(&[]).join(" "));
    body.processes.push(row);
}

async fn run_ps(args: &[String]) -> Result<String, String> {
    let out = tokio::process::Command::new("ps")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ps: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // The first line of stderr says why ps failed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("").trim();
    Err(if first.is_empty() {
        format!("ps: {}", out.status)
    } else {
        format!("ps: {first}")
    })
}

impl<B: Backend> Daemon<B> {
    /// `GET /containers/{id}/top?ps_args=` (default `-ef`).
    pub async fn top(&self, reference: &str, ps_args: &str) -> DaemonResult<TopBody> {
        let rec = self.container(reference)?;
        if !rec.state.status.is_running() {
            return Err(DaemonError::NotRunning { id: rec.id });
        }
        let ps_args = if ps_args.is_empty() { "-ef" } else { ps_args };
        validate_ps_args(ps_args)?;
        let pids = self.backend.task_pids(&rec.id).await?;
        let args: Vec<String> = ps_args.split(' ').map(str::to_string).collect();
        let mut with_pids = args.clone();
        with_pids.push("-q".into());
        with_pids.push(
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        // Some options (f) cannot be combined with -q: then all processes are listed and
        // filtered here.
        let output = match run_ps(&with_pids).await {
            Ok(o) => o,
            Err(_) => run_ps(&args).await.map_err(TopError::Ps)?,
        };
        Ok(parse_ps_output(&output, &pids)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_keeps_the_container_lines_and_merges_the_command() {
        let out = "UID PID PPID C STIME TTY TIME CMD\n\
                   root 10 1 0 12:00 ? 00:00:00 sleep 100\n\
                   root 11 10 0 12:00 ? 00:00:00 other thing\n\
                   root 12 10 0 12:00 ? 00:00:00 sh -c x y\n";
        let body = parse_ps_output(out, &[10, 12]).unwrap();
        assert_eq!(body.titles.len(), 8);
        assert_eq!(body.processes.len(), 2);
        assert_eq!(body.processes[0][7], "sleep 100");
        assert_eq!(body.processes[1][7], "sh -c x y");
        let e = parse_ps_output("USER COMMAND\nroot x\n", &[1]).unwrap_err();
        assert_eq!(e.to_string(), "Couldn't find PID field in ps output");
    }

    #[test]
    fn thread_lines_follow_their_process() {
        let out = "PID TID CMD\n10 - a\n- 10 -\n11 - b\n- 11 -\n";
        let body = parse_ps_output(out, &[10]).unwrap();
        assert_eq!(
            body.processes,
            vec![vec!["10", "-", "a"], vec!["-", "10", "-"]]
        );
    }

    #[test]
    fn renaming_a_column_to_pid_is_refused() {
        assert!(validate_ps_args("-ef").is_ok());
        assert!(validate_ps_args("-o pid=PID,comm").is_ok());
        let e = validate_ps_args("-o ppid=PID").unwrap_err();
        assert_eq!(e.to_string(), "specifying \"ppid=PID\" is not allowed");
    }
}
