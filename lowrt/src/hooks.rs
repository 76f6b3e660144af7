//! OCI lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks"). Each hook gets the
//! container state JSON on stdin; a failure of prestart/createRuntime/createContainer/
//! startContainer fails the operation, poststart/poststop failures are only logged.
//!
//! Where they run: prestart and createRuntime in the runtime, after init has made its
//! namespaces and mounts but before pivot_root (init waits on the sync channel);
//! createContainer in init at the same point; startContainer in init after `start`,
//! right before execve; poststart in `start`; poststop in `delete`.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, Spec};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {}: cannot run: {source}", path.display())]
    Spawn {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{kind} hook {} failed ({status}): {stderr}", path.display())]
    Failed {
        kind: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook {} timed out after {secs} s", path.display())]
    Timeout {
        kind: &'static str,
        path: PathBuf,
        secs: i64,
    },
}

/// The hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Prestart => "prestart",
            Point::CreateRuntime => "createRuntime",
            Point::CreateContainer => "createContainer",
            Point::StartContainer => "startContainer",
            Point::Poststart => "poststart",
            Point::Poststop => "poststop",
        }
    }

    fn select(self, h: &Hooks) -> Option<&Vec<Hook>> {
        #[allow(deprecated)]
        let list = match self {
            Point::Prestart => h.prestart(),
            Point::CreateRuntime => h.create_runtime(),
            Point::CreateContainer => h.create_container(),
            Point::StartContainer => h.start_container(),
            Point::Poststart => h.poststart(),
            Point::Poststop => h.poststop(),
        };
        list.as_ref()
    }
}

/// The hooks of `spec` at `point` (empty when none).
pub fn at(spec: &Spec, point: Point) -> &[Hook] {
    spec.hooks()
        .as_ref()
        .and_then(|h| point.select(h))
        .map_or(&[], Vec::as_slice)
}

/// The state document hooks read on stdin.
pub fn state_json(spec: &Spec, id: &str, status: &str, pid: i32, bundle: &Path) -> Vec<u8> {
    let doc = serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    });
    doc.to_string().into_bytes()
}

/// Runs `hooks` in order, stopping at the first failure.
pub fn run(point: Point, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks
        .iter()
        .try_for_each(|h| run_one(point.name(), h, state))
}

fn run_one(kind: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    use std::os::unix::process::CommandExt;
    let path = hook.path().clone();
    let spawn_err = |source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    };
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(&path);
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // stderr goes to an unlinked temp file: no pipe to drain while we wait.
    let mut err_file = tempfile_in_run().map_err(spawn_err)?;
    let err_clone = err_file.try_clone().map_err(spawn_err)?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err_clone)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine (EPIPE is ignored).
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if let Some((secs, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { kind, path, secs });
            }
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    let _ = err_file.rewind();
    let _ = err_file.read_to_string(&mut stderr);
    Err(HookError::Failed {
        kind,
        path,
        status: status.to_string(),
        stderr: stderr.trim().to_owned(),
    })
}

/// An anonymous file (memfd), so hooks can run before the container's /tmp exists.
fn tempfile_in_run() -> std::io::Result<std::fs::File> {
    let fd =
        nix::sys::memfd::memfd_create(c"berth-hook-stderr", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(std::io::Error::from)?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_gets_state_and_failures_carry_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("state");
        let ok = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {}"]}}"#,
            out.display()
        ));
        run(Point::Poststart, &[ok], b"{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"x\"}");
        let bad = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo nope >&2; exit 4"]}"#);
        let err = run(Point::CreateRuntime, &[bad], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("createRuntime hook /bin/sh failed") && err.contains("nope"),
            "{err}"
        );
        let slow = hook(r#"{"path":"/bin/sleep","args":["sleep","5"],"timeout":1}"#);
        let err = run(Point::Prestart, &[slow], b"{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out after 1 s"), "{err}");
    }
}
