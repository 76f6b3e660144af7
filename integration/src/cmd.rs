//! Running client commands (docker, berth) against a stack with a deadline. Output goes to
//! files rather than pipes so a chatty or hung client can never deadlock the test.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::poll::wait_until;

/// Unique names for the output files of concurrent commands within one process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// What a finished client command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub command: String,
    /// Exit code; 128+N when killed by signal N.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Fails unless the command exited 0.
    pub fn ok(self) -> Result<Self> {
        if self.code != 0 {
            bail!("{self}");
        }
        Ok(self)
    }

    /// Fails unless the command exited with `code`.
    pub fn expect_code(self, code: i32) -> Result<Self> {
        if self.code != code {
            bail!("expected exit code {code}; {self}");
        }
        Ok(self)
    }

    /// Stdout without the trailing newline.
    pub fn out(&self) -> &str {
        self.stdout.trim_end_matches('\n')
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with its output in `scratch`, killing it (by PID) after `timeout`.
pub fn run(cmd: Command, scratch: &Path, timeout: Duration) -> Result<Output> {
    run_with_stdin(cmd, None, scratch, timeout)
}

/// Like [`run`], with stdin read from the file `stdin` (else /dev/null).
pub fn run_with_stdin(
    mut cmd: Command,
    stdin: Option<&Path>,
    scratch: &Path,
    timeout: Duration,
) -> Result<Output> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_path = scratch.join(format!("cmd-{n}.out"));
    let err_path = scratch.join(format!("cmd-{n}.err"));
    let command = describe(&cmd);
    let stdin = match stdin {
        Some(p) => Stdio::from(File::open(p).with_context(|| format!("open {}", p.display()))?),
        None => Stdio::null(),
    };
    cmd.stdin(stdin)
        .stdout(File::create(&out_path).context("create stdout file")?)
        .stderr(File::create(&err_path).context("create stderr file")?);
    let mut child = cmd.spawn().with_context(|| format!("spawn `{command}`"))?;
    let waited = wait_until(&format!("`{command}` to exit"), timeout, || {
        Ok(child.try_wait()?)
    });
    let status = match waited {
        Ok(status) => status,
        Err(e) => {
            // Ours: spawned just above, and not yet reaped, so the PID is still its.
            let _ = child.kill();
            let _ = child.wait();
            let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            bail!("{e:#}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
        }
    };
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    let stdout = std::fs::read_to_string(&out_path).context("read stdout")?;
    let stderr = std::fs::read_to_string(&err_path).context("read stderr")?;
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(Output {
        command,
        code,
        stdout,
        stderr,
    })
}

fn describe(cmd: &Command) -> String {
    let prog = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(OsStr::new("?"))
        .to_string_lossy()
        .into_owned();
    std::iter::once(prog)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
