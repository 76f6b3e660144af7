//! berth-highd: parse flags, set up logging, run the daemon, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// containerd's job in the Berth stack (docs/highd.md).
#[derive(Debug, Parser)]
#[command(name = "berth-highd", version = berth_highd::version::VERSION)]
struct Args {
    /// Persistent state (metadata DB, content, snapshots) [default: /var/lib/berth/highd]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state (task dirs) [default: /run/berth/highd]
    #[arg(long)]
    state: Option<PathBuf>,
    /// gRPC unix socket [default: /run/berth/highd.sock]
    #[arg(long, short = 'a')]
    address: Option<PathBuf>,
    /// Shim binary [default: berth-shim next to this executable, then in $PATH]
    #[arg(long)]
    shim: Option<PathBuf>,
    /// OCI runtime binary given to shims [default: berth-lowrt, looked up like --shim]
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// TOML config file
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace); debug also starts
    /// shims with --debug
    #[arg(long, short = 'l', default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A bare level applies to our crates only: h2/hyper at debug drown everything else.
    // Anything else is taken as a full tracing filter.
    let directive = match args.log_level.as_str() {
        l @ ("error" | "warn" | "info" | "debug" | "trace") => {
            format!("warn,berth_highd={l},berth_proto={l}")
        }
        other => other.to_string(),
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&directive) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("berth-highd: invalid --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-highd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let debug_shims = matches!(args.log_level.as_str(), "debug" | "trace");
    let flags = berth_highd::Flags {
        root: args.root,
        state: args.state,
        address: args.address,
        shim: args.shim,
        runtime: args.runtime,
        config: args.config,
    };
    let cfg = berth_highd::Config::load(flags, &exe)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(berth_highd::run(cfg, berth_highd::Options { debug_shims }))?;
    Ok(())
}
