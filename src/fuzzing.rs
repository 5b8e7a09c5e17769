//! Fuzzing entry points (docs/fuzzing.md): one function per target, each taking raw bytes,
//! calling the real code and asserting what must hold for every input. Driven by the cargo-fuzz
//! targets in `fuzz/`, and over the committed corpus and crashes by `tests/fuzz_regressions.rs`.
//! Not an API. Nothing here touches the filesystem, the keyring, a socket or the clock.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::agent::webhook::{self, MAX_BODY, MAX_SKEW_SECS, Outcome};
use crate::config::{Config, parse_yaml, validate_document};
use crate::providers::local::{
    MAX_ITERATIONS, MIN_ITERATIONS, StoreError, decode_with_key, encode_plaintext, seal_raw,
};
use crate::runtime::argv::{Invocation, RUN_ONLY_FLAGS};
use crate::runtime::modify::{INIT_DEST, TMPFS_SOURCE, TmpfsLayout, container_path, rewrite_spec};
use crate::runtime::spec::{Spec, references_in};
use crate::secrets::{
    ANNOTATION_PREFIX, MAX_NAME_LEN, RefKind, RefSource, SecretRef, SecretValue, Target,
    collect_refs, has_refs, parse_ref, validate_name,
};

/// A target: takes one input, panics on a finding.
pub type FuzzFn = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, FuzzFn)] = &[
    ("argv", argv),
    ("refs", refs),
    ("config", config),
    ("spec", spec),
    ("webhook", webhook_request),
    ("local_store", local_store),
];

// ---------------------------------------------------------------------------------------------
// runc argv

/// runc's argv, NUL-separated (argv elements cannot hold a NUL). Holds: the delegate gets argv
/// byte for byte minus dso's own flags; every index points where it says; reading the delegate's
/// argv again gives the same reading; `run` turned into `create` keeps bundle, id and files.
pub fn argv(data: &[u8]) {
    let raw: Vec<OsString> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    let Ok(inv) = Invocation::parse(raw.clone()) else {
        return;
    };

    let is_dso_flag = |a: &OsString| {
        let b = a.as_bytes();
        let body = b.strip_prefix(b"--").or_else(|| b.strip_prefix(b"-"));
        body.is_some_and(|body| {
            let name = body.split(|&c| c == b'=').next().unwrap_or_default();
            name == b"dso-config" || name == b"dso-delegate"
        })
    };
    if !raw.iter().any(is_dso_flag) {
        assert_eq!(inv.args, raw, "argv changed on its way to the delegate");
    }
    assert!(is_subsequence(&inv.args, &raw), "args not taken from argv");
    assert!(inv.args.len() <= raw.len());

    match inv.command_index {
        Some(ci) => {
            assert!(ci < inv.args.len());
            let cmd = inv.args[ci].to_string_lossy();
            assert_eq!(inv.command.as_deref(), Some(cmd.as_ref()));
            assert_eq!(inv.global_args(), &inv.args[..ci]);
        }
        None => {
            assert!(inv.command.is_none());
            assert_eq!(inv.global_args(), &inv.args[..]);
        }
    }
    if let Some(ii) = inv.id_index {
        assert!(inv.is_create_or_run(), "an id is only read for create/run");
        assert!(inv.command_index.is_some_and(|ci| ci < ii) && ii < inv.args.len());
        let id = inv.args[ii].to_string_lossy();
        assert_eq!(inv.container_id.as_deref(), Some(id.as_ref()));
    }
    if !inv.is_create_or_run() {
        assert!(inv.bundle.is_none() && inv.pid_file.is_none() && inv.container_id.is_none());
    }

    // What the delegate gets reads the same (dso's flags are gone from it).
    let again = match Invocation::parse(inv.args.clone()) {
        Ok(again) => again,
        Err(e) => panic!("the delegate's argv {:?} does not parse: {e}", inv.args),
    };
    let expected = Invocation {
        dso_config: None,
        delegate: None,
        ..inv.clone()
    };
    assert_eq!(again, expected, "reading the delegate's argv again differs");

    // `run` → `create` + `start`: the create must read as the same container.
    if inv.command.as_deref() == Some("run") {
        let create_args = inv.run_as_create_args();
        let created = match Invocation::parse(create_args.clone()) {
            Ok(c) => c,
            Err(e) => panic!("run_as_create_args gave {create_args:?}, which does not parse: {e}"),
        };
        assert_eq!(
            created.command.as_deref(),
            Some("create"),
            "{create_args:?}"
        );
        assert_eq!(created.global_args(), inv.global_args(), "{create_args:?}");
        assert_eq!(created.bundle, inv.bundle, "{create_args:?}");
        assert_eq!(created.pid_file, inv.pid_file, "{create_args:?}");
        assert_eq!(
            created.console_socket, inv.console_socket,
            "{create_args:?}"
        );
        assert_eq!(created.container_id, inv.container_id, "{create_args:?}");
        assert!(!created.detach && !created.keep, "{create_args:?}");
        // Nothing but run-only flags was removed.
        let Some(removed) = inv.args.len().checked_sub(create_args.len()) else {
            panic!("run_as_create_args added arguments: {create_args:?}");
        };
        let run_only = inv.args[inv.command_index.unwrap_or(0) + 1..]
            .iter()
            .filter(|a| {
                let b = a.as_bytes();
                let body = b.strip_prefix(b"--").or_else(|| b.strip_prefix(b"-"));
                body.is_some_and(|body| {
                    let name = body.split(|&c| c == b'=').next().unwrap_or_default();
                    RUN_ONLY_FLAGS.iter().any(|f| f.as_bytes() == name)
                })
            })
            .count();
        assert!(removed <= run_only, "{create_args:?}");
    }
}

fn is_subsequence<T: PartialEq>(sub: &[T], of: &[T]) -> bool {
    let mut it = of.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

// ---------------------------------------------------------------------------------------------
// references

/// Lines `VAR=value` (a `process.env` entry) and `dso.secrets/VAR=value` (an annotation). Holds:
/// an accepted reference names a file that stays inside the secrets dir (no `/`, `.`, `..`, NUL
/// or control character, at most MAX_NAME_LEN bytes); the cheap passthrough check never says
/// "no references" for a spec that has some.
pub fn refs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = Vec::new();
    let mut annotations = BTreeMap::new();
    for line in text.split('\n') {
        match line
            .strip_prefix(ANNOTATION_PREFIX)
            .and_then(|rest| rest.split_once('='))
        {
            Some((var, value)) => {
                annotations.insert(format!("{ANNOTATION_PREFIX}{var}"), value.to_string());
            }
            None => env.push(line.to_string()),
        }
    }
    for (i, entry) in env.iter().enumerate() {
        if let Some((var, value)) = entry.split_once('=')
            && let Ok(r) = parse_ref(var, value, RefSource::Env(i))
        {
            check_ref(&r);
        }
    }
    let found = has_refs(
        env.iter().map(String::as_str),
        annotations.keys().map(String::as_str),
    );
    match collect_refs(&env, Some(&annotations)) {
        Ok(refs) => {
            assert!(found || refs.is_empty(), "passthrough would skip {refs:?}");
            for r in &refs {
                check_ref(r);
            }
        }
        Err(e) => assert!(found, "an error ({e}) for a spec without references"),
    }
}

fn check_ref(r: &SecretRef) {
    let name = r.file_name();
    assert!(validate_name(name).is_ok(), "file name {name:?}");
    assert!(
        !name.is_empty() && name.len() <= MAX_NAME_LEN,
        "file name {name:?}"
    );
    assert!(name != "." && name != "..", "file name {name:?}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "file name {name:?}"
    );
    let inside = container_path("/run/secrets", name);
    assert_eq!(
        Path::new(&inside).parent(),
        Some(Path::new("/run/secrets")),
        "{name:?} leaves the secrets dir"
    );
    let mut var = r.var.bytes();
    assert!(
        var.next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && var.all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "variable {:?}",
        r.var
    );
    let no_control = |s: &str| !s.bytes().any(|b| b.is_ascii_control());
    match &r.target {
        Target::Named { name, key } => {
            assert!(validate_name(name).is_ok());
            assert!(
                key.as_deref()
                    .is_none_or(|k| !k.is_empty() && no_control(k))
            );
        }
        Target::Inline {
            provider,
            path,
            key,
        } => {
            assert!(validate_name(provider).is_ok(), "provider {provider:?}");
            assert!(no_control(path), "path {path:?}");
            assert!(
                !path.is_empty() && path.split('/').all(|s| !s.is_empty() && s != ".."),
                "path {path:?}"
            );
            assert!(
                key.as_deref()
                    .is_none_or(|k| !k.is_empty() && no_control(k))
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dso.yaml

/// dso.yaml text, through the path `dso config validate` and `create` take (the keyring's
/// "validated" cache is not involved: `from_str_at` never uses it). Holds: the typed config
/// takes exactly what the JSON Schema and the semantic checks take; an accepted config has
/// only valid provider and secret names, a provider for every secret, a secrets dir below /
/// without `.`/`..`, and file modes within 07777.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    let schema_ok = match parse_yaml(text, path) {
        Ok(doc) => {
            // The known-good path's parse (no lines) reads the same document.
            let values = crate::config::Document::parse_values(text).map_err(|e| e.message);
            assert_eq!(values.as_ref(), Ok(&doc.value), "parse_values differs");
            validate_document(&doc).is_ok()
        }
        Err(_) => false,
    };
    let cfg = match Config::from_str_at(text, path) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(
                !schema_ok,
                "the schema takes this config but the typed config refuses it: {e}"
            );
            assert!(!e.messages().is_empty());
            return;
        }
    };
    assert!(schema_ok, "the typed config takes what the schema refuses");
    for name in cfg.providers.keys() {
        assert!(validate_name(name).is_ok(), "provider {name:?}");
    }
    for (name, secret) in &cfg.secrets {
        assert!(validate_name(name).is_ok(), "secret {name:?}");
        let provider = cfg.provider_of(secret);
        assert!(
            provider.is_some_and(|p| cfg.providers.contains_key(p)),
            "secret {name:?} has no provider"
        );
        assert!(secret.mode.is_none_or(|m| m <= 0o7777));
    }
    let dir = &cfg.runtime.secrets_dir;
    assert!(dir.starts_with('/'), "secrets_dir {dir:?}");
    assert!(
        !dir.trim_end_matches('/').is_empty() && !dir.split('/').any(|c| c == "." || c == ".."),
        "secrets_dir {dir:?}"
    );
    assert!(cfg.runtime.file_mode <= 0o7777);
}

// ---------------------------------------------------------------------------------------------
// OCI spec rewrite

const FUZZ_SECRETS_DIR: &str = "/run/secrets";
const FUZZ_INIT: &str = "/usr/libexec/dso/dso-init";

/// A bundle's config.json, through what `create` does to it: the cheap reference check, the
/// typed parse, reference collection, id mapping and the whole rewrite. Holds: the cheap check
/// never misses a spec with references; the rewritten spec parses again and a second rewrite
/// changes nothing; every field dso does not own is kept (top level, `process`, the engine's
/// mounts in their order); dso's tmpfs is at the secrets dir, `nosuid,nodev,noexec`; file
/// references point inside it; env references run dso-init first.
pub fn spec(data: &[u8]) {
    let path = PathBuf::from("/fuzz/bundle/config.json");
    let quick = references_in(data);
    let Ok(mut spec) = Spec::from_slice(data, path.clone()) else {
        return;
    };
    let Ok(quick) = quick else {
        panic!("the typed parse took a config.json the passthrough check refuses");
    };
    let input = spec.doc().clone();
    let refs = match collect_refs(&spec.env(), Some(&spec.annotations())) {
        Ok(refs) => refs,
        Err(e) => {
            assert!(
                quick,
                "reference error ({e}) in a spec passed through unchanged"
            );
            return;
        }
    };
    assert!(quick || refs.is_empty(), "passthrough would skip {refs:?}");
    let user = spec.user();
    let _ = spec.host_ids(user.0, user.1);
    let _ = spec.host_ids(user.1, user.0);

    let layout = TmpfsLayout {
        secrets_dir: FUZZ_SECRETS_DIR,
        size: 1 << 20,
        uid: user.0,
        gid: user.1,
        mode: 0o700,
    };
    let has_env = refs.iter().any(|r| r.kind == RefKind::Env);
    let init = has_env.then_some(Path::new(FUZZ_INIT));
    if rewrite_spec(&mut spec, &refs, layout, init).is_err() {
        return;
    }
    let out = spec.doc();
    let bytes = match serde_json::to_vec(out) {
        Ok(b) => b,
        Err(e) => panic!("the rewritten spec does not serialize: {e}"),
    };
    let mut again = match Spec::from_slice(&bytes, path) {
        Ok(s) => s,
        Err(e) => panic!("the rewritten spec does not parse again: {e}"),
    };
    if let Err(e) = rewrite_spec(&mut again, &refs, layout, init) {
        panic!("a second rewrite fails: {e}");
    }
    assert_eq!(again.doc(), out, "the rewrite is not idempotent");

    // Fields dso does not own are kept.
    let (Some(before), Some(after)) = (input.as_object(), out.as_object()) else {
        panic!("the top level stopped being an object");
    };
    for (k, v) in before {
        match k.as_str() {
            "mounts" => {
                let (Some(b), Some(a)) = (v.as_array(), after[k].as_array()) else {
                    panic!("mounts stopped being an array");
                };
                assert!(is_subsequence(b, a), "the engine's mounts were changed");
            }
            "process" => {
                let (Some(b), Some(a)) = (v.as_object(), after[k].as_object()) else {
                    panic!("process stopped being an object");
                };
                for (pk, pv) in b {
                    if pk != "env" && pk != "args" {
                        assert_eq!(a.get(pk), Some(pv), "process.{pk} changed");
                    }
                }
            }
            _ => assert_eq!(after.get(k), Some(v), "{k} changed"),
        }
    }

    // dso's tmpfs is where the secrets go, and it is a tmpfs.
    let mounts = after["mounts"].as_array().cloned().unwrap_or_default();
    let at_dir: Vec<&Value> = mounts
        .iter()
        .filter(|m| {
            m.get("destination")
                .and_then(Value::as_str)
                .is_some_and(|d| d.trim_end_matches('/') == FUZZ_SECRETS_DIR)
        })
        .collect();
    assert_eq!(at_dir.len(), 1, "mounts at the secrets dir: {at_dir:?}");
    let tmpfs = at_dir[0];
    assert_eq!(tmpfs.get("type").and_then(Value::as_str), Some("tmpfs"));
    assert_eq!(
        tmpfs.get("source").and_then(Value::as_str),
        Some(TMPFS_SOURCE)
    );
    let options: Vec<&str> = tmpfs
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(options.contains(&o), "tmpfs options {options:?}");
    }

    // File references point inside it; env references run dso-init first.
    let env: Vec<&str> = after["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for r in refs.iter().filter(|r| r.kind == RefKind::File) {
        let want = format!(
            "{}={}",
            r.var,
            container_path(FUZZ_SECRETS_DIR, r.file_name())
        );
        assert!(env.contains(&want.as_str()), "{want} missing from {env:?}");
    }
    if has_env {
        assert_eq!(
            after["process"]["args"][0].as_str(),
            Some(INIT_DEST),
            "env references without dso-init"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// webhook

/// The HMAC key the webhook target signs and checks with.
pub const WEBHOOK_KEY: &[u8] = b"dso-fuzz-webhook-key";
/// The agent's clock during the webhook target (2023-11-14T22:13:20Z).
pub const WEBHOOK_NOW: i64 = 1_700_000_000;

/// Raw bytes from a webhook client, through the agent's request handling with a fixed key and
/// clock. Holds: only the canonical signature (`sha256=` and the hex of HMAC-SHA256 over
/// `<timestamp>.<body>`, hex in either case) of a timestamp within 5 minutes is accepted, with
/// a body of at most 64 KiB that names at least one secret; refusals carry a known status.
pub fn webhook_request(data: &[u8]) {
    let mut conn = data;
    match webhook::process_request(
        &mut conn,
        WEBHOOK_KEY,
        || WEBHOOK_NOW,
        &webhook::ReplayCache::default(),
    ) {
        Outcome::Closed => {}
        Outcome::Rejected { code, .. } => {
            assert!(
                [400, 401, 404, 405, 411, 413, 431].contains(&code),
                "status {code}"
            );
        }
        Outcome::Accepted(names) => {
            assert!(!names.is_empty());
            // Lines end in CRLF or a bare LF (RFC 9112 lets a server take either); the head
            // ends at the first empty one.
            let mut at = 0;
            let mut lines = Vec::new();
            let body_start = loop {
                let Some(nl) = data[at..].iter().position(|&b| b == b'\n') else {
                    panic!("accepted without a complete head");
                };
                let line = &data[at..at + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                at += nl + 1;
                if line.is_empty() {
                    break at;
                }
                let Ok(line) = std::str::from_utf8(line) else {
                    panic!("accepted a head that is not UTF-8");
                };
                lines.push(line);
            };
            let header = |name: &str| {
                lines.iter().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                })
            };
            let (Some(len), Some(ts), Some(sig)) = (
                header("content-length").and_then(|l| l.parse::<usize>().ok()),
                header("x-dso-timestamp"),
                header("x-dso-signature"),
            ) else {
                panic!("accepted without length, timestamp or signature");
            };
            assert!(len <= MAX_BODY);
            let body = &data[body_start..body_start + len];
            let Ok(t) = ts.parse::<i64>() else {
                panic!("accepted timestamp {ts:?}");
            };
            assert!(
                t.abs_diff(WEBHOOK_NOW) <= MAX_SKEW_SECS as u64,
                "stale {ts}"
            );
            let want = webhook::sign(WEBHOOK_KEY, ts, body);
            assert!(
                sig.eq_ignore_ascii_case(&want),
                "accepted signature {sig:?}, the canonical one is {want:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// local store

/// The derived key (what PBKDF2 gives from the key file) the store target opens files with.
pub const STORE_KEY: [u8; 32] = *b"dso fuzz: an already-derived key";
const STORE_PATH: &str = "/fuzz/local.vault";
const SEED_SALT: [u8; 16] = *b"dso-fuzz-salt-16";
const SEED_NONCE: [u8; 12] = *b"dso-fuzz-nce";

/// Two passes over the bytes. (1) As a whole store file, opened with [`STORE_KEY`] after the
/// header checks: random bytes never open; a file that opens has KDF parameters in range and
/// stops opening when any bit of header, body or tag flips. (2) As `mode byte | plaintext`,
/// sealed under the key (so the entry decoder behind the authentication is reached): a header
/// with iterations outside 600 000..=10 000 000 is refused although it authenticates; an
/// authentic file either decodes to valid, unique names or is "corrupt", and what decodes
/// re-encodes to the same entries.
pub fn local_store(data: &[u8]) {
    let path = Path::new(STORE_PATH);
    if let Ok(entries) = decode_with_key(path, data, &STORE_KEY) {
        let iterations = u32::from_be_bytes([data[10], data[11], data[12], data[13]]);
        assert!((MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations));
        check_entries(&entries);
        for pos in [0, 8, 9, 10, 13, 14, 41, 42, data.len() / 2, data.len() - 1] {
            let mut tampered = data.to_vec();
            if let Some(b) = tampered.get_mut(pos) {
                *b ^= 0x01;
                assert!(
                    decode_with_key(path, &tampered, &STORE_KEY).is_err(),
                    "a flipped bit at {pos} still opens"
                );
            }
        }
        assert!(decode_with_key(path, &data[..data.len() - 1], &STORE_KEY).is_err());
    }

    let (iterations, plain) = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 && rest.len() >= 4 => (
            u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            &rest[4..],
        ),
        Some((_, rest)) => (MIN_ITERATIONS, rest),
        None => (MIN_ITERATIONS, data),
    };
    let file = seal_raw(iterations, SEED_SALT, SEED_NONCE, &STORE_KEY, plain);
    let res = decode_with_key(path, &file, &STORE_KEY);
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        assert!(
            matches!(res, Err(StoreError::Iterations { .. })),
            "{iterations} iterations not refused"
        );
        return;
    }
    match res {
        Ok(entries) => {
            check_entries(&entries);
            let encoded = encode_plaintext(&entries);
            assert_eq!(
                encoded.len(),
                plain.len(),
                "decoding dropped or added bytes"
            );
            let resealed = seal_raw(iterations, SEED_SALT, SEED_NONCE, &STORE_KEY, &encoded);
            match decode_with_key(path, &resealed, &STORE_KEY) {
                Ok(back) => assert!(back == entries, "re-encoded entries differ"),
                Err(e) => panic!("re-encoded entries do not open: {e}"),
            }
        }
        Err(StoreError::Corrupt { .. }) => {}
        Err(e) => panic!("an authentic file gave {e}"),
    }
}

fn check_entries(entries: &[(String, SecretValue, u64, u64)]) {
    for (i, (name, ..)) in entries.iter().enumerate() {
        assert!(validate_name(name).is_ok(), "entry name {name:?}");
        assert!(
            i == 0 || entries[i - 1].0 < *name,
            "entries not unique and sorted"
        );
    }
}

/// A store file as `dso` writes it (format, header, AES-256-GCM under [`STORE_KEY`]) holding
/// `entries` (name, value, version, updated): a seed for the `local_store` target.
pub fn store_seed(entries: &[(&str, &[u8], u64, u64)]) -> Vec<u8> {
    let entries: Vec<(String, SecretValue, u64, u64)> = entries
        .iter()
        .map(|(n, v, ver, up)| (n.to_string(), SecretValue::new(v.to_vec()), *ver, *up))
        .collect();
    let plain = encode_plaintext(&entries);
    seal_raw(MIN_ITERATIONS, SEED_SALT, SEED_NONCE, &STORE_KEY, &plain)
}

/// The plaintext form of the `local_store` target's second pass (mode byte 0, then the entry
/// encoding) for `entries`.
pub fn store_plaintext_seed(entries: &[(&str, &[u8], u64, u64)]) -> Vec<u8> {
    let entries: Vec<(String, SecretValue, u64, u64)> = entries
        .iter()
        .map(|(n, v, ver, up)| (n.to_string(), SecretValue::new(v.to_vec()), *ver, *up))
        .collect();
    let mut out = vec![0u8];
    out.extend_from_slice(&encode_plaintext(&entries));
    out
}

/// A webhook request as a sender makes it, signed with [`WEBHOOK_KEY`] at `timestamp`.
pub fn webhook_seed(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /v1/webhook HTTP/1.1\r\nHost: 127.0.0.1:8472\r\nUser-Agent: curl/8.5.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-DSO-Timestamp: {timestamp}\r\nX-DSO-Signature: {}\r\n\r\n",
        body.len(),
        webhook::sign(WEBHOOK_KEY, timestamp, body)
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
