//! `dso init`: whatever is missing of a key file, a local store and a dso.yaml that points at
//! them. Never overwrites anything: what exists is kept (and used: a key file without a store
//! gets its store, a config's local provider names the store and key to create) and said so;
//! on failure, whatever it had created is removed again.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::providers::local::{DEFAULT_KEY_FILE, DEFAULT_STORE_PATH, LocalSettings, Store};

#[derive(Debug, Args)]
pub(super) struct InitArgs {
    /// Where the encrypted store is [default: the path of the config's local provider, else /var/lib/dso/local.vault]
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Where the key file is (32 random bytes, hex-encoded, mode 0400) [default: the config's local provider's, else /etc/dso/master.key]
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

pub(super) fn run(config_path: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|e| anyhow!("cannot resolve {}: {e}", p.display()))
    };
    let config = absolute(config_path)?;
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    // An existing config is kept; its local provider says where the store and key belong.
    let from_config = if exists(&config) {
        let cfg = Config::load(&config).map_err(|e| {
            anyhow!(
                "{} exists and does not validate ({}); dso init never overwrites it: fix it (`dso config validate` lists every problem) or pass --config PATH for a new one",
                config.display(),
                e.messages().join("; ")
            )
        })?;
        Some(config_local(&cfg, &config)?)
    } else {
        None
    };
    let settings = from_config.as_ref().and_then(|(_, s)| s.as_ref());
    let choose = |flag: &Option<PathBuf>,
                  configured: Option<&PathBuf>,
                  default: &str,
                  what: &str| {
        match (flag, configured) {
            (Some(f), Some(c)) if absolute(f)? != absolute(c)? => bail!(
                "{} names {what} {} for its local provider, not {}; run dso init without --{} (or with that path)",
                config.display(),
                c.display(),
                f.display(),
                what.replace(' ', "-")
            ),
            (Some(f), _) => absolute(f),
            (None, Some(c)) => absolute(c),
            (None, None) => absolute(Path::new(default)),
        }
    };
    let store = choose(
        &args.store,
        settings.map(|s| &s.path),
        DEFAULT_STORE_PATH,
        "store",
    )?;
    let key_file = choose(
        &args.key_file,
        settings.map(|s| &s.key_file),
        DEFAULT_KEY_FILE,
        "key file",
    )?;
    if config == store || config == key_file || store == key_file {
        bail!("the config, the store and the key file must be three different paths");
    }
    let (have_key, have_store) = (exists(&key_file), exists(&store));
    if have_store && !have_key {
        bail!(
            "store {} exists but its key file {} does not: the store cannot be opened without it; restore the key file from your copy, or move the store away to start afresh",
            store.display(),
            key_file.display()
        );
    }
    let yaml_path = |p: &Path| -> anyhow::Result<String> {
        let s = p.to_str().ok_or_else(|| {
            anyhow!(
                "{} is not valid UTF-8; dso.yaml needs UTF-8 paths",
                p.display()
            )
        })?;
        // A JSON string is a valid YAML double-quoted scalar, whatever the path holds.
        Ok(serde_json::Value::String(s.to_string()).to_string())
    };
    let config_text = starter_config(&yaml_path(&store)?, &yaml_path(&key_file)?);

    let mut created = Created::default();
    let mut report = Vec::new();
    if have_key {
        report.push(format!("kept key file {} (it exists)", key_file.display()));
    } else {
        create_parents(&key_file, &mut created)?;
        write_new(&key_file, &new_key()?, 0o400, &mut created)?;
        report.push(format!(
            "created key file {} (mode 0400)",
            key_file.display()
        ));
    }
    if have_store {
        report.push(format!("kept store    {} (it exists)", store.display()));
    } else {
        create_parents(&store, &mut created)?;
        let lock = lock_path(&store);
        let lock_existed = fs::symlink_metadata(&lock).is_ok();
        let store_result = Store::create(&store, &key_file);
        if !lock_existed {
            created.files.push(lock);
        }
        store_result?;
        created.files.push(store.clone());
        report.push(format!("created store    {} (mode 0600)", store.display()));
    }
    match &from_config {
        None => {
            create_parents(&config, &mut created)?;
            write_new(&config, config_text.as_bytes(), 0o644, &mut created)?;
            report.push(format!("created config   {}", config.display()));
        }
        Some((name, Some(_))) => report.push(format!(
            "kept config   {} (it exists; its provider {name:?} uses this store)",
            config.display()
        )),
        Some((_, None)) => report.push(format!(
            "kept config   {} (it exists, without a local provider: to use this store, add under providers: `local: {{ type: local, path: {}, key_file: {} }}`)",
            config.display(),
            yaml_path(&store)?,
            yaml_path(&key_file)?
        )),
    }
    created.keep();
    for line in report {
        println!("{line}");
    }
    if !have_key {
        println!(
            "keep a copy of the key file somewhere safe: without it the store cannot be decrypted"
        );
    }
    println!(
        "next: store a secret and grant it to a container: printf %s \"$VALUE\" | dso secret set NAME --declare --allow docker:CONTAINER_NAME"
    );
    Ok(())
}

/// The local provider of an existing config (name, and its store and key when it has exactly
/// one; `None` settings when it has none).
fn config_local(cfg: &Config, shown: &Path) -> anyhow::Result<(String, Option<LocalSettings>)> {
    let mut locals = cfg
        .providers
        .iter()
        .filter_map(|(name, pc)| Some((name, pc.local()?)));
    match (locals.next(), locals.next()) {
        (None, _) => Ok((String::new(), None)),
        (Some((name, s)), None) => Ok((name.clone(), Some(s.clone()))),
        (Some(_), Some(_)) => bail!(
            "{} declares several local providers; dso init does not know which store to create (create it with --config PATH of a config naming only one)",
            shown.display()
        ),
    }
}

fn starter_config(store: &str, key_file: &str) -> String {
    format!(
        "# dso configuration, written by `dso init`. Check it with `dso config validate`.\n\
         providers:\n\
         \x20 local:\n\
         \x20   type: local\n\
         \x20   path: {store}\n\
         \x20   key_file: {key_file}\n\
         \n\
         # A secret reaches only the containers its allow rules name.\n\
         policy: {{ default: deny }}\n\
         \n\
         # Secrets containers may reference as dso://<name> (env) or dsofile://<name> (file).\n\
         # Store and declare one with: printf %s \"$VALUE\" | dso secret set db_password --declare --allow docker:web\n\
         secrets: {{}}\n\
         #  db_password:\n\
         #    provider: local\n\
         #    path: db_password        # name in the store (default: the secret's name)\n\
         #    allow:                   # any rule grants; globs with * and ?\n\
         #      - docker: {{ name: \"web\" }}\n\
         #      - kubernetes: {{ namespace: billing }}\n\
         #    rotation: {{ strategy: signal, signal: SIGHUP }}\n"
    )
}

/// 32 random bytes, hex-encoded, in zeroizing memory.
fn new_key() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut raw[..])
        .map_err(|e| anyhow!("cannot get random bytes from the OS: {e}"))?;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = Zeroizing::new(Vec::with_capacity(64));
    for b in raw.iter() {
        hex.push(DIGITS[usize::from(b >> 4)]);
        hex.push(DIGITS[usize::from(b & 0xf)]);
    }
    Ok(hex)
}

fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates the missing ancestors of `path`, mode 0700, and remembers them.
fn create_parents(path: &Path, created: &mut Created) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    for d in missing.into_iter().rev() {
        DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(|e| anyhow!("cannot create directory {}: {e}", d.display()))?;
        created.dirs.push(d);
    }
    Ok(())
}

/// Writes a new file (O_EXCL: never replaces one), fsyncs it and its directory.
fn write_new(path: &Path, bytes: &[u8], mode: u32, created: &mut Created) -> anyhow::Result<()> {
    let fail = |e: std::io::Error| anyhow!("cannot create {}: {e}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(fail)?;
    created.files.push(path.to_path_buf());
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// What `dso init` created so far; removed again (newest first) unless `keep` is called.
#[derive(Default)]
struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    keep: bool,
}

impl Created {
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for f in self.files.iter().rev() {
            let _ = fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}
