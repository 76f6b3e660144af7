//! berth-engine: parse flags, init tracing, run the engine, map the error to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The Docker Engine API daemon of Berth (dockerd's job), a client of berth-highd.
#[derive(Parser, Debug)]
#[command(name = "berth-engine", version)]
struct Args {
    /// Persistent state: container records and logs.
    #[arg(long, default_value = "/var/lib/berth/engine")]
    data_root: PathBuf,
    /// Runtime state: exec FIFOs.
    #[arg(long, default_value = "/run/berth/engine")]
    exec_root: PathBuf,
    /// API socket (only unix:// is supported).
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/berth/engine.sock"
    )]
    host: String,
    /// highd's (or containerd's) gRPC socket.
    #[arg(long, default_value = "/run/berth/highd.sock")]
    containerd: PathBuf,
    /// containerd namespace the engine keeps its images and containers in.
    #[arg(long, default_value = "berth")]
    containerd_namespace: String,
    /// Parent cgroup path of every container.
    #[arg(long, default_value = "/berth")]
    cgroup_parent: String,
    /// Interface name of the default bridge network.
    #[arg(long, default_value = "berth0")]
    bridge_name: String,
    /// The default bridge's address and prefix (e.g. 10.20.0.1/24); by default the first
    /// subnet of the address pool that no host route overlaps.
    #[arg(long)]
    bip: Option<String>,
    /// nftables table (family ip) the engine owns for NAT and published ports.
    #[arg(long, default_value = "berth")]
    firewall_table: String,
    /// MTU of container interfaces (default: the MTU of the default route's interface).
    #[arg(long)]
    mtu: Option<u32>,
    /// Enable net.ipv4.ip_forward at start (needed for outbound traffic of containers).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_forward: bool,
    /// Masquerade outbound traffic of the bridge network.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_masq: bool,
    /// Where the embedded DNS server of user-defined networks forwards the queries it
    /// does not answer (IP or IP:PORT, repeatable); by default the host's resolv.conf
    /// servers. Hidden: for tests, which point it at a fake server of their own.
    #[arg(long = "dns-upstream", hide = true)]
    dns_upstream: Vec<String>,
    /// A registry (HOST[:PORT]) reached over HTTPS without certificate verification,
    /// then over plain HTTP; loopback ones always are.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// Per-registry TLS files: `<dir>/<host:port>/*.crt` (CAs), `client.cert`/`client.key`.
    #[arg(long, default_value = berth_engine::registry::tls::DEFAULT_CERTS_DIR)]
    certs_dir: PathBuf,
    /// Layers one push uploads at once [default: 5].
    #[arg(long, allow_negative_numbers = true)]
    max_concurrent_uploads: Option<i64>,
    /// Run an init (reaping zombies, forwarding signals) in every container by default.
    #[arg(long)]
    init: bool,
    /// The init binary bind-mounted at /sbin/docker-init [default: /usr/bin/tini-static].
    #[arg(long)]
    init_path: Option<PathBuf>,
    /// Real-time period (µs) written to the cgroup parent and its ancestors before a
    /// container with real-time CPU settings starts (cgroup v1), as dockerd's.
    #[arg(long)]
    cpu_rt_period: Option<i64>,
    /// Real-time runtime (µs per period) given to the cgroup parent and its ancestors: the
    /// budget containers' --cpu-rt-runtime share (a new cgroup has none).
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    /// How many layers a pull downloads at once [default: 3].
    #[arg(long)]
    max_concurrent_downloads: Option<i64>,
    /// A Docker Hub mirror (http:// or https:// URL, repeatable), tried in order before
    /// Docker Hub for docker.io references.
    #[arg(long = "registry-mirror")]
    registry_mirror: Vec<String>,
    /// daemon.json with dockerd's key names (supported: init, init-path,
    /// insecure-registries, cpu-rt-period, cpu-rt-runtime, max-concurrent-downloads,
    /// max-concurrent-uploads, registry-mirrors)
    /// [default: /etc/berth/daemon.json, when it exists].
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// trace, debug, info, warn, error (for berth's crates), or a full tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A bare level is for our own crates; gRPC/HTTP internals stay at warn unless a full
    // filter (`h2=debug,...`) asks for them.
    let directive = if args.log_level.contains(['=', ',']) {
        args.log_level.clone()
    } else {
        let l = &args.log_level;
        format!("warn,berth_engine={l},berth_proto={l}")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-engine: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let required = args.config_file.is_some();
    let file = args
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/berth/daemon.json"));
    let file_config = berth_engine::config::read_config_file(&file, required)?;
    let insecure =
        berth_engine::config::insecure_registries(&file, &file_config, args.insecure_registry)?;
    berth_engine::registry::tls::configure(insecure, args.certs_dir)?;
    berth_engine::registry::settings::configure(berth_engine::config::pull_settings(
        &file,
        &file_config,
        args.max_concurrent_downloads,
        args.registry_mirror,
    )?);
    let mut network =
        berth_engine::network::NetworkConfig::new(args.bridge_name, args.firewall_table);
    network.bip = args
        .bip
        .as_deref()
        .map(berth_engine::network::parse_bip)
        .transpose()?;
    network.mtu = args.mtu;
    network.ip_forward = args.ip_forward;
    network.ip_masq = args.ip_masq;
    network.dns_upstreams = args
        .dns_upstream
        .iter()
        .map(|s| {
            berth_engine::network::dns_server::parse_upstream(s)
                .ok_or_else(|| anyhow::anyhow!("--dns-upstream {s:?}: expected IP or IP:PORT"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut config = berth_engine::Config::new(
        args.data_root,
        args.exec_root,
        &args.host,
        args.containerd,
        args.containerd_namespace,
        args.cgroup_parent,
    )?;
    config.network = Some(network);
    berth_engine::registry::set_max_concurrent_uploads(
        berth_engine::config::max_concurrent_uploads(
            &file,
            &file_config,
            args.max_concurrent_uploads,
        )?,
    );
    config.rt_budget = berth_engine::config::rt_budget(
        &file,
        &file_config,
        args.cpu_rt_period,
        args.cpu_rt_runtime,
    )?;
    config.init =
        berth_engine::config::init_config(&file, &file_config, args.init, args.init_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(berth_engine::run(config))?;
    Ok(())
}
