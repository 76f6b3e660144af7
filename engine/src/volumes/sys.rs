//! Mount calls of the engine's filesystem code (volumes with options, container rootfs
//! views): nix's safe wrappers, plus the mount table read from /proc/self/mountinfo.

use std::collections::BTreeMap;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

/// Mount points at or below `dir`, deepest first (so they can be unmounted in order).
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<std::path::PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| std::path::PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(n) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|p| p == path)
}

/// `mount -t TYPE -o O DEVICE TARGET` as dockerd's local driver does it: flag words of
/// `o` become mount flags, the rest is the data string.
pub fn mount_options(opts: &BTreeMap<String, String>, target: &Path) -> Result<(), String> {
    let fstype = opts.get("type").map(String::as_str).unwrap_or("");
    let device = opts.get("device").map(String::as_str).unwrap_or("");
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for word in opts.get("o").map(String::as_str).unwrap_or("").split(',') {
        match word {
            "" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    let fstype = (!fstype.is_empty() && fstype != "none").then_some(fstype);
    nix::mount::mount(
        Some(device),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| format!("mount {device} on {}: {e}", target.display()))?;
    // A read-only bind needs a remount to take the flag.
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        remount_ro(target)?;
    }
    Ok(())
}

pub fn remount_ro(target: &Path) -> Result<(), String> {
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("remount {} read-only: {e}", target.display()))
}

/// Lazy unmount: an engine-side view must never stay behind because a reader holds it.
pub fn unmount(target: &Path) -> Result<(), String> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH)
        .map_err(|e| format!("unmount {}: {e}", target.display()))
}

/// Mounts `source` at `target` (an overlay or a bind, as highd's snapshot mounts say).
pub fn mount(
    kind: &str,
    source: &str,
    target: &Path,
    options: &[String],
    read_only: bool,
) -> Result<(), String> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            other => data.push(other.to_string()),
        }
    }
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = data.join(",");
    let fstype = if flags.contains(MsFlags::MS_BIND) {
        None
    } else {
        Some(kind)
    };
    nix::mount::mount(
        Some(source),
        target,
        fstype,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| format!("mount {kind} {source} on {}: {e}", target.display()))?;
    // Private, so nothing mounted here propagates to (or from) the host's peers.
    let _ = nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    );
    if flags.contains(MsFlags::MS_BIND) && read_only {
        remount_ro(target)?;
    }
    Ok(())
}
