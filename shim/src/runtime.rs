//! Running the OCI runtime binary with runc's command line (docs/ARCHITECTURE.md,
//! "shim → runtime").
//!
//! [`RuntimeCli`] is the seam: the task service only ever talks to it, so tests can put a
//! fake in its place. [`ProcessRuntime`] runs the real binary and waits for it through
//! the reaper, subscribing before the spawn so the exit cannot be missed.

use std::ffi::OsString;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::reaper::Reaper;
use crate::stdio::{AsyncPipe, RuntimeStdio};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run runtime {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a pipe for the runtime's output")]
    Pipe(#[source] std::io::Error),
    /// `message` is the runtime's own last error line, so it is the whole message.
    #[error("{message}")]
    Failed {
        command: &'static str,
        message: String,
    },
    #[error("cannot read pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid file {path} holds {content:?}, not a pid")]
    BadPid { path: PathBuf, content: String },
    #[error("runtime ps printed {output:?}, not a JSON list of pids")]
    BadPs { output: String },
}

/// `create`'s arguments.
#[derive(Debug)]
pub struct CreateOpts<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    /// `--no-pivot`: the runtime moves the rootfs to / and chroots instead of pivot_root.
    pub no_pivot: bool,
    /// `--no-new-keyring`: the init keeps the caller's session keyring.
    pub no_new_keyring: bool,
    pub stdio: RuntimeStdio,
}

/// `exec --detach`'s arguments.
#[derive(Debug)]
pub struct ExecOpts<'a> {
    pub id: &'a str,
    pub process_file: &'a Path,
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub stdio: RuntimeStdio,
}

/// The runtime commands the shim uses. `create` and `exec` return the new process's pid.
pub trait RuntimeCli: Send + Sync + 'static {
    fn create(
        &self,
        opts: CreateOpts<'_>,
    ) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn kill(
        &self,
        id: &str,
        signal: u32,
        all: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn delete(
        &self,
        id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn exec(&self, opts: ExecOpts<'_>) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    fn pause(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn resume(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn ps(&self, id: &str) -> impl Future<Output = Result<Vec<u32>, RuntimeError>> + Send;
    /// `update --resources FILE ID`: FILE holds OCI LinuxResources JSON.
    fn update(
        &self,
        id: &str,
        resources_file: &Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// The runtime binary (berth-lowrt, runc, crun) run as a child process.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    pub binary: PathBuf,
    pub root: Option<PathBuf>,
    /// Global `--systemd-cgroup` on every command, as containerd's runc shim passes it.
    pub systemd_cgroup: bool,
    /// `--log`: the JSON log the runtime's error messages are read back from.
    pub log: PathBuf,
    pub reaper: Arc<Reaper>,
}

impl ProcessRuntime {
    /// Runs one command. With `stdio`, the runtime (and the process it starts) gets those
    /// descriptors; without, its stdout is captured and returned.
    async fn run(
        &self,
        command: &'static str,
        args: Vec<OsString>,
        stdio: Option<RuntimeStdio>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.binary);
        if let Some(root) = &self.root {
            cmd.arg("--root").arg(root);
        }
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .arg(command)
            .args(args);
        let mut captured = None;
        match stdio {
            Some(s) => {
                cmd.stdin(Stdio::from(s.stdin))
                    .stdout(Stdio::from(s.stdout))
                    .stderr(Stdio::from(s.stderr));
            }
            None => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(out_w))
                    .stderr(Stdio::from(err_w));
                captured = Some((out_r, err_r));
            }
        }
        let mut exits = self.reaper.subscribe();
        // spawn runs synchronously on the runtime's only thread, so the reaper cannot reap
        // a child whose exec failed before std's own waitpid for it (current_thread).
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        // Close our copies of the descriptors handed over, or EOF never comes.
        drop(cmd);
        drop(child);
        let (exit, (stdout, stderr)) = tokio::join!(exits.wait_pid(pid), async {
            match captured {
                Some((out, err)) => tokio::join!(read_all(out), read_all(err)),
                None => (Vec::new(), Vec::new()),
            }
        });
        tracing::debug!(command, pid, status = exit.status, "runtime exited");
        if exit.status == 0 {
            return Ok(stdout);
        }
        let message = last_error(&self.log, log_offset)
            .or_else(|| last_line(&stderr))
            .unwrap_or_else(|| format!("runtime {command} exited with status {}", exit.status));
        Err(RuntimeError::Failed { command, message })
    }

    fn simple(
        &self,
        command: &'static str,
        args: &[&str],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send + '_ {
        let args = args.iter().map(OsString::from).collect();
        async move { self.run(command, args, None).await.map(|_| ()) }
    }
}

impl RuntimeCli for ProcessRuntime {
    async fn create(&self, opts: CreateOpts<'_>) -> Result<u32, RuntimeError> {
        let _ = std::fs::remove_file(opts.pid_file);
        let mut args: Vec<OsString> = vec!["--bundle".into(), opts.bundle.into()];
        args.extend(["--pid-file".into(), opts.pid_file.into()]);
        if let Some(sock) = opts.console_socket {
            args.extend(["--console-socket".into(), sock.into()]);
        }
        if opts.no_pivot {
            args.push("--no-pivot".into());
        }
        if opts.no_new_keyring {
            args.push("--no-new-keyring".into());
        }
        args.push(opts.id.into());
        self.run("create", args, Some(opts.stdio)).await?;
        read_pid(opts.pid_file)
    }

    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.simple("start", &[id])
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let signal = signal.to_string();
        let args: &[&str] = if all {
            &["--all", id, &signal]
        } else {
            &[id, &signal]
        };
        self.simple("kill", args).await
    }

    fn delete(
        &self,
        id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        let args: &[&str] = if force { &["--force", id] } else { &[id] };
        self.simple("delete", args)
    }

    async fn exec(&self, opts: ExecOpts<'_>) -> Result<u32, RuntimeError> {
        let _ = std::fs::remove_file(opts.pid_file);
        let mut args: Vec<OsString> = vec!["--process".into(), opts.process_file.into()];
        args.extend(["--detach".into(), "--pid-file".into(), opts.pid_file.into()]);
        if let Some(sock) = opts.console_socket {
            args.extend(["--console-socket".into(), sock.into()]);
        }
        args.push(opts.id.into());
        self.run("exec", args, Some(opts.stdio)).await?;
        read_pid(opts.pid_file)
    }

    fn pause(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.simple("pause", &[id])
    }

    fn resume(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.simple("resume", &[id])
    }

    async fn update(&self, id: &str, resources_file: &Path) -> Result<(), RuntimeError> {
        let args = vec!["--resources".into(), resources_file.into(), id.into()];
        self.run("update", args, None).await.map(|_| ())
    }

    async fn ps(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let args = ["--format", "json", id].map(OsString::from).to_vec();
        let out = self.run("ps", args, None).await?;
        serde_json::from_slice::<Option<Vec<u32>>>(&out)
            .map(Option::unwrap_or_default)
            .map_err(|_| RuntimeError::BadPs {
                output: String::from_utf8_lossy(&out).into_owned(),
            })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Pipe(e.into()))
}

/// Reads to EOF; gives up after a minute in case a stray child keeps the pipe open.
async fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(pipe) = AsyncPipe::new(fd) else {
        return out;
    };
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n @ 1..) = pipe.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), read).await;
    out
}

fn read_pid(path: &Path) -> Result<u32, RuntimeError> {
    let content = std::fs::read_to_string(path).map_err(|source| RuntimeError::PidFile {
        path: path.to_owned(),
        source,
    })?;
    content
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| RuntimeError::BadPid {
            path: path.to_owned(),
            content,
        })
}

/// The `msg` of the last `"level":"error"` line the runtime appended after `offset`.
pub fn last_error(log: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
}

fn last_line(output: &[u8]) -> Option<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::TEST_LOCK;
    use std::os::unix::fs::PermissionsExt;

    /// A fake runtime: a shell script that logs like runc and fails on `create`.
    fn fake(dir: &Path) -> PathBuf {
        let script = dir.join("fake-runtime");
        let body = r#"#!/bin/sh
log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --log) log="$2"; shift 2;;
    --root|--log-format) shift 2;;
    *) break;;
  esac
done
case "$1" in
  create)
    echo '{"level":"info","msg":"starting","time":"t"}' >> "$log"
    echo '{"level":"error","msg":"container rootfs is missing","time":"t"}' >> "$log"
    echo 'noise on stderr' >&2
    exit 1;;
  ps) echo '[101,102]';;
  kill) echo "usage" >&2; exit 2;;
  *) exit 0;;
esac
"#;
        std::fs::write(&script, body).expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    fn null_stdio() -> RuntimeStdio {
        let null = |w: bool| -> OwnedFd {
            std::fs::OpenOptions::new()
                .read(!w)
                .write(w)
                .open("/dev/null")
                .expect("/dev/null")
                .into()
        };
        RuntimeStdio {
            stdin: null(false),
            stdout: null(true),
            stderr: null(true),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reports_the_runtime_error_line_not_the_exit_status() {
        let _serial = TEST_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"an older failure\"}\n").expect("log");
        let rt = ProcessRuntime {
            binary: fake(dir.path()),
            root: Some(dir.path().join("root")),
            systemd_cgroup: false,
            log,
            reaper: Reaper::start().expect("reaper"),
        };
        let opts = CreateOpts {
            id: "c1",
            bundle: dir.path(),
            pid_file: &dir.path().join("init.pid"),
            console_socket: None,
            no_pivot: false,
            no_new_keyring: false,
            stdio: null_stdio(),
        };
        let err = rt.create(opts).await.expect_err("create fails");
        assert_eq!(err.to_string(), "container rootfs is missing");
        // Without a log line, the last stderr line is the message.
        let err = rt.kill("c1", 9, false).await.expect_err("kill fails");
        assert_eq!(err.to_string(), "usage");
        assert_eq!(rt.ps("c1").await.expect("ps"), vec![101, 102]);
        rt.start("c1").await.expect("start");
    }
}
