//! Replays every committed fuzz input: the minimized corpus (`fuzz/corpus/<target>/`) and every
//! crash the fuzzer ever found (`fuzz/regressions/<target>/`), through the same
//! `dso::fuzzing` functions the cargo-fuzz targets call. Runs on stable, in CI, in seconds.
//! A missing or empty directory fails: the test cannot pass on nothing. See docs/fuzzing.md.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every target needs one)", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && !is_hidden(p))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} is empty: nothing would be replayed",
        dir.display()
    );
    files
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn replay(target: &str) {
    let (_, run) = dso::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let mut failed = Vec::new();
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).expect("read input");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {count} inputs fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn argv() {
    replay("argv");
}

#[test]
fn refs() {
    replay("refs");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn spec() {
    replay("spec");
}

#[test]
fn webhook() {
    replay("webhook");
}

#[test]
fn local_store() {
    replay("local_store");
}

/// The directories and the target list agree: a new target gets a corpus, a removed one takes
/// its files along, and each cargo-fuzz target has its replay here.
#[test]
fn every_target_is_replayed() {
    let targets: BTreeSet<&str> = dso::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    let replayed: BTreeSet<&str> =
        ["argv", "refs", "config", "spec", "webhook", "local_store"].into();
    assert_eq!(targets, replayed, "add a #[test] for each target");
    for kind in ["corpus", "regressions"] {
        let dirs: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join(kind))
            .expect("fuzz dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = targets.iter().map(|t| t.to_string()).collect();
        assert_eq!(dirs, want, "fuzz/{kind}/ has a directory per target");
    }
    let bins: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz targets")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    let want: BTreeSet<String> = targets.iter().map(|t| t.to_string()).collect();
    assert_eq!(bins, want, "fuzz/fuzz_targets/ has a target per function");
}

/// Writes the seed inputs of every target into `fuzz/corpus/` (they are then run and
/// minimized by scripts/fuzz.sh). Run by hand:
/// `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let corpus = fuzz_dir().join("corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    };

    // runc argv as dockerd (through containerd-shim-runc-v2) and containerd invoke it, and
    // with dso's own flags from daemon.json runtimeArgs.
    let argv: &[(&str, &[&str])] = &[
        (
            "shim-create",
            &[
                "--root",
                "/var/run/docker/runtime-runc/moby",
                "--log",
                "/run/containerd/io.containerd.runtime.v2.task/moby/c1/log.json",
                "--log-format",
                "json",
                "--systemd-cgroup",
                "create",
                "--bundle",
                "/run/containerd/io.containerd.runtime.v2.task/moby/c1",
                "--pid-file",
                "/run/containerd/io.containerd.runtime.v2.task/moby/c1/init.pid",
                "--console-socket",
                "/tmp/pty123/pty.sock",
                "c1",
            ],
        ),
        (
            "dso-flags",
            &[
                "--dso-config",
                "/etc/dso/dso.yaml",
                "--dso-delegate=/usr/bin/crun",
                "--root",
                "/run/runc",
                "create",
                "-b",
                "/b",
                "c2",
            ],
        ),
        (
            "run-detach",
            &[
                "--root=/run/r",
                "--debug",
                "run",
                "-d",
                "--keep",
                "--bundle=/b",
                "--pid-file",
                "/p",
                "--no-subreaper",
                "c3",
            ],
        ),
        ("start", &["--root", "/run/runc", "start", "c1"]),
        ("delete-create", &["delete", "--force", "create"]),
        (
            "exec",
            &[
                "--root",
                "/run/runc",
                "exec",
                "--process",
                "/tmp/p.json",
                "--detach",
                "--pid-file",
                "/p",
                "c1",
            ],
        ),
        (
            "state",
            &["--root", "/run/runc", "--log-format=json", "state", "c1"],
        ),
        ("version", &["--version"]),
        (
            "preserve",
            &["create", "--preserve-fds", "2", "--no-pivot", "--", "c4"],
        ),
    ];
    for (name, args) in argv {
        write("argv", name, args.join("\0").as_bytes());
    }

    let refs: &[(&str, &str)] = &[
        (
            "compose",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nDB_PASSWORD_FILE=dsofile://db_password\nAPI_KEY=dso://api_key\nHOSTNAME=4f1e",
        ),
        (
            "inline",
            "DB=dso://vault/app/db#password\nTOKEN_FILE=dsofile://aws/prod/api-token#token\ndso.secrets/CERT_FILE=dsofile://tls.crt",
        ),
        (
            "annotations",
            "dso.secrets/API_KEY=dso://api_key\ndso.secrets/X_FILE=dsofile://azure/kv-secret",
        ),
        (
            "bad",
            "A=dso://../etc/passwd\nB=dsofile://a/b/../c\nC=dso://db#\nD=dso://x\x01y",
        ),
    ];
    for (name, text) in refs {
        write("refs", name, text.as_bytes());
    }

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime-config/examples");
    for e in std::fs::read_dir(&examples).expect("examples") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        write("config", &name, &std::fs::read(&p).expect("example"));
    }

    // config.json as `runc spec` writes it, with references added as docker would.
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/runc-spec.json");
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec).expect("runc spec seed")).expect("json");
    write(
        "spec",
        "runc-spec",
        &serde_json::to_vec_pretty(&base).expect("json"),
    );
    let mut with_refs = base.clone();
    with_refs["process"]["env"] = serde_json::json!([
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DB_PASSWORD_FILE=dsofile://db_password",
        "API_KEY=dso://api_key",
        "TERM=xterm"
    ]);
    with_refs["annotations"] = serde_json::json!({"dso.secrets/TOKEN_FILE": "dsofile://vault/app/token#t",
        "org.opencontainers.image.title": "x"});
    with_refs["mounts"].as_array_mut().expect("mounts").push(
        serde_json::json!({"destination": "/run/secrets/compose_thing", "type": "bind",
            "source": "/var/lib/compose/x", "options": ["rbind", "ro"]}),
    );
    with_refs["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    with_refs["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    with_refs["zzFutureField"] = serde_json::json!({"kept": [1, 2]});
    write(
        "spec",
        "with-refs",
        &serde_json::to_vec(&with_refs).expect("json"),
    );

    let body = br#"{"secrets":["db_password","api_key"]}"#;
    let now = dso::fuzzing::WEBHOOK_NOW.to_string();
    write("webhook", "signed", &dso::fuzzing::webhook_seed(&now, body));
    write(
        "webhook",
        "signed-old",
        &dso::fuzzing::webhook_seed(&(dso::fuzzing::WEBHOOK_NOW - 299).to_string(), body),
    );
    write(
        "webhook",
        "unsigned",
        b"POST /v1/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"secrets\":[\"a\"]}",
    );

    let entries: &[(&str, &[u8], u64, u64)] = &[
        ("api_key", b"s3cr3t-api-key\n", 1, 1_700_000_000),
        ("db_password", b"hunter2", 3, 1_700_000_100),
        ("tls.key", &[0u8, 1, 2, 255, 254], 1, 1_700_000_200),
    ];
    write("local_store", "store", &dso::fuzzing::store_seed(entries));
    write("local_store", "empty-store", &dso::fuzzing::store_seed(&[]));
    write(
        "local_store",
        "plaintext",
        &dso::fuzzing::store_plaintext_seed(entries),
    );
}
