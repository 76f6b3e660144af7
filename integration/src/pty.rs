//! Drives the docker CLI through a pseudo-terminal, as a user at a terminal would:
//! `docker run -it`, `attach`, `exec -it`. The CLI runs in its own session with the pty
//! slave as its controlling terminal (util-linux `setsid -c`), so it goes raw, reads
//! window sizes and gets SIGWINCH like under a real terminal emulator.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::pty::{openpty, Winsize};

use crate::poll::wait_until;
use crate::prereq;
use crate::Stack;

/// A docker CLI process on a pty; killed when dropped.
pub struct PtyChild {
    child: Child,
    master: File,
    /// The slave's path, for `stty -F` (a resize through the slave signals the CLI).
    slave_path: PathBuf,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PtyChild {
    /// Starts `docker ARGS` against `stack` on a new pty of `rows` x `cols`.
    pub fn docker(stack: &Stack, args: &[&str], rows: u16, cols: u16) -> Result<PtyChild> {
        let cli = prereq::docker_cli().context("docker CLI not found")?;
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).context("openpty")?;
        let slave_path = nix::unistd::ttyname(&pty.slave).context("ttyname of the pty slave")?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
        let mut cmd = Command::new("setsid");
        cmd.arg("-c")
            .arg(cli)
            .args(args)
            .env("DOCKER_HOST", stack.engine_host())
            .env("DOCKER_CONFIG", stack.dir.join("dc"))
            .env("DOCKER_CLI_HINTS", "false")
            .env("TERM", "xterm")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(stdio(&pty.slave)?)
            .stdout(stdio(&pty.slave)?)
            .stderr(stdio(&pty.slave)?);
        let child = cmd.spawn().context("spawn setsid -c docker")?;
        // Only the child holds the slave now: reading the master fails (EIO) once it and
        // everything it started have closed it.
        drop(pty.slave);
        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut rd = master.try_clone().context("dup pty master")?;
        let out = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = rd.read(&mut buf) {
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(PtyChild {
            child,
            master,
            slave_path,
            output,
            reader: Some(reader),
        })
    }

    /// Everything the CLI printed so far (terminal bytes, lossily decoded).
    pub fn output(&self) -> String {
        let out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Types `bytes` at the terminal.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.master.write_all(bytes).context("write to the pty")?;
        Ok(())
    }

    /// Waits until the output contains `needle` `count` times or more.
    pub fn expect_count(&self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        wait_until(&format!("{needle:?} on the terminal"), timeout, || {
            Ok((self.output().matches(needle).count() >= count).then_some(()))
        })
        .with_context(|| format!("terminal output so far: {:?}", self.output()))
    }

    /// Waits until the output contains `needle`.
    pub fn expect(&self, needle: &str, timeout: Duration) -> Result<()> {
        self.expect_count(needle, 1, timeout)
    }

    /// Resizes the terminal as a terminal emulator does: the CLI gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let status = Command::new("stty")
            .arg("-F")
            .arg(&self.slave_path)
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .status()
            .context("run stty")?;
        if !status.success() {
            bail!("stty -F {} failed: {status}", self.slave_path.display());
        }
        Ok(())
    }

    /// Waits for the CLI to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = wait_until("the docker CLI on the pty to exit", timeout, || {
            Ok(self.child.try_wait()?)
        })
        .with_context(|| format!("terminal output so far: {:?}", self.output()))?;
        // The reader ends at EIO once the last slave descriptor is gone: then the output
        // is complete. Bounded, so a stray holder of the slave cannot hang a test.
        if let Some(r) = &self.reader {
            let _ = wait_until("the pty output to end", Duration::from_secs(5), || {
                Ok(r.is_finished().then_some(()))
            });
        }
        Ok(status)
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
