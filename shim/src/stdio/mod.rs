//! A process's stdio: the pipes (or pty) the container gets, and the shim's copies from
//! them to the destinations named by the request's stdio strings.

mod jsonlog;
mod pipe;
mod sink;
mod target;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use jsonlog::{JsonLog, JsonLogError, LineSplitter};
pub use pipe::AsyncPipe;
pub use sink::Sink;
pub use target::{StdioTarget, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("invalid {stream} stdio")]
    Target {
        stream: &'static str,
        #[source]
        source: TargetError,
    },
    #[error("stdin cannot be a json-file log")]
    JsonStdin,
    #[error("cannot open {stream} destination {path}")]
    Open {
        stream: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open json-file log")]
    JsonLog(#[from] JsonLogError),
    #[error("cannot create a pipe for {stream}")]
    Pipe {
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot give the {stream} pipe to {uid}:{gid}")]
    Chown {
        stream: &'static str,
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("process has no terminal to resize")]
    NoTerminal,
    #[error("cannot resize the terminal")]
    Resize(#[source] std::io::Error),
}

/// The stdio strings of one process, as the request carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoSpec {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Who owns the process's ends of its stdio pipes (containerd's `IoUid`/`IoGid`); without
/// one they stay the shim's (root's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoOwner {
    pub uid: u32,
    pub gid: u32,
}

/// The descriptors handed to the runtime, which passes them on to the process.
#[derive(Debug)]
pub struct RuntimeStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

enum StdinSource {
    Null,
    /// A regular file or device, given to the process as is.
    Direct(OwnedFd),
    Fifo(AsyncPipe),
}

/// The shim's side of one process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    stdin: Mutex<Option<JoinHandle<()>>>,
    /// CloseIO: the stdin copy forwards what is already buffered, then closes.
    stdin_close: Arc<Notify>,
    outputs: Mutex<Vec<JoinHandle<()>>>,
    /// Bytes the output copies have written so far: lets `wait_output` tell a pipe that is
    /// still flowing (keep waiting) from one held open and silent by a grandchild.
    copied: Arc<AtomicU64>,
    master: Mutex<Option<Arc<AsyncPipe>>>,
    /// Terminal processes: what to connect once the pty master arrives.
    pending_terminal: Mutex<Option<(StdinSource, Sink)>>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo").finish_non_exhaustive()
    }
}

impl ProcessIo {
    /// Opens the destinations and creates the process's pipes. Copying starts at once; it
    /// ends by itself when the process side closes, so a failed create leaves nothing.
    pub fn prepare(
        spec: &IoSpec,
        owner: Option<IoOwner>,
    ) -> Result<(Arc<ProcessIo>, RuntimeStdio), IoError> {
        let parse = |stream, value: &str| {
            StdioTarget::parse(value).map_err(|source| IoError::Target { stream, source })
        };
        let stdin_t = parse("stdin", &spec.stdin)?;
        let stdout_t = parse("stdout", &spec.stdout)?;
        let stderr_t = parse("stderr", &spec.stderr)?;
        let stdin_src = open_stdin(&stdin_t)?;
        let mut logs = HashMap::new();
        let stdout_sink = Sink::open(&stdout_t, "stdout", &mut logs)?;
        let io = Arc::new(ProcessIo::default());
        if spec.terminal {
            // The runtime puts the pty slave on 0/1/2 of the process; its own stdio is unused.
            *lock(&io.pending_terminal) = Some((stdin_src, stdout_sink));
            let stdio = RuntimeStdio {
                stdin: dev_null(OFlag::O_RDONLY, "stdin")?,
                stdout: dev_null(OFlag::O_WRONLY, "stdout")?,
                stderr: dev_null(OFlag::O_WRONLY, "stderr")?,
            };
            return Ok((io, stdio));
        }
        let stderr_sink = Sink::open(&stderr_t, "stderr", &mut logs)?;
        let stdin = match stdin_src {
            StdinSource::Null => dev_null(OFlag::O_RDONLY, "stdin")?,
            StdinSource::Direct(fd) => fd,
            StdinSource::Fifo(src) => {
                let (r, w) = pipe("stdin")?;
                chown_pipe(&r, "stdin", owner)?;
                let dst = AsyncPipe::new(w).map_err(|source| IoError::Pipe {
                    stream: "stdin",
                    source,
                })?;
                let close = Arc::clone(&io.stdin_close);
                *lock(&io.stdin) = Some(tokio::spawn(copy_in(src, dst, close)));
                r
            }
        };
        let stdout = io.output("stdout", stdout_sink, owner)?;
        let stderr = io.output("stderr", stderr_sink, owner)?;
        Ok((
            io,
            RuntimeStdio {
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// Returns the write end for the process; a discarded stream goes to /dev/null.
    fn output(
        &self,
        stream: &'static str,
        sink: Sink,
        owner: Option<IoOwner>,
    ) -> Result<OwnedFd, IoError> {
        if matches!(sink, Sink::Discard) {
            return dev_null(OFlag::O_WRONLY, stream);
        }
        let (r, w) = pipe(stream)?;
        chown_pipe(&w, stream, owner)?;
        let src = AsyncPipe::new(r).map_err(|source| IoError::Pipe { stream, source })?;
        let copied = Arc::clone(&self.copied);
        lock(&self.outputs).push(tokio::spawn(copy_out(src, sink, copied)));
        Ok(w)
    }

    /// Connects a terminal process's pty master (received from the runtime) to its stdio.
    pub fn attach_terminal(&self, master: OwnedFd) -> Result<(), IoError> {
        let Some((stdin_src, sink)) = lock(&self.pending_terminal).take() else {
            return Err(IoError::NoTerminal);
        };
        let master = Arc::new(AsyncPipe::new(master).map_err(|source| IoError::Pipe {
            stream: "terminal",
            source,
        })?);
        *lock(&self.master) = Some(Arc::clone(&master));
        if let StdinSource::Fifo(src) = stdin_src {
            let dst = Arc::clone(&master);
            let close = Arc::clone(&self.stdin_close);
            *lock(&self.stdin) = Some(tokio::spawn(async move {
                copy_in_shared(src, &dst, &close).await;
            }));
        }
        let copied = Arc::clone(&self.copied);
        // A terminal's prompt and echo come without a newline: each read is logged as it
        // arrives, or a reader of the log (the engine's attach) would see them late.
        lock(&self.outputs).push(tokio::spawn(copy_out_shared(master, sink, copied, true)));
        Ok(())
    }

    /// CloseIO: forwards what the client already wrote, then closes the process's
    /// stdin so it reads EOF.
    pub fn close_stdin(&self) {
        self.stdin_close.notify_one();
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let master = lock(&self.master).clone().ok_or(IoError::NoTerminal)?;
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        crate::sys::set_winsize(master.raw_fd(), clamp(height), clamp(width))
            .map_err(IoError::Resize)
    }

    /// Waits until every output stream reached EOF and was flushed. Output that keeps
    /// flowing is waited for however long it takes (a large final burst to a slow disk must
    /// all be in the log before the exit is recorded); only a stream silent for `idle`
    /// gives up, since a grandchild holding a pipe open must not hold the exit back forever.
    /// Returns false when it gave up.
    pub async fn wait_output(&self, idle: Duration) -> bool {
        let tasks: Vec<_> = lock(&self.outputs).drain(..).collect();
        let all = futures_join_all(tasks);
        tokio::pin!(all);
        let mut seen = self.copied.load(Ordering::Relaxed);
        loop {
            if tokio::time::timeout(idle, &mut all).await.is_ok() {
                return true;
            }
            let now = self.copied.load(Ordering::Relaxed);
            if now == seen {
                return false;
            }
            seen = now;
        }
    }

    /// Drops everything: used when the process is forgotten.
    pub fn shutdown(&self) {
        if let Some(task) = lock(&self.stdin).take() {
            task.abort();
        }
        lock(&self.pending_terminal).take();
        lock(&self.master).take();
    }
}

async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pipe(stream: &'static str) -> Result<(OwnedFd, OwnedFd), IoError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| IoError::Pipe {
        stream,
        source: e.into(),
    })
}

/// fchown(2) on a pipe end changes the pipe's inode, which is what a process reopening
/// `/proc/self/fd/N` is checked against.
fn chown_pipe(fd: &OwnedFd, stream: &'static str, owner: Option<IoOwner>) -> Result<(), IoError> {
    let Some(IoOwner { uid, gid }) = owner else {
        return Ok(());
    };
    std::os::unix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|source| IoError::Chown {
        stream,
        uid,
        gid,
        source,
    })
}

fn dev_null(flags: OFlag, stream: &'static str) -> Result<OwnedFd, IoError> {
    let path = PathBuf::from("/dev/null");
    let file = std::fs::OpenOptions::new()
        .read(flags == OFlag::O_RDONLY)
        .write(flags != OFlag::O_RDONLY)
        .open(&path)
        .map_err(|source| IoError::Open {
            stream,
            path,
            source,
        })?;
    Ok(file.into())
}

fn open_stdin(target: &StdioTarget) -> Result<StdinSource, IoError> {
    let open_err = |path: &PathBuf, source| IoError::Open {
        stream: "stdin",
        path: path.clone(),
        source,
    };
    match target {
        StdioTarget::Null => Ok(StdinSource::Null),
        StdioTarget::JsonFile { .. } => Err(IoError::JsonStdin),
        StdioTarget::Path(path) | StdioTarget::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| open_err(path, e))?;
            if std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) {
                let fifo = AsyncPipe::open_fifo_reader(path).map_err(|e| open_err(path, e))?;
                return Ok(StdinSource::Fifo(fifo));
            }
            let file = File::open(path).map_err(|e| open_err(path, e))?;
            Ok(StdinSource::Direct(file.into()))
        }
    }
}

async fn copy_in(src: AsyncPipe, dst: AsyncPipe, close: Arc<Notify>) {
    copy_in_shared(src, &dst, &close).await;
}

async fn copy_in_shared(src: AsyncPipe, dst: &AsyncPipe, close: &Notify) {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = tokio::select! {
            r = src.read(&mut buf) => match r {
                Ok(0) => return,
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(%err, "reading stdin failed");
                    return;
                }
            },
            () = close.notified() => {
                // Data the client wrote before CloseIO is still in the FIFO: pass it on.
                while let Ok(n @ 1..) = src.read_now(&mut buf) {
                    if dst.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                return;
            }
        };
        if let Err(err) = dst.write_all(&buf[..n]).await {
            tracing::debug!(%err, fd = dst.raw_fd(), "stdin closed by the process");
            return;
        }
    }
}

async fn copy_out(src: AsyncPipe, sink: Sink, copied: Arc<AtomicU64>) {
    copy_out_shared(Arc::new(src), sink, copied, false).await;
}

async fn copy_out_shared(
    src: Arc<AsyncPipe>,
    mut sink: Sink,
    copied: Arc<AtomicU64>,
    flush_partial: bool,
) {
    // Most containers write rarely: the buffer exists only while output is flowing, and
    // goes once a read drains the pipe, so an idle shim holds none.
    let mut buf = Vec::new();
    loop {
        if buf.is_empty() {
            if let Err(err) = src.readable().await {
                tracing::warn!(%err, fd = src.as_ref().raw_fd(), "waiting for output failed");
                break;
            }
            buf = vec![0u8; OUTPUT_BUF];
        }
        match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                sink.write(&buf[..n]).await;
                if flush_partial {
                    sink.finish();
                }
                copied.fetch_add(n as u64, Ordering::Relaxed);
                if n < buf.len() {
                    buf = Vec::new();
                }
            }
            Err(err) => {
                tracing::warn!(%err, fd = src.as_ref().raw_fd(), "reading output failed");
                break;
            }
        }
    }
    sink.finish();
}

/// Bytes read from a process's output at a time.
const OUTPUT_BUF: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    fn file_stdout(path: &std::path::Path) -> (Arc<ProcessIo>, RuntimeStdio) {
        let spec = IoSpec {
            stdout: format!("file://{}", path.display()),
            ..IoSpec::default()
        };
        ProcessIo::prepare(&spec, None).expect("prepare")
    }

    #[tokio::test]
    async fn wait_output_waits_while_output_keeps_flowing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let (io, stdio) = file_stdout(&path);
        let mut writer = File::from(stdio.stdout);
        // A burst that takes several idle periods to arrive but never pauses for one:
        // the old fixed total limit gave up half-way through it.
        let chunk = vec![b'x'; 64 * 1024];
        let chunks = 40;
        let feeder = std::thread::spawn(move || {
            for _ in 0..chunks {
                writer.write_all(&chunk).expect("write");
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        assert!(io.wait_output(Duration::from_millis(250)).await);
        feeder.join().expect("feeder");
        let len = std::fs::metadata(&path).expect("stat").len();
        assert_eq!(len, 64 * 1024 * chunks);
    }

    #[tokio::test]
    async fn stdin_outlives_its_writers_until_close_io() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let spec = IoSpec {
            stdin: fifo.display().to_string(),
            ..IoSpec::default()
        };
        let (io, stdio) = ProcessIo::prepare(&spec, None).expect("prepare");
        // A client that writes and goes away (an engine restart), then another one.
        for part in [&b"first "[..], b"second"] {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open writer");
            w.write_all(part).expect("write");
        }
        let mut reader = File::from(stdio.stdin);
        let mut got = vec![0u8; 12];
        let read = tokio::task::spawn_blocking(move || {
            reader.read_exact(&mut got).map(|()| (reader, got))
        });
        let (mut reader, got) = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("both writes forwarded")
            .expect("join")
            .expect("read");
        assert_eq!(got, b"first second".to_vec());
        // Only CloseIO ends the input.
        io.close_stdin();
        let rest = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map(|_| rest)
        });
        let rest = tokio::time::timeout(Duration::from_secs(10), rest)
            .await
            .expect("EOF after CloseIO")
            .expect("join")
            .expect("read");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn wait_output_gives_up_on_an_idle_open_pipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let (io, stdio) = file_stdout(&path);
        // A grandchild holding the pipe open and silent after some output.
        let mut writer = File::from(stdio.stdout);
        writer.write_all(b"last words\n").expect("write");
        let started = Instant::now();
        assert!(!io.wait_output(Duration::from_millis(200)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"last words\n".to_vec()
        );
        drop(writer);
    }
}
