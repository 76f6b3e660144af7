//! The image a FROM starts from: found locally, or pulled from its registry when missing
//! (always with `--pull`) with the pull's progress lines in the build output, as dockerd's
//! legacy builder does; then its ONBUILD triggers run as the stage's first steps.

use std::collections::HashMap;

use base64::Engine as _;
use tokio::sync::mpsc;

use super::dockerfile;
use super::exec::{Builder, Img, Stage};
use super::meta;
use super::BuildError;
use crate::backend::Backend;
use crate::daemon::DaemonError;
use crate::refs::Reference;
use crate::registry::{self, Credentials, PullOptions};

/// `X-Registry-Config`: base64url JSON of registry host → credentials, every login the
/// CLI knows (the build may pull from any of them). Undecodable headers count as none,
/// as dockerd does.
pub fn registry_config(header: &str) -> HashMap<String, Credentials> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let header = header.trim();
    let raw = URL_SAFE
        .decode(header)
        .or_else(|_| URL_SAFE_NO_PAD.decode(header))
        .or_else(|_| STANDARD.decode(header))
        .unwrap_or_default();
    let map: HashMap<String, Credentials> = serde_json::from_slice(&raw).unwrap_or_default();
    map.into_iter()
        .filter_map(|(host, c)| Some((bare_host(&host), c.normalized()?)))
        .collect()
}

/// `http://host:5000/v1/` → `host:5000`.
fn bare_host(address: &str) -> String {
    let s = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    s.split('/').next().unwrap_or("").to_string()
}

impl<B: Backend> Builder<'_, B> {
    /// The base image named `base`, pulled when it is missing or `--pull` was given.
    pub async fn base_image(&self, base: &str) -> Result<Img, BuildError> {
        if !self.opts.pull {
            match self.d.image(base).await {
                Ok(v) => return Ok(Img::from_view(v)),
                Err(DaemonError::NoSuchImage { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pull(base).await?;
        Ok(Img::from_view(self.d.image(base).await?))
    }

    async fn pull(&self, base: &str) -> Result<(), BuildError> {
        let reference = Reference::parse(base)
            .map_err(|e| BuildError::Invalid {
                message: e.to_string(),
            })?
            .with_default_tag();
        let creds = self.opts.auth.get(&reference.domain).cloned();
        let (tx, mut rx) = mpsc::channel::<serde_json::Value>(64);
        let out = self.out.clone();
        // The CLI renders these as the pull bars it shows for `docker pull`.
        let forward = tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                if !out.quiet {
                    out.send(v).await;
                }
            }
        });
        let opts = PullOptions { reference, creds };
        let result = registry::pull::pull(self.d, opts, &tx).await;
        drop(tx);
        let _ = forward.await;
        result.map(|_| ()).map_err(|e| match e {
            registry::RegistryError::Daemon(d) => d.into(),
            e => BuildError::Invalid {
                message: e.to_string(),
            },
        })
    }

    /// Runs the base image's ONBUILD triggers in the new stage (dockerd's
    /// `processOnBuild`): the triggers leave the stage's config, so the child image does
    /// not carry them on.
    pub async fn run_triggers(&mut self, s: &mut Stage) -> Result<(), BuildError> {
        let Some(runtime) = s.img.config.config.as_mut() else {
            return Ok(());
        };
        let triggers: Vec<String> = match runtime.extra.remove("OnBuild") {
            Some(serde_json::Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        if triggers.is_empty() {
            return Ok(());
        }
        let word = if triggers.len() == 1 {
            "trigger"
        } else {
            "triggers"
        };
        self.out
            .stream(format!("# Executing {} build {word}\n", triggers.len()))
            .await;
        for t in &triggers {
            meta::check_onbuild(t)?;
            for i in dockerfile::parse(t)? {
                self.step(s, &i).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_config_header() {
        let raw = json!({
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("a:b")},
            "empty": {},
        });
        let h = base64::engine::general_purpose::URL_SAFE.encode(raw.to_string());
        let m = registry_config(&h);
        assert_eq!(m["127.0.0.1:5000"].username, "u");
        assert_eq!(m["index.docker.io"].password, "b");
        assert!(!m.contains_key("empty"));
        assert!(registry_config("%%%").is_empty());
    }
}
