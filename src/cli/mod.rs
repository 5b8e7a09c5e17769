//! The `dso` command line: local store (`secret`), `init`, `config validate`.
//! Errors are one line, `dso: <what>`, on stderr; exit 1, or 2 for a usage error.

mod agent;
mod init;
mod rotate;
mod secret;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "dso",
    version,
    about = "Secrets for Docker containers, without a plaintext value on the host's disk",
    propagate_version = true
)]
struct Cli {
    /// The dso.yaml to use [default: $DSO_CONFIG, else /etc/dso/dso.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a key file, an empty local store and a starter dso.yaml (never overwrites)
    Init(init::InitArgs),
    /// Manage secrets in the local encrypted store
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Work with dso.yaml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the agent in the foreground: keep secrets fresh in running containers
    Agent(agent::AgentArgs),
    /// Re-fetch a secret and re-inject it into the running containers that use it, now
    Rotate(rotate::RotateArgs),
    /// Managed containers, their secrets and versions (never values)
    #[command(visible_alias = "ps")]
    Status(rotate::StatusArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check dso.yaml against the schema and the semantic rules
    Validate,
}

/// Runs the `dso` CLI; returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let config_path = config::config_path(cli.config.as_deref());
    let result = match cli.command {
        Command::Init(args) => init::run(&config_path, &args).map(|()| 0),
        Command::Secret(cmd) => secret::run(&config_path, cmd).map(|()| 0),
        Command::Config(ConfigCommand::Validate) => Ok(validate(&config_path)),
        Command::Agent(args) => agent::run(&config_path, &args),
        Command::Rotate(args) => rotate::rotate(&config_path, &args),
        Command::Status(args) => rotate::status(&config_path, &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dso: {e}");
            1
        }
    }
}

/// `dso config validate`: `<path>: valid` on stdout, or one line per problem on stderr.
fn validate(path: &Path) -> i32 {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: valid", path.display());
            0
        }
        Err(e) => {
            let prefix = match &e {
                // Schema messages are `line N: key: message`; say which file.
                ConfigError::Invalid { path, .. } => format!("{}: ", path.display()),
                _ => String::new(),
            };
            for msg in e.messages() {
                eprintln!("dso: {prefix}{msg}");
            }
            1
        }
    }
}

/// Loads dso.yaml for a command that needs it, with a hint when it is missing.
fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| match &e {
        ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!(
                "config {} does not exist; run `dso init` or pass --config PATH",
                path.display()
            )
        }
        _ => anyhow::anyhow!("{}", e.messages().join("; ")),
    })
}
