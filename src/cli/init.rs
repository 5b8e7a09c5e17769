//! `dso init`: a fresh key file, an empty local store and a starter dso.yaml. Never overwrites
//! anything; on failure, whatever it had created is removed again.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::providers::local::{DEFAULT_KEY_FILE, DEFAULT_STORE_PATH, Store};

#[derive(Debug, Args)]
pub(super) struct InitArgs {
    /// Where to create the encrypted store
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STORE_PATH)]
    store: PathBuf,
    /// Where to create the key file (32 random bytes, hex-encoded, mode 0400)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_KEY_FILE)]
    key_file: PathBuf,
}

pub(super) fn run(config_path: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|e| anyhow!("cannot resolve {}: {e}", p.display()))
    };
    let config = absolute(config_path)?;
    let store = absolute(&args.store)?;
    let key_file = absolute(&args.key_file)?;
    if config == store || config == key_file || store == key_file {
        bail!("the config, the store and the key file must be three different paths");
    }
    let existing: Vec<String> = [&config, &store, &key_file]
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already exist{}; dso init never overwrites (move {} away or pass other paths)",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" },
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
    for path in [&key_file, &store, &config] {
        create_parents(path, &mut created)?;
    }
    write_new(&key_file, &new_key()?, 0o400, &mut created)?;
    let lock = lock_path(&store);
    let lock_existed = fs::symlink_metadata(&lock).is_ok();
    let store_result = Store::create(&store, &key_file);
    if !lock_existed {
        created.files.push(lock);
    }
    store_result?;
    created.files.push(store.clone());
    write_new(&config, config_text.as_bytes(), 0o644, &mut created)?;
    created.keep();

    println!("created key file {} (mode 0400)", key_file.display());
    println!("created store    {} (mode 0600)", store.display());
    println!("created config   {}", config.display());
    println!(
        "keep a copy of the key file somewhere safe: without it the store cannot be decrypted"
    );
    Ok(())
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
         # Secrets containers may reference as dso://<name> (env) or dsofile://<name> (file).\n\
         # Store a value with: dso secret set db_password < value.txt\n\
         secrets: {{}}\n\
         #  db_password:\n\
         #    provider: local\n\
         #    path: db_password        # name in the store (default: the secret's name)\n\
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
