//! Which repositories of which registries a blob is known to be in, so a push can ask the
//! registry to mount it from there instead of uploading it again. dockerd keeps the same
//! facts in its v2 metadata store; here they live in `<data-root>/distribution/sources.json`
//! (blob digest → `host/repo` entries, most recent first). Losing the file only costs
//! uploads, so failures to read or write it are logged, never returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

/// Entries kept per blob; dockerd also tries only a few mount candidates.
const KEEP: usize = 4;

/// Serializes read-modify-write of the file within the engine.
static LOCK: Mutex<()> = Mutex::const_new(());

type Sources = BTreeMap<String, Vec<String>>;

fn file(root: &Path) -> PathBuf {
    root.join("distribution").join("sources.json")
}

fn load(path: &Path) -> Sources {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable blob sources");
            Sources::new()
        }),
        Err(_) => Sources::new(),
    }
}

/// Notes that `digest` is in `repo` on `host` (after pushing or pulling it there).
pub async fn record(root: &Path, host: &str, repo: &str, digests: &[&str]) {
    let _held = LOCK.lock().await;
    let path = file(root);
    let mut all = load(&path);
    let entry = format!("{host}/{repo}");
    for digest in digests {
        let list = all.entry((*digest).to_string()).or_default();
        list.retain(|e| *e != entry);
        list.insert(0, entry.clone());
        list.truncate(KEEP);
    }
    let result = serde_json::to_vec(&all)
        .map_err(std::io::Error::other)
        .and_then(|raw| {
            std::fs::create_dir_all(path.parent().unwrap_or(root))?;
            berth_fsutil::write_atomic_nosync(&path, &raw)
        });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot record blob sources");
    }
}

/// Repositories on `host` other than `except` that are known to hold `digest`.
pub async fn mount_candidates(root: &Path, host: &str, except: &str, digest: &str) -> Vec<String> {
    let _held = LOCK.lock().await;
    let prefix = format!("{host}/");
    load(&file(root))
        .remove(digest)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_string))
        .filter(|repo| repo != except)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registry_sources_are_per_host_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        record(root, "h:1", "one", &["sha256:a", "sha256:b"]).await;
        record(root, "h:1", "two", &["sha256:a"]).await;
        record(root, "other:2", "three", &["sha256:a"]).await;
        assert_eq!(
            mount_candidates(root, "h:1", "x", "sha256:a").await,
            ["two", "one"]
        );
        assert_eq!(
            mount_candidates(root, "h:1", "one", "sha256:a").await,
            ["two"]
        );
        assert_eq!(
            mount_candidates(root, "h:1", "one", "sha256:b").await,
            Vec::<String>::new()
        );
        assert!(mount_candidates(root, "h:1", "x", "sha256:c")
            .await
            .is_empty());
    }
}
