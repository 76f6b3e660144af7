//! Reading cgroupfs files. A missing file is not an error: which files exist depends on
//! the kernel's configuration and version, and the metrics simply leave those fields 0.

use std::path::Path;

use super::CgroupError;

/// The file's text, or `None` when it does not exist.
pub(super) fn read_opt(dir: &Path, name: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // ENODEV: a v1 file of a controller the kernel has but this cgroup cannot use.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Parses one number; `max` (cgroup v2's and pids.max's "no limit") is `max_value`.
pub(super) fn parse_u64(
    dir: &Path,
    name: &str,
    text: &str,
    max_value: u64,
) -> Result<u64, CgroupError> {
    let text = text.trim();
    if text == "max" {
        return Ok(max_value);
    }
    text.parse().map_err(|_| CgroupError::Parse {
        path: dir.join(name),
        text: text.to_owned(),
    })
}

/// A single-number file; 0 when missing, `max_value` for `max`.
pub(super) fn read_u64(dir: &Path, name: &str, max_value: u64) -> Result<u64, CgroupError> {
    match read_opt(dir, name)? {
        Some(text) => parse_u64(dir, name, &text, max_value),
        None => Ok(0),
    }
}

/// A flat keyed file (`key value` per line: memory.stat, cpu.stat, memory.events, ...),
/// handing every pair to `apply`. Unknown keys are the caller's to ignore.
pub(super) fn read_keyed(
    dir: &Path,
    name: &str,
    mut apply: impl FnMut(&str, u64),
) -> Result<bool, CgroupError> {
    let Some(text) = read_opt(dir, name)? else {
        return Ok(false);
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(CgroupError::Parse {
                path: dir.join(name),
                text: line.to_owned(),
            });
        };
        apply(key, parse_u64(dir, name, value, u64::MAX)?);
    }
    Ok(true)
}

/// Whitespace-separated numbers on one line (cpuacct.usage_percpu).
pub(super) fn read_list(dir: &Path, name: &str) -> Result<Vec<u64>, CgroupError> {
    let Some(text) = read_opt(dir, name)? else {
        return Ok(Vec::new());
    };
    text.split_whitespace()
        .map(|v| parse_u64(dir, name, v, u64::MAX))
        .collect()
}

/// Page sizes with a hugetlb file in `dir`, from names like `hugetlb.2MB.<suffix>`.
pub(super) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            // hugetlb.2MB.rsvd.current is the reservation counter, not the usage.
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keyed_files_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("one"), "42\n").expect("write");
        std::fs::write(d.join("max"), "max\n").expect("write");
        std::fs::write(d.join("bad"), "4x\n").expect("write");
        std::fs::write(d.join("keyed"), "a 1\nb 2\n\n").expect("write");
        std::fs::write(d.join("list"), "1 2 3 \n").expect("write");
        assert_eq!(read_u64(d, "one", 0).expect("one"), 42);
        assert_eq!(read_u64(d, "max", 7).expect("max"), 7);
        assert_eq!(read_u64(d, "missing", 7).expect("missing"), 0);
        let err = read_u64(d, "bad", 0).unwrap_err();
        assert!(err.to_string().contains("\"4x\""), "{err}");
        let mut pairs = Vec::new();
        assert!(read_keyed(d, "keyed", |k, v| pairs.push((k.to_owned(), v))).expect("keyed"));
        assert_eq!(pairs, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert!(!read_keyed(d, "missing", |_, _| {}).expect("missing"));
        assert_eq!(read_list(d, "list").expect("list"), [1, 2, 3]);
    }

    #[test]
    fn hugetlb_sizes_skip_reservation_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "hugetlb.2MB.current",
            "hugetlb.1GB.current",
            "hugetlb.2MB.rsvd.current",
        ] {
            std::fs::write(dir.path().join(name), "0\n").expect("write");
        }
        let sizes = hugetlb_sizes(dir.path(), ".current").expect("sizes");
        assert_eq!(sizes, ["1GB", "2MB"]);
    }
}
