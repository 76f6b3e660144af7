//! `docker run -u user[:group]`: names resolved from the image's /etc/passwd and
//! /etc/group the way dockerd does (runc's `user.GetExecUser`), with its error messages.
//! The files are read from the image's layers in highd's content store (top layer
//! first), so no snapshot has to be mounted in the engine.

use std::io::Read;

use crate::backend::{Backend, BackendError, Descriptor};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoGroup { group: String },
    #[error("read {path} from image layer {digest}: {source}")]
    Layer {
        path: &'static str,
        digest: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The numeric identity a container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Whether `user` can be resolved without the image's files (`uid:gid`, both numeric).
pub fn is_numeric_pair(user: &str) -> bool {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    user.split_once(':').is_some_and(|(u, g)| num(u) && num(g))
}

/// Whether resolving `user` needs the image's passwd/group files.
pub fn needs_files(user: &str) -> bool {
    !(user.is_empty() || user == "root" || is_numeric_pair(user))
}

/// Resolves `user[:group]` against passwd/group contents (`None`: the file is missing).
/// A numeric user missing from passwd runs with gid 0, as with runc.
pub fn resolve(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "root" } else { u };
    let entries = passwd.map(parse_passwd).unwrap_or_default();
    let numeric_uid = u.parse::<u32>().ok();
    let found = entries
        .iter()
        .find(|e| e.name == u || numeric_uid == Some(e.uid));
    let (uid, mut gid, name) = match (found, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.clone())),
        (None, Some(n)) => (n, 0, None),
        // root exists even in an image without /etc/passwd.
        (None, None) if u == "root" => (0, 0, Some("root".into())),
        (None, None) => return Err(UserError::NoUser { user: u.into() }),
    };
    let groups = group.map(parse_group).unwrap_or_default();
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup { group: g.into() })?,
        };
    }
    let mut additional_gids: Vec<u32> = match &name {
        Some(n) => groups
            .iter()
            .filter(|e| e.members.iter().any(|m| m == n))
            .map(|e| e.gid)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
    })
}

impl ExecUser {
    /// The OCI `process.user` (with `additionalGids` when there are any).
    pub fn to_json(&self) -> serde_json::Value {
        let mut user = serde_json::json!({"uid": self.uid, "gid": self.gid});
        if !self.additional_gids.is_empty() {
            user["additionalGids"] = serde_json::json!(self.additional_gids);
        }
        user
    }

    /// Sets the spec's `process.user`.
    pub fn apply(&self, spec: &mut serde_json::Value) {
        spec["process"]["user"] = self.to_json();
    }
}

/// The identity for a container's `User`: root and numeric `uid:gid` need no files; any
/// other form reads the image's passwd and group.
pub async fn for_image<B: Backend>(
    backend: &B,
    layers: &[Descriptor],
    user: &str,
) -> Result<ExecUser, UserError> {
    if !needs_files(user) {
        return resolve(user, None, None);
    }
    let (passwd, group) = read_image_files(backend, layers).await?;
    resolve(user, passwd.as_deref(), group.as_deref())
}

/// Reads `etc/passwd` and `etc/group` from the image's layers, the upper layer winning
/// (a whiteout hides a lower file).
pub async fn read_image_files<B: Backend>(
    backend: &B,
    layers: &[Descriptor],
) -> Result<(Option<String>, Option<String>), UserError> {
    let mut passwd: Option<Option<String>> = None;
    let mut group: Option<Option<String>> = None;
    for layer in layers.iter().rev() {
        if passwd.is_some() && group.is_some() {
            break;
        }
        let data = backend.content_read(&layer.digest).await?;
        let layer_err = |source| UserError::Layer {
            path: "etc/passwd",
            digest: layer.digest.clone(),
            source,
        };
        let reader: Box<dyn Read> = if data.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(data.as_slice()))
        } else {
            Box::new(data.as_slice())
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(layer_err)? {
            let mut entry = entry.map_err(layer_err)?;
            let path = entry
                .path()
                .map_err(layer_err)?
                .to_string_lossy()
                .into_owned();
            let path = path.trim_start_matches("./").trim_start_matches('/');
            let slot = match path {
                "etc/passwd" | "etc/.wh.passwd" => &mut passwd,
                "etc/group" | "etc/.wh.group" => &mut group,
                _ => continue,
            };
            if slot.is_some() {
                continue;
            }
            if path.contains(".wh.") {
                *slot = Some(None);
                continue;
            }
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(layer_err)?;
            *slot = Some(Some(text));
        }
    }
    Ok((passwd.flatten(), group.flatten()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:1:1::/:/bin/false\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1001:\n";

    fn r(user: &str) -> Result<ExecUser, UserError> {
        resolve(user, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_resolve_from_passwd_and_group() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![10, 50]);
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        let u = r("daemon:0").unwrap();
        assert_eq!((u.uid, u.gid), (1, 0));
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (0, 0, vec![10]));
    }

    #[test]
    fn numbers_work_with_or_without_entries() {
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![]));
        let u = resolve("7:8", None, None).unwrap();
        assert_eq!((u.uid, u.gid), (7, 8));
        assert!(is_numeric_pair("7:8"));
        assert!(!is_numeric_pair("7"));
        assert!(!is_numeric_pair("app:8"));
    }

    #[test]
    fn dockerd_errors_for_unknown_names() {
        assert_eq!(
            r("nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:nogroup").unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve("app", None, None).is_err());
        assert_eq!(resolve("root", None, None).unwrap().uid, 0);
    }
}
