//! Command-line arguments, docker's spelling.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A docker-style client for berth-engine"
)]
pub struct Cli {
    /// Engine socket, e.g. unix:///run/berth/engine.sock (else $BERTH_HOST, then $DOCKER_HOST)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a container, printing its output
    Run(RunArgs),
    /// List containers
    Ps(PsArgs),
    /// List images
    Images(ImagesArgs),
    /// Import a rootfs tarball as an image
    Import(ImportArgs),
    /// Print a container's logs
    Logs(LogsArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Stop running containers
    Stop(StopArgs),
    /// Show client and engine versions
    Version,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Name the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (K=V, or K to pass the caller's value)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// IMAGE, then the command and its arguments (taken verbatim)
    #[arg(
        value_name = "IMAGE [COMMAND [ARG...]]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub image_and_command: Vec<String>,
}

impl RunArgs {
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }
    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Tarball to import, or - for stdin
    pub file: String,
    /// Name for the image, REPO[:TAG]
    pub reference: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Number of lines to show from the end of the logs ("all" for everything)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "timeout", visible_alias = "time")]
    pub timeout: Option<u32>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// Splits `REPO[:TAG]`; a colon before the last `/` belongs to a registry port.
pub fn split_reference(reference: &str) -> (String, Option<String>) {
    let after_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[after_slash..].rfind(':') {
        Some(i) => {
            let at = after_slash + i;
            (
                reference[..at].to_string(),
                Some(reference[at + 1..].to_string()),
            )
        }
        None => (reference.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn run_takes_command_verbatim_after_image() {
        let cli = parse(&[
            "-H",
            "unix:///s.sock",
            "run",
            "--rm",
            "-e",
            "A=1",
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ]);
        assert_eq!(cli.host.as_deref(), Some("unix:///s.sock"));
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.rm && !run.detach);
        assert_eq!(run.env, ["A=1"]);
        assert_eq!(run.image(), "busybox");
        assert_eq!(run.command(), ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn run_flags_after_image_belong_to_the_command() {
        let Command::Run(run) =
            parse(&["run", "-d", "--name", "x", "busybox", "ls", "-la", "--rm"]).command
        else {
            panic!("not run")
        };
        assert!(run.detach && !run.rm);
        assert_eq!(run.name.as_deref(), Some("x"));
        assert_eq!(run.command(), ["ls", "-la", "--rm"]);
    }

    #[test]
    fn run_without_image_is_an_error() {
        assert!(Cli::try_parse_from(["berth", "run", "--rm"]).is_err());
    }

    #[test]
    fn other_commands_parse() {
        let Command::Ps(ps) = parse(&["ps", "-a", "-q"]).command else {
            panic!()
        };
        assert!(ps.all && ps.quiet);
        let Command::Rm(rm) = parse(&["rm", "-f", "a", "b"]).command else {
            panic!()
        };
        assert!(rm.force);
        assert_eq!(rm.containers, ["a", "b"]);
        let Command::Stop(stop) = parse(&["stop", "-t", "1", "a"]).command else {
            panic!()
        };
        assert_eq!(stop.timeout, Some(1));
        let Command::Logs(logs) = parse(&["logs", "--tail", "5", "-f", "c"]).command else {
            panic!()
        };
        assert!(logs.follow);
        assert_eq!((logs.tail.as_str(), logs.container.as_str()), ("5", "c"));
        let Command::Import(imp) = parse(&["import", "-", "busybox:1"]).command else {
            panic!()
        };
        assert_eq!(
            (imp.file.as_str(), imp.reference.as_deref()),
            ("-", Some("busybox:1"))
        );
        assert!(matches!(parse(&["version"]).command, Command::Version));
        assert!(Cli::try_parse_from(["berth", "rm"]).is_err());
    }

    #[test]
    fn references_split_at_the_tag_colon() {
        assert_eq!(split_reference("busybox"), ("busybox".into(), None));
        assert_eq!(
            split_reference("busybox:1.36"),
            ("busybox".into(), Some("1.36".into()))
        );
        assert_eq!(split_reference("reg:5000/bb"), ("reg:5000/bb".into(), None));
        assert_eq!(
            split_reference("reg:5000/bb:v1"),
            ("reg:5000/bb".into(), Some("v1".into()))
        );
    }
}
