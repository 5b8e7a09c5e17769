//! The `dso` command line: local store (`secret`), `init`, `config`, the agent and rotation,
//! registration with dockerd (`install`/`uninstall`), host checks (`doctor`), and the generated
//! shell completions and man pages. Errors are one line, `dso: <what>; <what to do>`, on
//! stderr. Exit codes: 0 success, 1 failure (a failed doctor check included), 2 usage error.

mod agent;
mod audit;
mod declare;
mod doctor;
mod init;
mod install;
mod policy;
mod rotate;
mod secret;
mod tty;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, ConfigError};

const ROOT_EXAMPLES: &str = "Examples:
  dso init                                   # key file, local store, starter /etc/dso/dso.yaml
  dso secret set db_password < value.txt     # value on stdin, never in argv
  dso install                                # register runtime `dso` with dockerd, reload it
  dso doctor                                 # check this host
  docker run --runtime dso -e DB_PASSWORD_FILE=dsofile://db_password postgres:16";

#[derive(Debug, Parser)]
#[command(
    name = "dso",
    version,
    about = "Secrets for Docker containers, without a plaintext value on the host's disk",
    long_about = "Secrets for Docker containers, without a plaintext value on the host's disk.\n\n\
        dso-runc (an OCI runtime wrapping runc) fills secrets named in a container's environment \
        (NAME=dso://secret, NAME_FILE=dsofile://secret) or annotations (dso.secrets/NAME) into a \
        tmpfs inside the container; `dso` manages the local store, the configuration, the agent \
        that rotates secrets, and the registration with dockerd.",
    after_help = ROOT_EXAMPLES,
    after_long_help = concat!(
        "Examples:\n",
        "  dso init                                   # key file, local store, starter /etc/dso/dso.yaml\n",
        "  dso secret set db_password < value.txt     # value on stdin, never in argv\n",
        "  dso install                                # register runtime `dso` with dockerd, reload it\n",
        "  dso doctor                                 # check this host\n",
        "  docker run --runtime dso -e DB_PASSWORD_FILE=dsofile://db_password postgres:16\n\n",
        "Exit status:\n",
        "  0  success\n",
        "  1  failure (the message on stderr says what and what to do); `dso doctor`: a check failed\n",
        "  2  usage error (unknown flag, missing argument)\n\n",
        "Environment:\n",
        "  DSO_CONFIG   dso.yaml to use when --config is not given (default /etc/dso/dso.yaml)\n",
        "  DOCKER_HOST  Engine API (unix:///PATH) for install, doctor and the restart strategy"
    ),
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
    #[command(
        after_help = "Examples:\n  dso init\n  dso --config ./dso.yaml init --store ./store.vault --key-file ./master.key"
    )]
    Init(init::InitArgs),
    /// Manage secrets in the local encrypted store
    #[command(
        subcommand,
        after_help = "Examples:\n  dso secret set db_password < value.txt\n  dso secret ls --json\n  dso secret rm db_password"
    )]
    Secret(secret::SecretCommand),
    /// Work with dso.yaml
    #[command(
        subcommand,
        after_help = "Examples:\n  dso config validate\n  dso --config runtime-config/examples/vault.yaml config validate\n  dso config reference > docs/config-reference.md"
    )]
    Config(ConfigCommand),
    /// Run the agent in the foreground: keep secrets fresh in running containers
    #[command(
        after_help = "Examples:\n  dso agent                    # what the dso-agent systemd unit runs\n  dso agent --once             # one watch cycle, then exit"
    )]
    Agent(agent::AgentArgs),
    /// Who gets which secret: the access policy of dso.yaml explained
    #[command(
        subcommand,
        after_help = "Examples:\n  dso policy explain\n  dso policy explain --docker-name billing-api\n  dso policy explain --k8s-namespace billing --json"
    )]
    Policy(policy::PolicyCommand),
    /// Re-fetch a secret and re-inject it into the running containers that use it, now
    #[command(after_help = "Examples:\n  dso rotate db_password\n  dso rotate --container 3f2a9c")]
    Rotate(rotate::RotateArgs),
    /// Managed containers, their secrets and versions (never values)
    #[command(
        visible_alias = "ps",
        after_help = "Examples:\n  dso status\n  dso ps --json | jq '.[].secrets[].name'"
    )]
    Status(rotate::StatusArgs),
    /// Register dso-runc as a runtime in dockerd's daemon.json and reload dockerd
    #[command(
        long_about = "Register dso-runc as a runtime in dockerd's daemon.json and reload dockerd.\n\n\
            Adds runtimes.<name> = {path, runtimeArgs: [--dso-config=...]}, keeping every other key; \
            refuses a daemon.json that does not parse; keeps a copy of the previous file \
            (<file>.<time>.dso-backup); writes atomically with the file's mode; then sends dockerd \
            SIGHUP and waits until the Engine API lists the runtime. Running it again changes nothing.",
        after_help = "Examples:\n  dso install\n  dso install --default                     # every container goes through dso\n  dso install --name dso-test --runtime-path ./target/debug/dso-runc --dso-config ./dso.yaml\n  dso install --daemon-json /tmp/d/daemon.json --dockerd-pidfile /tmp/d/docker.pid --docker-host unix:///tmp/d/docker.sock"
    )]
    Install(install::InstallArgs),
    /// Remove dso's runtime from dockerd's daemon.json and reload dockerd
    #[command(
        long_about = "Remove dso's runtime from dockerd's daemon.json and reload dockerd.\n\n\
            Removes runtimes.<name> (and default-runtime when it names it), keeping every other key, \
            with the same backup and atomic write as install. Containers already running keep running.",
        after_help = "Examples:\n  dso uninstall\n  dso uninstall --name dso-test --no-reload"
    )]
    Uninstall(install::UninstallArgs),
    /// Check this host: runc, dockerd, the runtime registration, dso.yaml, file permissions, agent, providers
    #[command(
        after_help = "Examples:\n  dso doctor\n  dso doctor --json | jq '.checks[] | select(.status == \"fail\")'\n  dso doctor --skip dockerd        # a host with podman or containerd only\n\nExit status: 0 when no check failed (warnings allowed), 1 otherwise."
    )]
    Doctor(doctor::DoctorArgs),
    /// Check the audit trail (hash chain)
    #[command(
        subcommand,
        after_help = "Examples:\n  dso audit verify\n  dso audit verify /var/log/dso/audit.log.1 /var/log/dso/audit.log"
    )]
    Audit(audit::AuditCommand),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  dso completions bash > /usr/share/bash-completion/completions/dso\n  dso completions zsh > /usr/share/zsh/vendor-completions/_dso\n  dso completions fish > /usr/share/fish/vendor_completions.d/dso.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (dso.1, dso-install.1, ...) into a directory
    #[command(
        after_help = "Examples:\n  dso man --dir /usr/share/man/man1\n  dso man --dir target/man && man -l target/man/dso-doctor.1"
    )]
    Man {
        /// Where to write the pages (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check dso.yaml against the schema and the semantic rules
    #[command(
        after_help = "Examples:\n  dso config validate\n  dso --config ./dso.yaml config validate"
    )]
    Validate,
    /// Print the dso.yaml reference (Markdown), generated from the JSON Schema
    #[command(after_help = "Examples:\n  dso config reference > docs/config-reference.md")]
    Reference,
    /// Print the JSON Schema of dso.yaml (for editors: `# yaml-language-server: $schema=...`)
    #[command(after_help = "Examples:\n  dso config schema > dso.schema.json")]
    Schema,
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
        Command::Policy(cmd) => policy::run(&config_path, cmd),
        Command::Rotate(args) => rotate::rotate(&config_path, &args),
        Command::Status(args) => rotate::status(&config_path, &args),
        Command::Install(args) => install::install(&config_path, &args),
        Command::Uninstall(args) => install::uninstall(&args),
        Command::Doctor(args) => doctor::run(&config_path, &args),
        Command::Audit(cmd) => audit::run(&config_path, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "dso", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => write_man_pages(&dir).map(|()| 0),
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", config::reference::markdown());
            Ok(0)
        }
        Command::Config(ConfigCommand::Schema) => {
            print!("{}", config::schema_json());
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dso: {e}");
            1
        }
    }
}

/// One page per command and subcommand: `dso.1`, `dso-secret-set.1`, ...
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| anyhow!("cannot write man pages into {}: {e}", dir.display()))
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
