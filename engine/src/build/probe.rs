//! The container dockerd's legacy builder creates (and never starts) for a config-only
//! step such as ENV, LABEL, CMD or WORKDIR: it announces it with ` ---> Running in <id>`,
//! and `--rm=false` leaves it behind in `docker ps -a` as `Created`. Berth commits those
//! steps without it, but creates it too so the build output and the leftovers match.

use super::exec::{short, Builder, Stage};
use super::meta::shell_of;
use super::BuildError;
use crate::backend::Backend;
use crate::types::{ContainerConfig, CreateRequest, HostConfig, ImageRuntimeConfig, StrSlice};

/// The probe's command: the shell, then `#(nop) ` and the step's text, split as dockerd
/// splits them (WORKDIR keeps them in one word).
pub fn nop_command(runtime: &ImageRuntimeConfig, text: &str, one_word: bool) -> Vec<String> {
    let mut cmd = shell_of(runtime);
    if one_word {
        cmd.push(format!("#(nop) {text}"));
    } else {
        cmd.push("#(nop) ".to_string());
        cmd.push(text.to_string());
    }
    cmd
}

impl<B: Backend> Builder<'_, B> {
    /// Creates the step's container from the stage's image with the step's new `runtime`
    /// config, prints `Running in`, and removes it again (with dockerd's line) unless
    /// `--rm=false`. Call it before committing, so the lines come before ` ---> <id>`.
    pub(super) async fn probe(
        &self,
        s: &mut Stage,
        runtime: &ImageRuntimeConfig,
        cmd: Vec<String>,
    ) -> Result<(), BuildError> {
        self.ensure_image(s).await?;
        let req = CreateRequest {
            config: ContainerConfig {
                image: s.img.id.clone(),
                cmd: StrSlice(Some(cmd)),
                entrypoint: StrSlice(Some(Vec::new())),
                env: runtime.env.clone(),
                user: runtime.user.clone(),
                working_dir: runtime.working_dir.clone(),
                ..Default::default()
            },
            host_config: HostConfig {
                // Never started, so no network (dockerd's says `default`): a berth
                // container is connected when it is created.
                network_mode: "none".into(),
                ..Default::default()
            },
            networking_config: None,
        };
        let id = self.d.create_container(None, req).await?;
        self.out
            .stream(format!(" ---> Running in {}\n", short(&id)))
            .await;
        if self.opts.rm || self.opts.force_rm {
            self.out
                .stream(format!("Removing intermediate container {}\n", short(&id)))
                .await;
            if let Err(e) = self.d.remove_container(&id, true, true).await {
                tracing::warn!(%id, error = %e, "removing an intermediate build container failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nop_commands_as_dockerd_splits_them() {
        let rt = ImageRuntimeConfig::default();
        assert_eq!(
            nop_command(&rt, "ENV A=1", false),
            ["/bin/sh", "-c", "#(nop) ", "ENV A=1"]
        );
        assert_eq!(
            nop_command(&rt, "WORKDIR /w", true),
            ["/bin/sh", "-c", "#(nop) WORKDIR /w"]
        );
    }
}
