use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth_cli::args::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(berth_cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            // A run failure only carries docker's exit code; show what it wraps.
            let shown = match &e {
                berth_cli::CliError::Run { inner, .. } => inner.as_ref(),
                other => other,
            };
            eprintln!("{}", chain(shown));
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The error and its causes, "outer: inner: ...".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
