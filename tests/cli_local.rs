//! The `dso` binary against a local store in a temp dir: init, secret set/get/ls/rm, config
//! validate, and the refusals (overwrite, loose key file).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/dso/dso.yaml")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("etc/dso/master.key")
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("var/lib/dso/local.vault")
    }

    /// Runs `dso --config <config> args...` with `stdin` piped in.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_dso(&self.config(), args, stdin)
    }

    fn init(&self) -> Output {
        let (store, key) = (self.store(), self.key());
        self.run(
            &[
                "init",
                "--store",
                store.to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
            ],
            b"",
        )
    }
}

fn run_dso(config: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dso"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DSO_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // dso may refuse (and exit) before it reads its input: a broken pipe is not our failure.
    if let Err(e) = input.write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        stderr(out)
    );
}

/// Failed with exit 1 and a single `dso: ...` line on stderr.
#[track_caller]
fn assert_fails_one_line(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("dso: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_set_get_ls_rm() {
    let env = Env::new();
    assert_ok(&env.init());
    assert_eq!(mode(&env.key()), 0o400);
    assert_eq!(mode(&env.store()), 0o600);
    assert_eq!(mode(&env.dir.path().join("etc/dso")), 0o700);
    let key = fs::read(env.key()).unwrap();
    assert_eq!(key.len(), 64);
    assert!(key.iter().all(u8::is_ascii_hexdigit));
    let config = fs::read_to_string(env.config()).unwrap();
    assert!(config.contains("type: local"), "{config}");
    assert!(config.contains(env.store().to_str().unwrap()), "{config}");

    // Binary, with NUL and trailing newlines: stored and returned byte for byte.
    let value: &[u8] = b"s3cr\x00t\xff\r\nline two\n\n";
    let out = env.run(&["secret", "set", "db_password"], value);
    assert_ok(&out);
    assert!(out.stdout.is_empty(), "set printed on stdout");

    let out = env.run(&["secret", "get", "db_password"], b"");
    assert_ok(&out);
    assert_eq!(out.stdout, value);

    // Update: version 2.
    assert_ok(&env.run(&["secret", "set", "db_password"], b"second\n"));
    let from_file = env.dir.path().join("value.bin");
    fs::write(&from_file, b"from a file\n").unwrap();
    assert_ok(&env.run(
        &[
            "secret",
            "set",
            "api_key",
            "--from-file",
            from_file.to_str().unwrap(),
        ],
        b"",
    ));
    let out = env.run(&["secret", "get", "api_key"], b"");
    assert_eq!(out.stdout, b"from a file\n");

    let out = env.run(&["secret", "ls"], b"");
    assert_ok(&out);
    let table = stdout(&out);
    assert!(table.contains("db_password"), "{table}");
    assert!(table.contains("api_key"), "{table}");
    assert!(
        !table.contains("second") && !table.contains("from a file"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("db_password"))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("2"), "{row}");

    let out = env.run(&["secret", "ls", "--json"], b"");
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 2);
    let db = items.iter().find(|i| i["name"] == "db_password").unwrap();
    assert_eq!(db["version"], 2);
    assert!(!stdout(&out).contains("second"));

    assert_ok(&env.run(&["secret", "rm", "db_password"], b""));
    let err = assert_fails_one_line(&env.run(&["secret", "get", "db_password"], b""));
    assert!(err.contains("not found"), "{err}");
    let err = assert_fails_one_line(&env.run(&["secret", "rm", "db_password"], b""));
    assert!(err.contains("not found"), "{err}");
    let out = env.run(&["secret", "get", "api_key"], b"");
    assert_eq!(out.stdout, b"from a file\n");
}

#[test]
fn set_refuses_bad_input() {
    let env = Env::new();
    assert_ok(&env.init());
    let err = assert_fails_one_line(&env.run(&["secret", "set", "../escape"], b"v"));
    assert!(err.contains("not valid"), "{err}");
    let err = assert_fails_one_line(&env.run(&["secret", "set", "empty"], b""));
    assert!(err.contains("empty"), "{err}");
    // The value never comes from argv: an extra positional is a usage error.
    let out = env.run(&["secret", "set", "x", "hunter2"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env.run(&["secret", "ls"], b"");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
}

#[test]
fn init_never_overwrites() {
    let env = Env::new();
    assert_ok(&env.init());
    let before: Vec<Vec<u8>> = [env.config(), env.key(), env.store()]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    let err = assert_fails_one_line(&env.init());
    assert!(err.contains("already exist"), "{err}");
    let after: Vec<Vec<u8>> = [env.config(), env.key(), env.store()]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after);

    // Only the config exists: nothing else is written either.
    let env = Env::new();
    fs::create_dir_all(env.config().parent().unwrap()).unwrap();
    fs::write(env.config(), b"# mine\n").unwrap();
    let err = assert_fails_one_line(&env.init());
    assert!(err.contains(env.config().to_str().unwrap()), "{err}");
    assert!(!env.key().exists());
    assert!(!env.store().exists());
    assert_eq!(fs::read(env.config()).unwrap(), b"# mine\n");
}

#[test]
fn secret_commands_refuse_a_loose_key_file() {
    let env = Env::new();
    assert_ok(&env.init());
    assert_ok(&env.run(&["secret", "set", "a"], b"v1"));
    let store_before = fs::read(env.store()).unwrap();
    for loose in [0o644, 0o640] {
        fs::set_permissions(env.key(), fs::Permissions::from_mode(loose)).unwrap();
        let err = assert_fails_one_line(&env.run(&["secret", "set", "a"], b"v2"));
        let key = env.key().display().to_string();
        assert!(err.contains(&format!("chmod 600 {key}")), "{err}");
        assert!(err.contains(&format!("{loose:04o}")), "{err}");
        assert_fails_one_line(&env.run(&["secret", "get", "a"], b""));
        assert_eq!(fs::read(env.store()).unwrap(), store_before);
    }
    fs::set_permissions(env.key(), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(env.run(&["secret", "get", "a"], b"").stdout, b"v1");
}

#[test]
fn missing_config_or_store_says_what_to_do() {
    let env = Env::new();
    let err = assert_fails_one_line(&env.run(&["secret", "ls"], b""));
    assert!(err.contains("dso init"), "{err}");

    assert_ok(&env.init());
    fs::remove_file(env.store()).unwrap();
    let err = assert_fails_one_line(&env.run(&["secret", "ls"], b""));
    assert!(err.contains("dso init"), "{err}");
}

#[test]
fn provider_choice() {
    let env = Env::new();
    assert_ok(&env.init());
    let (store, key) = (env.store(), env.key());
    let two = env.dir.path().join("two.yaml");
    fs::write(
        &two,
        format!(
            "providers:\n  a: {{ type: local, path: {s:?}, key_file: {k:?} }}\n  b: {{ type: local, path: {s:?}, key_file: {k:?} }}\n  v: {{ type: vault, address: \"https://vault:8200\" }}\n",
            s = store.to_str().unwrap(),
            k = key.to_str().unwrap()
        ),
    )
    .unwrap();
    let err = assert_fails_one_line(&run_dso(&two, &["secret", "ls"], b""));
    assert!(err.contains("--provider"), "{err}");
    assert_ok(&run_dso(
        &two,
        &["secret", "set", "x", "--provider", "b"],
        b"v",
    ));
    let out = run_dso(&two, &["secret", "get", "x", "--provider", "a"], b"");
    assert_eq!(out.stdout, b"v");
    let err = assert_fails_one_line(&run_dso(&two, &["secret", "ls", "--provider", "v"], b""));
    assert!(err.contains("vault"), "{err}");
    let err = assert_fails_one_line(&run_dso(&two, &["secret", "ls", "--provider", "zz"], b""));
    assert!(err.contains("\"zz\""), "{err}");
}

#[test]
fn config_validate_ok_and_bad() {
    let env = Env::new();
    assert_ok(&env.init());
    let out = env.run(&["config", "validate"], b"");
    assert_ok(&out);
    assert_eq!(stdout(&out), format!("{}: valid\n", env.config().display()));

    let bad = env.dir.path().join("bad.yaml");
    fs::write(&bad, "providers: [\n").unwrap();
    let out = run_dso(&bad, &["config", "validate"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("bad.yaml"), "{}", stderr(&out));

    fs::write(&bad, "no_such_section: 1\n").unwrap();
    let out = run_dso(&bad, &["config", "validate"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!stderr(&out).is_empty());

    let out = run_dso(
        &env.dir.path().join("absent.yaml"),
        &["config", "validate"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));

    // --config after the subcommand works too.
    let out = Command::new(env!("CARGO_BIN_EXE_dso"))
        .args(["config", "validate", "--config"])
        .arg(env.config())
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_dso"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_dso"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// A small ext4 filesystem on a loop device, mounted for the life of the value.
struct LoopFs {
    mountpoint: PathBuf,
}

impl LoopFs {
    /// `None` when this cannot run here (not root, no loop device or mkfs.ext4): skipped
    /// outside CI, a failure under `CI=true`.
    fn mount(image: &Path, mountpoint: &Path, size_mib: u64) -> Option<LoopFs> {
        let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        let why = if !nix::unistd::Uid::effective().is_root() {
            Some("needs root".to_string())
        } else {
            let file = fs::File::create(image).unwrap();
            file.set_len(size_mib << 20).unwrap();
            drop(file);
            let mkfs = Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(image)
                .output();
            match mkfs {
                Ok(o) if o.status.success() => {
                    fs::create_dir_all(mountpoint).unwrap();
                    let m = Command::new("mount")
                        .args(["-o", "loop"])
                        .arg(image)
                        .arg(mountpoint)
                        .output()
                        .unwrap();
                    (!m.status.success()).then(|| format!("mount -o loop: {}", stderr(&m)))
                }
                Ok(o) => Some(format!("mkfs.ext4: {}", stderr(&o))),
                Err(e) => Some(format!("mkfs.ext4: {e}")),
            }
        };
        match why {
            None => Some(LoopFs {
                mountpoint: mountpoint.to_path_buf(),
            }),
            Some(why) if ci => panic!("CI=true but this test cannot run: {why}"),
            Some(why) => {
                eprintln!("skipped: {why}");
                None
            }
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue 7 (faults): the disk holding the store fills up while `dso secret set` writes it. The
/// write fails with a clear error, the old store survives byte for byte and still opens, no temp
/// file is left, and once there is room again the same command works.
#[test]
fn disk_full_while_writing_the_store_keeps_the_old_store() {
    let env = Env::new();
    let store_dir = env.store().parent().unwrap().to_path_buf();
    let Some(_fs) = LoopFs::mount(&env.dir.path().join("disk.img"), &store_dir, 4) else {
        return;
    };
    assert_ok(&env.init());
    assert_ok(&env.run(&["secret", "set", "a"], b"old value of a"));
    assert_ok(&env.run(&["secret", "set", "b"], b"old value of b"));
    let before = fs::read(env.store()).unwrap();

    // Fill the filesystem to the last block.
    let filler = store_dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut small = vec![0x5a_u8; 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            // Top up with small writes until not even a block is left.
            while f.write_all(&small).is_ok() {}
            break;
        }
    }
    let _ = f.sync_all();
    small.clear();
    drop(f);
    let names_before = names_in(&store_dir);

    let big = vec![b'n'; 256 << 10];
    let out = env.run(&["secret", "set", "a"], &big);
    let err = assert_fails_one_line(&out);
    assert!(
        err.contains("No space left on device") && err.contains(env.store().to_str().unwrap()),
        "{err}"
    );
    assert_eq!(fs::read(env.store()).unwrap(), before, "the store changed");
    assert_eq!(names_in(&store_dir), names_before, "a temp file was left");
    let out = env.run(&["secret", "get", "a"], b"");
    assert_ok(&out);
    assert_eq!(out.stdout, b"old value of a");

    // Room again: the same write goes through and both secrets are there.
    fs::remove_file(&filler).unwrap();
    assert_ok(&env.run(&["secret", "set", "a"], &big));
    assert_eq!(env.run(&["secret", "get", "a"], b"").stdout, big);
    assert_eq!(
        env.run(&["secret", "get", "b"], b"").stdout,
        b"old value of b"
    );
}
