//! Extended attributes in tar streams as dockerd 20.10's `pkg/archive` carries them: an
//! archive made from a filesystem (`cp` out, `export`) records only `security.capability`
//! (file capabilities; a namespaced v3 value is written as v2, since its root UID means
//! nothing outside the user namespace), as a PAX `SCHILY.xattr.` record; an archive
//! unpacked into a container gets every `SCHILY.xattr.` record set, those the filesystem
//! or the kernel refuses (ENOTSUP, EPERM) skipped as dockerd skips them.

use std::path::Path;

const CAPABILITY: &str = "security.capability";
const PAX_XATTR: &str = "SCHILY.xattr.";
/// `VFS_CAP_REVISION_2`'s size, and where the revision byte sits (linux/capability.h).
const CAPS_V2_SIZE: usize = 20;
const REVISION_OFFSET: usize = 3;
const REVISION_2: u8 = 2;
const REVISION_3: u8 = 3;

/// The PAX records (key, value) an entry for `path` carries: its file capabilities.
pub fn records_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(mut cap)) = xattr::get(path, CAPABILITY) else {
        return Vec::new();
    };
    if cap.get(REVISION_OFFSET) == Some(&REVISION_3) {
        cap[REVISION_OFFSET] = REVISION_2;
        cap.truncate(CAPS_V2_SIZE);
    }
    vec![(format!("{PAX_XATTR}{CAPABILITY}"), cap)]
}

/// The data of a PAX extended header: `"<len> <key>=<value>\n"` records, `len` counting
/// the whole record including its own digits.
pub fn pax_data(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// The name of the PAX header entry for `name`, as Go's archive/tar forms it
/// (`dir/PaxHeaders.0/file`), cut to the 100 bytes of the name field.
pub fn pax_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, file) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(file);
    out.truncate(100);
    out
}

/// The `SCHILY.xattr.` records of an entry's PAX header, as (attribute, value).
pub fn from_pax<'a>(records: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<(String, Vec<u8>)> {
    records
        .filter_map(|(k, v)| {
            let k = std::str::from_utf8(k).ok()?;
            let name = k.strip_prefix(PAX_XATTR)?;
            Some((name.to_string(), v.to_vec()))
        })
        .collect()
}

/// Sets `attrs` on `path` (not followed if a symlink); refusals of the filesystem or the
/// kernel are logged and skipped, other errors returned.
pub fn apply(path: &Path, attrs: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    for (name, value) in attrs {
        match xattr::set(path, name, value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                tracing::warn!(path = %path.display(), %name, error = %e, "ignoring xattr");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let data = pax_data(&[("SCHILY.xattr.a".into(), b"xy".to_vec())]);
        // "21 SCHILY.xattr.a=xy\n" is 21 bytes.
        assert_eq!(data, b"21 SCHILY.xattr.a=xy\n");
        let long = vec![b'v'; 95];
        let data = pax_data(&[("k".into(), long)]);
        let len: usize =
            std::str::from_utf8(&data[..data.iter().position(|&b| b == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
        assert_eq!(len, data.len());
    }

    #[test]
    fn pax_names_as_go() {
        assert_eq!(pax_name(b"bin/ping"), b"bin/PaxHeaders.0/ping");
        assert_eq!(pax_name(b"ping"), b"PaxHeaders.0/ping");
        assert_eq!(pax_name(b"a/dir/"), b"a/PaxHeaders.0/dir");
    }

    #[test]
    fn only_schily_xattrs_are_taken() {
        let recs = [
            (&b"SCHILY.xattr.user.k"[..], &b"v"[..]),
            (&b"path"[..], &b"x"[..]),
        ];
        assert_eq!(
            from_pax(recs.into_iter()),
            vec![("user.k".to_string(), b"v".to_vec())]
        );
    }
}
