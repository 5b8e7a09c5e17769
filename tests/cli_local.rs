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
fn init_never_overwrites_and_creates_what_is_missing() {
    let env = Env::new();
    assert_ok(&env.init());
    let (config, key, store) = (env.config(), env.key(), env.store());
    let (c, k, s) = (config.display(), key.display(), store.display());
    let snapshot = |paths: &[&PathBuf]| -> Vec<Vec<u8>> {
        paths.iter().map(|p| fs::read(p).unwrap()).collect()
    };
    let next = "next: store a secret and grant it to a container: printf %s \"$VALUE\" | dso secret set NAME --declare --allow docker:CONTAINER_NAME\n";

    // Everything there: all kept, nothing written, exit 0.
    let before = snapshot(&[&config, &key, &store]);
    let out = env.run(&["init"], b"");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "kept key file {k} (it exists)\nkept store    {s} (it exists)\nkept config   {c} (it exists; its provider \"local\" uses this store)\n{next}"
        )
    );
    assert_eq!(before, snapshot(&[&config, &key, &store]));

    // A key file and a config (put there by a config-management tool), no store: the store is
    // created where the config says, with that key.
    fs::remove_file(&store).unwrap();
    let before = snapshot(&[&config, &key]);
    let out = env.run(&["init"], b"");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "kept key file {k} (it exists)\ncreated store    {s} (mode 0600)\nkept config   {c} (it exists; its provider \"local\" uses this store)\n{next}"
        )
    );
    assert_eq!(before, snapshot(&[&config, &key]));
    assert_ok(&env.run(&["secret", "set", "a"], b"v1"));
    assert_eq!(env.run(&["secret", "get", "a"], b"").stdout, b"v1");

    // A store and its key without a config: a starter config pointing at them.
    fs::remove_file(&config).unwrap();
    let before = snapshot(&[&key, &store]);
    let out = env.init();
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "kept key file {k} (it exists)\nkept store    {s} (it exists)\ncreated config   {c}\n{next}"
        )
    );
    assert_eq!(before, snapshot(&[&key, &store]));
    let starter = fs::read_to_string(&config).unwrap();
    assert!(
        starter.contains("\npolicy: { default: deny }\n"),
        "{starter}"
    );
    assert!(starter.contains("#    allow:"), "{starter}");
    assert!(
        starter.contains("#      - docker: { name: \"web\" }"),
        "{starter}"
    );
    assert_eq!(env.run(&["secret", "get", "a"], b"").stdout, b"v1");

    // A store without its key: refused, nothing created.
    fs::remove_file(&key).unwrap();
    let err = assert_fails_one_line(&env.run(&["init"], b""));
    assert_eq!(
        err,
        format!(
            "dso: store {s} exists but its key file {k} does not: the store cannot be opened without it; restore the key file from your copy, or move the store away to start afresh\n"
        )
    );
    assert!(!key.exists());

    // A config that does not validate is never overwritten, and nothing else is created.
    let env = Env::new();
    fs::create_dir_all(env.config().parent().unwrap()).unwrap();
    fs::write(env.config(), b"# mine\nprovidrs: {}\n").unwrap();
    let err = assert_fails_one_line(&env.init());
    assert_eq!(
        err,
        format!(
            "dso: {} exists and does not validate (line 2: providrs: unknown key (expected one of providers, provider, secrets, watch, audit, agent, runtime, policy, notifications)); dso init never overwrites it: fix it (`dso config validate` lists every problem) or pass --config PATH for a new one\n",
            env.config().display()
        )
    );
    assert!(!env.key().exists());
    assert!(!env.store().exists());
    assert_eq!(fs::read(env.config()).unwrap(), b"# mine\nprovidrs: {}\n");
}

#[test]
fn set_declare_adds_the_entry_keeping_comments_mode_and_layout() {
    let env = Env::new();
    assert_ok(&env.init());
    let config = env.config();
    let c = config.display().to_string();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read_to_string(&config).unwrap();

    // Without --declare: stored, and told that no container can use it yet.
    let out = env.run(&["secret", "set", "db_password"], b"pw");
    assert_ok(&out);
    assert_eq!(
        stderr(&out),
        format!(
            "dso: secret \"db_password\" stored in {} (version 1)\ndso: note: \"db_password\" is not declared in {c}, so no container can use it yet: run again with --declare --allow docker:CONTAINER_NAME, or add under secrets: db_password: {{ provider: local, allow: [ {{docker: {{name: \"CONTAINER_NAME\"}}}} ] }}\n",
            env.store().display()
        )
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), before);

    let out = env.run(
        &[
            "secret",
            "set",
            "db_password",
            "--declare",
            "--allow",
            "docker:web",
            "--allow",
            "kubernetes:billing",
        ],
        b"pw2",
    );
    assert_ok(&out);
    assert!(
        stderr(&out).ends_with(&format!(
            "dso: secret \"db_password\" declared in {c} (provider \"local\")\n"
        )),
        "{}",
        stderr(&out)
    );
    let after = fs::read_to_string(&config).unwrap();
    // Exactly one line more, every other line (comments included) as it was.
    let entry = "  db_password: { provider: \"local\", allow: [ {docker: {name: \"web\"}}, {kubernetes: {namespace: \"billing\"}} ] }";
    assert_eq!(
        after,
        before.replace("secrets: {}\n", &format!("secrets:\n{entry}\n")),
    );
    assert_eq!(mode(&config), 0o640);
    assert_ok(&env.run(&["config", "validate"], b""));
    // No temp file left next to it.
    let names: Vec<String> = fs::read_dir(config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("dso-tmp")), "{names:?}");

    // Again with the same grants: stored, the file unchanged.
    let out = env.run(
        &[
            "secret",
            "set",
            "db_password",
            "--declare",
            "--allow",
            "docker:web",
            "--allow",
            "kubernetes:billing",
        ],
        b"pw3",
    );
    assert_ok(&out);
    assert!(stderr(&out).ends_with(&format!(
        "dso: secret \"db_password\" was already declared in {c}\n"
    )));
    assert_eq!(fs::read_to_string(&config).unwrap(), after);

    // Other grants: refused before anything is stored.
    let err = assert_fails_one_line(&env.run(
        &[
            "secret",
            "set",
            "db_password",
            "--declare",
            "--allow",
            "docker:other",
        ],
        b"pw4",
    ));
    assert_eq!(
        err,
        format!(
            "dso: secret \"db_password\" is already declared in {c} with other settings; edit its entry there (nothing stored)\n"
        )
    );
    assert_eq!(
        env.run(&["secret", "get", "db_password"], b"").stdout,
        b"pw3"
    );

    // A bad grant, and --allow without --declare.
    let err = assert_fails_one_line(&env.run(
        &["secret", "set", "x", "--declare", "--allow", "podman:web"],
        b"v",
    ));
    assert_eq!(
        err,
        "dso: --allow \"podman:web\": expected docker:CONTAINER_NAME_GLOB or kubernetes:NAMESPACE_GLOB (globs with * and ?)\n"
    );
    let out = env.run(&["secret", "set", "x", "--allow", "docker:web"], b"v");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A layout the edit does not understand: the YAML to add by hand, nothing stored.
    fs::write(
        &config,
        format!(
            "{{providers: {{local: {{type: local, path: {}, key_file: {}}}}}}}\n",
            env.store().display(),
            env.key().display()
        ),
    )
    .unwrap();
    let err = assert_fails_one_line(&env.run(&["secret", "set", "api", "--declare"], b"v"));
    assert_eq!(
        err,
        format!(
            "dso: cannot edit {c} safely; add under secrets: in {c}: api: {{ provider: \"local\" }}\n"
        )
    );
    assert!(!stdout(&env.run(&["secret", "ls"], b"")).contains("api"));
}

#[test]
fn get_and_rm_validate_names_and_say_what_to_do() {
    let env = Env::new();
    assert_ok(&env.init());
    for cmd in ["get", "rm", "set"] {
        let err = assert_fails_one_line(&env.run(&["secret", cmd, "../etc"], b"v"));
        assert_eq!(
            err,
            "dso: secret name \"../etc\" is not valid: only letters, digits, '_', '.' and '-' are allowed\n",
            "{cmd}"
        );
    }
    for cmd in ["get", "rm"] {
        let err = assert_fails_one_line(&env.run(&["secret", cmd, "nope"], b""));
        assert_eq!(
            err,
            format!(
                "dso: secret \"nope\" not found in store {}; `dso secret ls` lists what it holds, `dso secret set nope` stores it\n",
                env.store().display()
            ),
            "{cmd}"
        );
    }
    // A one-line value with a newline (echo): stored as given, and said.
    let out = env.run(&["secret", "set", "echoed"], b"pw\n");
    assert_ok(&out);
    assert!(
        stderr(&out).starts_with("dso: note: the value of \"echoed\" ends with a newline, stored as given (printf %s sends none; echo does)\n"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.run(&["secret", "get", "echoed"], b"").stdout, b"pw\n");
}

#[test]
fn doctor_without_a_config_says_run_dso_init() {
    let env = Env::new();
    let out = env.run(
        &[
            "doctor", "--json", "--skip", "dockerd", "--skip", "runc", "--skip", "binaries",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "config")
        .unwrap();
    assert_eq!(config["status"], "fail");
    assert_eq!(
        config["detail"],
        format!(
            "{} does not exist; run `dso init` (it creates a key file, a local store and this config)",
            env.config().display()
        )
    );
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

/// Runs `dso --config <config> ARGS` on a real pseudo-terminal (python3's pty module), typing
/// each of `lines` after the next prompt that ends in `": "`; returns (exit code, everything
/// the terminal showed).
fn on_a_terminal(config: &Path, args: &[&str], lines: &[&str]) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, sys
argv = sys.argv[1:]
n = int(argv.pop(0))
lines, cmd = argv[:n], argv[n:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(cmd[0], cmd)
seen = b""
def read_more():
    global seen
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    seen += chunk
    return bool(chunk)
for line in lines:
    prompts = seen.count(b": ")
    while seen.count(b": ") == prompts and read_more():
        pass
    os.write(fd, line.encode())
while read_more():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let n = lines.len().to_string();
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(&n)
        .args(lines)
        .arg(env!("CARGO_BIN_EXE_dso"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DSO_CONFIG")
        .output()
        .expect("python3 (scripts/install-deps.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn terminal_input_is_not_echoed_asked_twice_and_the_enter_is_not_part_of_the_value() {
    let env = Env::new();
    assert_ok(&env.init());
    let (code, screen) = on_a_terminal(
        &env.config(),
        &["secret", "set", "tty_pw"],
        &["hunter2-typed\n", "hunter2-typed\n"],
    );
    assert_eq!(code, 0, "{screen}");
    assert!(
        !screen.contains("hunter2"),
        "the value was echoed: {screen:?}"
    );
    assert!(
        screen.starts_with(
            "dso: value of \"tty_pw\" (not echoed; Enter ends it): \r\ndso: the same again: \r\n"
        ),
        "{screen:?}"
    );
    assert_eq!(
        env.run(&["secret", "get", "tty_pw"], b"").stdout,
        b"hunter2-typed"
    );

    // --keep-newline keeps the Enter; Backspace edits the line.
    let (code, screen) = on_a_terminal(
        &env.config(),
        &["secret", "set", "tty_nl", "--keep-newline"],
        &["abX\x7fc\n", "abc\n"],
    );
    assert_eq!(code, 0, "{screen}");
    assert_eq!(env.run(&["secret", "get", "tty_nl"], b"").stdout, b"abc\n");

    // Two different entries: nothing stored.
    let (code, screen) = on_a_terminal(
        &env.config(),
        &["secret", "set", "tty_typo"],
        &["one\n", "two\n"],
    );
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.ends_with("dso: the two entries of \"tty_typo\" differ; nothing stored\r\n"),
        "{screen:?}"
    );
    // Ctrl-C cancels (and leaves the terminal as it was: the process is not killed by it).
    let (code, screen) = on_a_terminal(&env.config(), &["secret", "set", "tty_c"], &["ab\x03"]);
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.ends_with("dso: cancelled; nothing stored\r\n"),
        "{screen:?}"
    );
    let ls = stdout(&env.run(&["secret", "ls"], b""));
    assert!(!ls.contains("tty_typo") && !ls.contains("tty_c"), "{ls}");
}
