//! Git build contexts (`remote=git://host/repo.git#ref:subdir`), fetched the way dockerd
//! 20.10 does it: `git init`, `git remote add origin`, a shallow `git fetch origin <ref>`,
//! `git checkout <ref>` (or `FETCH_HEAD`), submodules, then the subdirectory is the
//! context. The docker CLI clones git contexts itself and uploads a tar; API clients
//! such as docker-py send the URL.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BuildError;

/// dockerd's `urlutil.IsGitURL`.
pub fn is_git(remote: &str) -> bool {
    remote.starts_with("git://")
        || remote.starts_with("git@")
        || remote.starts_with("github.com/")
        || ((remote.starts_with("http://") || remote.starts_with("https://"))
            && remote
                .split(['#', '?'])
                .next()
                .is_some_and(|u| u.ends_with(".git")))
}

/// A git context URL split into the remote, the ref (default `master`, as in dockerd
/// 20.10) and the subdirectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRemote {
    pub remote: String,
    pub reference: String,
    pub subdir: String,
}

impl GitRemote {
    pub fn parse(url: &str) -> Self {
        let url = if url.starts_with("github.com/") {
            format!("https://{url}")
        } else {
            url.to_string()
        };
        let (remote, fragment) = url.split_once('#').unwrap_or((&url, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        Self {
            remote: remote.to_string(),
            reference: if reference.is_empty() {
                "master".into()
            } else {
                reference.to_string()
            },
            subdir: subdir.to_string(),
        }
    }
}

fn fail(message: String) -> BuildError {
    BuildError::Context { message }
}

/// Runs git in `dir`; returns its combined output, or the output and the exit status.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        // Never wait for a password on a terminal the engine does not have.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0")
        .output()
        .map_err(|e| format!("git {}: {e}", args.first().unwrap_or(&"")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        let code = out.status.code().unwrap_or(-1);
        Err(format!("{text}: exit status {code}"))
    }
}

/// Fetches `url` into `dir` (created) and returns the context directory inside it.
pub fn fetch(url: &str, dir: &Path) -> Result<PathBuf, BuildError> {
    let repo = GitRemote::parse(url);
    std::fs::create_dir_all(dir).map_err(|source| BuildError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    git(dir, &["init", "-q"])
        .map_err(|e| fail(format!("failed to init repo at {}: {e}", dir.display())))?;
    git(dir, &["remote", "add", "origin", &repo.remote])
        .map_err(|e| fail(format!("failed add origin repo at {}: {e}", dir.display())))?;
    git(
        dir,
        &["fetch", "--depth", "1", "origin", "--", &repo.reference],
    )
    .map_err(|e| fail(format!("error fetching: {e}")))?;
    if let Err(e) = git(dir, &["checkout", &repo.reference]) {
        git(dir, &["checkout", "FETCH_HEAD"])
            .map_err(|_| fail(format!("error checking out {}: {e}", repo.reference)))?;
    }
    git(
        dir,
        &["submodule", "update", "--init", "--recursive", "--depth=1"],
    )
    .map_err(|e| fail(format!("error initializing submodules: {e}")))?;
    if repo.subdir.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let sub = dir.join(&repo.subdir);
    let real = std::fs::canonicalize(&sub)
        .map_err(|e| fail(format!("stat {}: {}", sub.display(), go_errno(&e))))?;
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !real.starts_with(&root) {
        return Err(fail(format!(
            "error setting git context, {:?} not within git root",
            repo.subdir
        )));
    }
    if !real.is_dir() {
        return Err(fail(format!(
            "error setting git context, not a directory: {}",
            sub.display()
        )));
    }
    Ok(real)
}

/// An I/O error as Go prints it (`no such file or directory`).
fn go_errno(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_dockerd_does() {
        assert_eq!(
            GitRemote::parse("git://h:1/r.git#dev:a/b"),
            GitRemote {
                remote: "git://h:1/r.git".into(),
                reference: "dev".into(),
                subdir: "a/b".into()
            }
        );
        let r = GitRemote::parse("github.com/o/r");
        assert_eq!(
            (r.remote.as_str(), r.reference.as_str(), r.subdir.as_str()),
            ("https://github.com/o/r", "master", "")
        );
        assert!(is_git("https://h/r.git#x") && is_git("git@h:r") && !is_git("http://h/c.tar"));
    }
}
