//! Giving back the program text an idle shim keeps mapped.
//!
//! PSS charges a process every resident page it maps, and a lone shim is the only one
//! mapping most of its binary's text: whatever it ever ran (argument parsing, Create,
//! the runtime calls) stays mapped at ~2.5 MB, though an idle shim runs almost none
//! of it. Dropping the mappings' pages (MADV_DONTNEED) leaves them in the page cache,
//! where the kernel may reclaim them, and the next call faults back in the few pages it
//! needs (minor faults). Only read-only mappings of our own executable that hold no
//! private copies qualify: dropping a copied page (relocated `.data.rel.ro`, the GOT)
//! would bring back the file's unrelocated bytes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// One mapping of our executable that may safely lose its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub len: usize,
}

/// The executable's mappings never change after startup (relocation has made its private
/// copies by then), so they are read from smaps once.
static RANGES: OnceLock<Vec<Range>> = OnceLock::new();
static PENDING: AtomicBool = AtomicBool::new(false);

/// Asks for our executable's clean read-only pages to be dropped when the runtime next
/// parks ([`release_if_requested`] from `on_thread_park`); returns the bytes of the ranges
/// that will be advised.
///
/// Not dropped here: every text page the shim runs after the madvise is faulted back in,
/// and the kernel's fault-around maps the 64 KiB of cached text around each fault. From a
/// task that is the whole way back through the scheduler to epoll_wait (~20 faults,
/// ~1.4 MB); from the park hook it is only the driver's few pages to the syscall.
pub fn request_text_release() -> usize {
    let ranges = RANGES.get_or_init(exe_ranges);
    PENDING.store(!ranges.is_empty(), Ordering::Release);
    ranges.iter().map(|r| r.len).sum()
}

/// Drops the pages asked for by [`request_text_release`], if any. Cheap otherwise: meant
/// to run before every park of the runtime's thread.
pub fn release_if_requested() {
    if !PENDING.swap(false, Ordering::AcqRel) {
        return;
    }
    for range in RANGES.get().map(Vec::as_slice).unwrap_or_default() {
        // A failure is not logged: logging here would fault back the pages just dropped.
        let _ = crate::sys::drop_pages(range.start, range.len);
    }
}

fn exe_ranges() -> Vec<Range> {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return Vec::new();
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    clean_readonly_ranges(&smaps, &exe)
}

/// The read-only (`r--p`, `r-xp`) mappings of `exe` in smaps text whose `Anonymous` is 0.
pub fn clean_readonly_ranges(smaps: &str, exe: &Path) -> Vec<Range> {
    let exe = exe.as_os_str().to_string_lossy();
    let mut out = Vec::new();
    let mut current: Option<Range> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) {
            // A mapping header: start-end perms offset dev inode [path].
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).map(|_| line_path(line)).unwrap_or("");
            current =
                (matches!(perms, "r--p" | "r-xp") && path == exe && end > start).then_some(Range {
                    start,
                    len: end - start,
                });
            continue;
        }
        if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}

/// The path of a mapping header line: everything after the inode field (it may contain
/// spaces, and ends in " (deleted)" for a replaced binary, as readlink shows it too).
fn line_path(line: &str) -> &str {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
    }
    rest.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 1234   /opt/berth shim/berth-shim
Size:               1024 kB
Anonymous:             0 kB
55d0a0100000-55d0a0300000 r-xp 00100000 fd:01 1234   /opt/berth shim/berth-shim
Size:               2048 kB
Anonymous:             0 kB
55d0a0300000-55d0a0310000 r--p 00300000 fd:01 1234   /opt/berth shim/berth-shim
Size:                 64 kB
Anonymous:            60 kB
55d0a0310000-55d0a0311000 rw-p 00310000 fd:01 1234   /opt/berth shim/berth-shim
Anonymous:             4 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000201000 rw-p 00000000 00:00 0
Anonymous:             4 kB
";

    #[test]
    fn only_clean_readonly_mappings_of_the_executable() {
        let ranges = clean_readonly_ranges(SMAPS, Path::new("/opt/berth shim/berth-shim"));
        assert_eq!(
            ranges,
            vec![
                Range {
                    start: 0x55d0a0000000,
                    len: 0x100000
                },
                Range {
                    start: 0x55d0a0100000,
                    len: 0x200000
                },
            ]
        );
    }

    #[test]
    fn releasing_our_own_text_keeps_the_program_running() {
        let released = request_text_release();
        release_if_requested();
        // The test binary itself: still runs, and computes the same after a refault.
        let again = clean_readonly_ranges(
            &std::fs::read_to_string("/proc/self/smaps").unwrap(),
            &std::fs::read_link("/proc/self/exe").unwrap(),
        );
        assert!(released > 0 && !again.is_empty(), "{released} {again:?}");
    }
}
