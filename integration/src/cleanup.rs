//! Tearing down what a stack left behind: shims and container processes it started,
//! mounts under its temp dir, its cgroups. Every step only touches things that are
//! provably the stack's own (its temp dir prefix, its random cgroup name).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::poll::wait_until;

/// Root of the cgroup v1 hierarchies and the cgroup2 mount at `unified`.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// PIDs of live `berth-shim` processes whose pid file lies under `state_dir`
/// (`<state>/<ns>/<id>/shim.pid`). A pid is only trusted if its executable still is
/// berth-shim, so a recycled PID is never signalled.
pub fn shim_pids(state_dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for ns in read_dirs(state_dir) {
        for task in read_dirs(&ns) {
            let Ok(text) = std::fs::read_to_string(task.join("shim.pid")) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<i32>() else {
                continue;
            };
            if exe_name(pid).is_some_and(|n| n == "berth-shim") {
                pids.push(pid);
            }
        }
    }
    pids
}

/// PIDs of live processes that belong to the stack in `dir`: their command line names a
/// path under it (daemons, shims, runtimes), or their root directory is under it (container
/// processes, should one have escaped the stack's cgroups).
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let prefix = format!("{}/", dir.display());
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            cmdline(pid).is_some_and(|c| c.contains(&prefix))
                || std::fs::read_link(format!("/proc/{pid}/root"))
                    .is_ok_and(|r| r.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// File name of the binary `pid` runs, from `/proc/PID/exe` (argv[0] is no guide: the
/// shim re-executes itself as `/proc/self/exe`).
pub fn exe_name(pid: i32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(name.trim_end_matches(" (deleted)").to_string())
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Every cgroup directory named `name` at the top of a hierarchy (v1 controllers and the
/// cgroup2 mount), e.g. `/sys/fs/cgroup/memory/berth-test-ab12cd`.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = read_dirs(Path::new(CGROUP_ROOT))
        .into_iter()
        // cpu,cpuacct style symlinks point at a hierarchy visited under its own name.
        .filter(|h| !h.is_symlink())
        .map(|h| h.join(name))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// PIDs in `dir` and all its descendant cgroups.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for d in subtree(dir) {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the stack's cgroups (they are containers it started) and
/// removes the cgroup trees, deepest first, waiting for the kernel to let go of them.
pub fn remove_cgroups(name: &str) -> Result<()> {
    for top in cgroup_dirs(name) {
        for pid in cgroup_pids(&top) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        wait_until(
            &format!("cgroup {} to be removable", top.display()),
            Duration::from_secs(10),
            || {
                let mut tree = subtree(&top);
                tree.reverse();
                for d in &tree {
                    if std::fs::remove_dir(d).is_err() && d.exists() {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )?;
    }
    Ok(())
}

/// `dir` and its descendant directories, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let children = read_dirs(&out[i]);
        out.extend(children.into_iter().filter(|c| !c.is_symlink()));
        i += 1;
    }
    out
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Mount points at or under `dir`, from this process's mountinfo, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    Ok(points)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything under `dir` until nothing is left (mounts can be stacked).
pub fn unmount_all(dir: &Path) -> Result<()> {
    for _ in 0..16 {
        let points = mounts_under(dir)?;
        if points.is_empty() {
            return Ok(());
        }
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let left = mounts_under(dir)?;
    if !left.is_empty() {
        bail!("mounts still present under {}: {left:?}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }
}
