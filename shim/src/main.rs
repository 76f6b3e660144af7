//! berth-shim: parse the command line, set up logging, run, map the result to an exit code.

use std::process::ExitCode;

use berth_shim::config::ShimConfig;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-shim", version, about = "Berth's per-container shim")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the shim daemon for a task and print its socket path.
    Start(ShimConfig),
    /// The daemon itself (run by `start`).
    #[command(hide = true)]
    Serve {
        #[command(flatten)]
        config: ShimConfig,
        /// Pipe to report readiness on.
        #[arg(long)]
        ready_fd: i32,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 1 like every other failure (docs/ARCHITECTURE.md), not clap's 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Cmd::Start(config) => {
            init_logging(std::io::stderr(), config.debug);
            match berth_shim::daemon::start(config) {
                Ok(socket) => {
                    println!("{}", socket.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("berth-shim: {}", berth_shim::error_chain(&err));
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve { config, ready_fd } => {
            berth_shim::daemon::close_inherited_fds(ready_fd);
            let log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(config.log_path());
            match log {
                Ok(file) => init_logging(file, config.debug),
                Err(_) => init_logging(std::io::sink(), config.debug),
            }
            match berth_shim::daemon::serve(config, ready_fd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %berth_shim::error_chain(&err), "shim failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(writer: impl std::io::Write + Send + 'static, debug: bool) {
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    berth_shim::log::LineLogger::new(writer, level).install();
}
