//! `dso secret set/get/ls/rm`: the local encrypted store of a `type: local` provider. Values
//! come in on stdin or from a file and go out on stdout only; never through argv, never in a
//! message.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::declare::{Declaration, Declared};
use crate::config::Config;
use crate::providers::local::{EntryInfo, LocalSettings, MAX_VALUE_LEN, Store};
use crate::secrets::{SecretValue, validate_name};

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Create or update a secret. The value is read from stdin or --from-file, never from argv
    #[command(
        long_about = "Create or update a secret in the local store. The value is read from stdin or --from-file, never from argv.\n\n\
            At a terminal the value is typed without echo, twice (the two must match); the Enter that ends \
            it is not part of the value unless --keep-newline is given. From a pipe or a file the value is \
            stored byte for byte, a trailing newline included (use printf %s, not echo; dso says when a \
            one-line value ends with a newline).\n\n\
            --declare also adds the secret to dso.yaml's secrets: (provider and --allow grants), editing the \
            file's text so that its comments and layout stay; nothing is stored if that edit cannot be made.",
        after_help = "Examples:\n  dso secret set db_password                                  # typed at the terminal, not echoed\n  printf %s \"$PW\" | dso secret set db_password --declare --allow docker:web\n  dso secret set db_password < value.txt\n  dso secret set tls_key --from-file key.pem"
    )]
    Set {
        name: String,
        /// Read the value from this file instead of stdin ("-" is stdin)
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Keep the newline that ends a value typed at a terminal (dropped by default)
        #[arg(long)]
        keep_newline: bool,
        /// Also declare the secret in dso.yaml (secrets: NAME: {provider, allow}), keeping the file's comments
        #[arg(long)]
        declare: bool,
        /// With --declare: grant it to docker:CONTAINER_NAME_GLOB or kubernetes:NAMESPACE_GLOB (repeatable)
        #[arg(long, value_name = "ENGINE:GLOB", requires = "declare")]
        allow: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a secret's value, raw bytes and nothing else, to stdout
    #[command(
        after_help = "Examples:\n  dso secret get db_password > /dev/null && echo present\n  dso secret get api_key | sha256sum"
    )]
    Get {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List secrets with version and update time (never values)
    #[command(after_help = "Examples:\n  dso secret ls\n  dso secret ls --json | jq -r '.[].name'")]
    Ls {
        /// Print a JSON array of {name, version, updated, updated_unix}
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a secret
    #[command(after_help = "Examples:\n  dso secret rm old_token")]
    Rm {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub(super) struct StoreArgs {
    /// The `type: local` provider of dso.yaml to use (needed only when there are several)
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
}

pub(super) fn run(config_path: &Path, cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set {
            name,
            from_file,
            keep_newline,
            declare,
            allow,
            store,
        } => {
            validate_name(&name)?;
            let allow = allow
                .iter()
                .map(|a| super::declare::parse_allow(a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!(e))?;
            let (cfg, provider, settings) = local_settings(config_path, store.provider.as_deref())?;
            // Checked first: a config that cannot take the entry is reported before a value
            // is read or stored.
            let declaration = if declare {
                Some(Declaration::plan(config_path, &name, &provider, &allow)?)
            } else {
                None
            };
            // Open first: a bad key file or store is reported before anyone types a value.
            let mut store = Store::open(&settings.path, &settings.key_file)?;
            let value = read_value(&name, from_file.as_deref(), keep_newline)?;
            let version = store.set(&name, SecretValue::from_zeroizing(value))?;
            eprintln!(
                "dso: secret {name:?} stored in {} (version {version})",
                settings.path.display()
            );
            let shown = config_path.display();
            match declaration.map(Declaration::write).transpose() {
                Err(e) => {
                    bail!("{e}; the value is stored, but {name:?} is not declared in {shown}")
                }
                Ok(Some(Declared::Added)) => {
                    eprintln!("dso: secret {name:?} declared in {shown} (provider {provider:?})")
                }
                Ok(Some(Declared::AlreadyThere)) => {
                    eprintln!("dso: secret {name:?} was already declared in {shown}")
                }
                Ok(None) if !cfg.secrets.contains_key(&name) => eprintln!(
                    "dso: note: {name:?} is not declared in {shown}, so no container can use it yet: run again with --declare --allow docker:CONTAINER_NAME, or add under secrets: {name}: {{ provider: {provider}, allow: [ {{docker: {{name: \"CONTAINER_NAME\"}}}} ] }}"
                ),
                Ok(None) => {}
            }
            Ok(())
        }
        SecretCommand::Get { name, store } => {
            validate_name(&name)?;
            let (_, _, settings) = local_settings(config_path, store.provider.as_deref())?;
            let store = Store::open(&settings.path, &settings.key_file)?;
            let (value, _) = store
                .get(&name)
                .ok_or_else(|| not_found(&name, &settings.path))?;
            write_stdout(value.expose()).map_err(|e| anyhow!("cannot write to stdout: {e}"))
        }
        SecretCommand::Ls { json, store } => {
            let (_, _, settings) = local_settings(config_path, store.provider.as_deref())?;
            let store = Store::open(&settings.path, &settings.key_file)?;
            let entries = store.list();
            if json {
                println!("{}", list_json(&entries));
            } else if entries.is_empty() {
                eprintln!("dso: no secrets in {}", settings.path.display());
            } else {
                print!("{}", list_table(&entries));
            }
            Ok(())
        }
        SecretCommand::Rm { name, store } => {
            validate_name(&name)?;
            let (_, _, settings) = local_settings(config_path, store.provider.as_deref())?;
            let mut store = Store::open(&settings.path, &settings.key_file)?;
            if !store.remove(&name)? {
                return Err(not_found(&name, &settings.path));
            }
            eprintln!(
                "dso: secret {name:?} removed from {}",
                settings.path.display()
            );
            Ok(())
        }
    }
}

fn not_found(name: &str, store: &Path) -> anyhow::Error {
    anyhow!(
        "secret {name:?} not found in store {}; `dso secret ls` lists what it holds, `dso secret set {name}` stores it",
        store.display()
    )
}

/// The store of the config's `type: local` provider: the one named by `--provider`, else the
/// only one there is; with the config and the provider's name.
fn local_settings(
    config_path: &Path,
    provider: Option<&str>,
) -> anyhow::Result<(Config, String, LocalSettings)> {
    let cfg = super::load_config(config_path)?;
    let shown = config_path.display();
    let (name, pc) = match provider {
        Some(name) => {
            let pc = cfg
                .providers
                .get(name)
                .ok_or_else(|| anyhow!("config {shown} has no provider {name:?}"))?;
            let Some(s) = pc.local() else {
                bail!(
                    "provider {name:?} in {shown} is of type {}; `dso secret` manages local stores only",
                    pc.kind().as_str()
                );
            };
            (name, s)
        }
        None => {
            let mut locals = cfg
                .providers
                .iter()
                .filter_map(|(name, pc)| Some((name, pc.local()?)));
            match (locals.next(), locals.next()) {
                (Some((name, s)), None) => (name.as_str(), s),
                (None, _) => bail!(
                    "config {shown} declares no provider of type local; add one under providers: (local: {{ type: local, path: /var/lib/dso/local.vault, key_file: /etc/dso/master.key }}), then run `dso init` to create its key file and store"
                ),
                (Some(_), Some(_)) => bail!(
                    "config {shown} declares several local providers; choose one with --provider NAME"
                ),
            }
        }
    };
    let settings = pc.clone();
    let name = name.to_string();
    Ok((cfg, name, settings))
}

/// The value to store: all of `from_file` or of piped stdin, byte for byte; or a line typed
/// (twice, without echo) at a terminal, without its newline unless `keep_newline`.
fn read_value(
    name: &str,
    from_file: Option<&Path>,
    keep_newline: bool,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let value = match from_file {
        Some(path) if path != Path::new("-") => {
            let file =
                File::open(path).map_err(|e| anyhow!("cannot open {}: {e}", path.display()))?;
            read_to_limit(file).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?
        }
        _ if io::stdin().is_terminal() => super::tty::read_secret_twice(name, keep_newline)?,
        _ => {
            let value = read_to_limit(RawStdin).map_err(|e| anyhow!("cannot read stdin: {e}"))?;
            if value.last() == Some(&b'\n') && value.iter().filter(|b| **b == b'\n').count() == 1 {
                eprintln!(
                    "dso: note: the value of {name:?} ends with a newline, stored as given (printf %s sends none; echo does)"
                );
            }
            value
        }
    };
    if value.len() > MAX_VALUE_LEN {
        bail!("the value of {name:?} is larger than {MAX_VALUE_LEN} bytes; nothing stored");
    }
    if value.is_empty() {
        bail!("the value of {name:?} is empty; nothing stored");
    }
    Ok(value)
}

/// Reads at most `MAX_VALUE_LEN + 1` bytes into zeroizing memory. The buffer grows by copying
/// into a new zeroizing buffer, so no stale copy of the value is left in freed memory.
fn read_to_limit(mut reader: impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let limit = MAX_VALUE_LEN + 1;
    let mut buf = Zeroizing::new(vec![0u8; 8192]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= limit {
                break;
            }
            let mut bigger = Zeroizing::new(vec![0u8; (len * 2).min(limit)]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Stdin without std's buffer (which would keep a copy of the value in static memory).
struct RawStdin;

impl Read for RawStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(libc::STDIN_FILENO, buf).map_err(io::Error::from)
    }
}

/// Writes to fd 1 directly, bypassing std's stdout buffer for the same reason.
fn write_stdout(mut bytes: &[u8]) -> io::Result<()> {
    let stdout = io::stdout();
    while !bytes.is_empty() {
        match nix::unistd::write(stdout.as_fd(), bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn list_table(entries: &[EntryInfo]) -> String {
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut out = format!("{:<width$}  {:>7}  UPDATED\n", "NAME", "VERSION");
    for e in entries {
        out.push_str(&format!(
            "{:<width$}  {:>7}  {}\n",
            e.name,
            e.version,
            format_utc(e.updated)
        ));
    }
    out
}

fn list_json(entries: &[EntryInfo]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "version": e.version,
                "updated": format_utc(e.updated),
                "updated_unix": e.updated,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Unix seconds as RFC 3339 UTC.
fn format_utc(secs: u64) -> String {
    crate::audit::format_rfc3339(i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_format() {
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn read_to_limit_keeps_bytes_and_stops_past_limit() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(&read_to_limit(&data[..]).unwrap()[..], &data[..]);
        let big = vec![1u8; MAX_VALUE_LEN + 100];
        assert_eq!(read_to_limit(&big[..]).unwrap().len(), MAX_VALUE_LEN + 1);
        assert!(read_to_limit(&b""[..]).unwrap().is_empty());
    }

    #[test]
    fn table_and_json_show_no_values() {
        let entries = vec![EntryInfo {
            name: "db_password".into(),
            version: 3,
            updated: 1_700_000_000,
        }];
        let table = list_table(&entries);
        assert!(table.starts_with("NAME "));
        assert!(
            table.contains("db_password        3  2023-11-14T22:13:20.000Z"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&list_json(&entries)).unwrap();
        assert_eq!(json[0]["name"], "db_password");
        assert_eq!(json[0]["version"], 3);
        assert_eq!(json[0]["updated_unix"], 1_700_000_000u64);
    }
}
