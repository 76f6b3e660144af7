//! `berth`: a docker-style client of berth-engine's Docker Engine API.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod commands;
pub mod demux;
pub mod error;
pub mod format;
pub mod host;

use args::{Cli, Command};
use client::Client;
pub use error::CliError;

/// Runs one command; returns the process exit code.
pub async fn execute(cli: Cli) -> Result<i32, CliError> {
    let env = |k| std::env::var(k).ok();
    let host = host::resolve(
        cli.host.as_deref(),
        env("BERTH_HOST").as_deref(),
        env("DOCKER_HOST").as_deref(),
    );
    let is_run = matches!(cli.command, Command::Run(_));
    let connected = match host {
        Ok(host) => Client::connect(host).await,
        Err(e) => Err(e),
    };
    let client = match connected {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Command::Version) => {
            commands::version::client_only()?;
            return Err(e);
        }
        Err(e) if is_run => return Err(e.for_run()),
        Err(e) => return Err(e),
    };
    match &cli.command {
        Command::Run(a) => commands::run::run(&client, a).await,
        Command::Ps(a) => commands::containers::ps(&client, a).await,
        Command::Images(a) => commands::images::images(&client, a).await,
        Command::Import(a) => commands::images::import(&client, a).await,
        Command::Logs(a) => commands::containers::logs(&client, a).await,
        Command::Rm(a) => commands::containers::rm(&client, a).await,
        Command::Stop(a) => commands::containers::stop(&client, a).await,
        Command::Version => commands::version::version(&client).await,
    }
}
