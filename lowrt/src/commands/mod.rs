//! One function per runc command. Each takes the validated global options and its own
//! options, does its work synchronously and returns the process exit code.

mod create;
mod events;
mod exec;
mod info;
mod lifecycle;
mod run;
mod tty;
mod update;

use std::path::PathBuf;

pub use create::{create, CreateOptions};
pub use events::events;
pub use exec::{exec, ExecOptions};
pub use info::features;
pub use lifecycle::{delete, kill, list, pause, ps, resume, spec, start, state, ListFormat};
pub use run::run;
pub use update::update;

/// Global flags every command sees.
#[derive(Debug, Clone)]
pub struct Globals {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

impl Globals {
    pub fn ensure_root(&self) -> Result<(), crate::ContainerError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(crate::container::io_err("create root", &self.root))
    }
}
