//! berth-lowrt entry point: parse, seal the binary (CVE-2019-5736), set up logging, run,
//! map the result to an exit code (0 ok, 1 error, or the container's own code for a
//! foreground run/exec).

use clap::Parser;

use berth_lowrt::cli::Cli;
use berth_lowrt::{cloned_binary, logging};

fn main() {
    let cli = Cli::parse();
    let sealed = if cli.command.enters_container() {
        cloned_binary::ensure_sealed()
    } else {
        Ok(())
    };
    let log_ok = logging::init(cli.log.as_deref(), cli.log_format, cli.debug);
    if let Err(e) = &log_ok {
        eprintln!("{e}");
    }
    let has_log_file = cli.log.is_some() && log_ok.is_ok();
    let result = sealed.map_err(anyhow::Error::from).and_then(|()| {
        if cli.command.enters_container() {
            // Non-dumpable: container processes cannot ptrace us or open our
            // /proc/<pid>/fd while we are inside their pid namespace. execve resets it.
            nix::sys::prctl::set_dumpable(false)?;
        }
        Ok(berth_lowrt::dispatch(cli)?)
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // Our messages already carry their causes (runc style); printing the anyhow chain
            // would repeat them.
            let text = format!("{err}");
            if has_log_file {
                tracing::error!("{text}");
            }
            eprintln!("{text}");
            std::process::exit(1);
        }
    }
}
