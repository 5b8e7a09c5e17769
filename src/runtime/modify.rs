//! Spec modifiers, one per concern, applied in order and each idempotent: the secrets tmpfs,
//! file references pointed at their paths, and the dso-init wrapper for env references.
//! None of them ever puts a secret value into the spec.

use std::path::Path;

use oci_spec::runtime::MountBuilder;
use serde_json::Value;

use super::spec::{Spec, SpecError};
use crate::secrets::{RefKind, RefSource, SecretRef};

/// `source` of dso's tmpfs: shows as the device name in /proc/mounts, marks the mount as ours.
pub const TMPFS_SOURCE: &str = "dso";
/// Where dso-init is bind-mounted inside the container. Under /dev (a tmpfs in Docker's specs)
/// so that nothing is created in the image's own filesystem.
pub const INIT_DEST: &str = "/dev/.dso-init";
/// Name of the env hand-off file in the secrets dir (read and unlinked by dso-init).
pub const ENV_FILE_NAME: &str = ".dso-env";

/// The container path of `name` inside the secrets dir (a container path, built as a string:
/// it is only ever resolved inside the container's root).
pub fn container_path(secrets_dir: &str, name: &str) -> String {
    format!("{}/{}", secrets_dir.trim_end_matches('/'), name)
}

/// A mount destination as the container will see it: the image's symlinks followed inside its
/// root (`/var/run/secrets/x` is `/run/secrets/x` in an image where `/var/run` → `../run`), for
/// as much of the path as exists in the image; the rest is kept as written. runc resolves
/// destinations the same way (inside the root) when it mounts them.
pub type Resolve<'a> = &'a dyn Fn(&str) -> String;

/// [`Resolve`] for the image at `rootfs` (a host path): openat2 inside the root
/// (`RESOLVE_IN_ROOT`), with pathrs's resolver where openat2 cannot answer; never a host-side
/// join.
///
/// A destination is walked from its first component on, and each prefix is looked up once per
/// resolver: a spec's destinations share their parents (`/dev`, `/sys`), the rewrite compares
/// each destination twice, and a prefix the image lacks costs pathrs about ten system calls.
/// Walking forward finds the same place as trying the longest prefix first: openat2 resolves
/// components in order, so once a prefix is missing every longer one is too.
pub fn resolver_in(rootfs: &Path) -> Option<impl Fn(&str) -> String + use<>> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::os::fd::{AsFd, AsRawFd};
    let root = pathrs::Root::open(rootfs).ok()?;
    let real_of = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let root_real = real_of(root.as_fd().as_raw_fd())?;
    // Prefix -> None: not in the image; Some(None): in it, but where cannot be told (its real
    // path is unreadable or outside the root); Some(Some(p)): `p`, as the container sees it.
    let seen: RefCell<HashMap<String, Option<Option<String>>>> = RefCell::default();
    let look_up = move |prefix: &str| {
        // openat2 inside the root, as pathrs does, but without the procfs lookups pathrs makes
        // to describe a missing path (most of a spec's /dev and /sys mounts are not in the
        // image). Any other failure (no openat2, a rename racing with `..`) is pathrs's to
        // retry and answer.
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let h: std::os::fd::OwnedFd =
            match rustix::fs::openat2(root.as_fd(), prefix, flags, Mode::empty(), resolve) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return None,
                Err(_) => root.resolve(prefix).ok()?.into(),
            };
        let real = real_of(h.as_raw_fd());
        let inside = real.and_then(|r| {
            let inside = r.strip_prefix(&root_real).ok()?;
            Some(format!("/{}", inside.to_string_lossy()))
        });
        Some(inside)
    };
    Some(move |dest: &str| {
        let comps: Vec<&str> = dest
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        // The longest prefix in the image: how many components, and where it is.
        let mut found: Option<(usize, Option<String>)> = None;
        for n in 1..=comps.len() {
            let prefix = format!("/{}", comps[..n].join("/"));
            let hit = (seen.borrow_mut().entry(prefix))
                .or_insert_with_key(|p| look_up(p))
                .clone();
            match hit {
                Some(inside) => found = Some((n, inside)),
                None => break,
            }
        }
        match found {
            Some((n, Some(mut out))) => {
                for c in &comps[n..] {
                    if !out.ends_with('/') {
                        out.push('/');
                    }
                    out.push_str(c);
                }
                out
            }
            _ => format!("/{}", comps.join("/")),
        }
    })
}

fn under(dest: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dest.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Adds the secrets tmpfs (`nosuid,nodev,noexec`, size cap, owner and mode). It goes before
/// any mount below the secrets dir (so that e.g. compose's own `/run/secrets/x` binds, or the
/// kubelet's `/var/run/secrets/kubernetes.io/serviceaccount` where `/var/run` → `/run`, stay
/// visible on top of it): destinations are compared as `resolve` sees them in the image.
/// Refuses a spec that already mounts something else at the same path.
pub fn add_secrets_tmpfs(
    spec: &mut Spec,
    secrets_dir: &str,
    size: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    resolve: Resolve<'_>,
) -> Result<(), SpecError> {
    let path = spec.path().to_path_buf();
    let mounts = spec.mounts_mut()?;
    let dest_of = |m: &Value| m.get("destination").and_then(Value::as_str).map(resolve);
    let configured = secrets_dir;
    let resolved_dir = resolve(secrets_dir);
    let secrets_dir = resolved_dir.as_str();
    for m in mounts.iter() {
        if dest_of(m).as_deref().map(|d| d.trim_end_matches('/'))
            == Some(secrets_dir.trim_end_matches('/'))
        {
            // Ours (a spec rewritten once already) only if it is exactly what dso adds: a
            // tmpfs from source `dso` with nosuid, nodev and noexec. A bind mount or another
            // filesystem that merely borrows the source name is refused like any other mount.
            let opts: Vec<&str> = m
                .get("options")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ours = m.get("source").and_then(Value::as_str) == Some(TMPFS_SOURCE)
                && m.get("type").and_then(Value::as_str) == Some("tmpfs")
                && ["nosuid", "nodev", "noexec"]
                    .iter()
                    .all(|o| opts.contains(o))
                && !opts.iter().any(|o| matches!(*o, "bind" | "rbind"));
            if ours {
                return Ok(());
            }
            return Err(SpecError::Shape {
                path,
                what: format!(
                    "a mount already exists at {configured}; set runtime.secrets_dir in dso.yaml to another path"
                ),
            });
        }
    }
    let mount = MountBuilder::default()
        .destination(configured)
        .typ("tmpfs")
        .source(TMPFS_SOURCE)
        .options(vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
            format!("size={size}"),
            format!("mode={mode:o}"),
            format!("uid={uid}"),
            format!("gid={gid}"),
        ])
        .build()
        .map_err(|e| SpecError::Shape {
            path: path.clone(),
            what: e.to_string(),
        })?;
    let value = serde_json::to_value(mount).map_err(|e| SpecError::Shape {
        path,
        what: e.to_string(),
    })?;
    let at = mounts
        .iter()
        .position(|m| dest_of(m).is_some_and(|d| under(&d, secrets_dir)))
        .unwrap_or(mounts.len());
    mounts.insert(at, value);
    Ok(())
}

/// Sets `VAR=value` in `process.env`: replaces the entry at `index` when given, else replaces
/// an existing `VAR=` entry or appends one.
fn set_env(env: &mut Vec<Value>, index: Option<usize>, var: &str, value: &str) {
    let entry = Value::String(format!("{var}={value}"));
    let prefix = format!("{var}=");
    let pos = index.filter(|&i| i < env.len()).or_else(|| {
        env.iter()
            .position(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix)))
    });
    match pos {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
}

/// `X_FILE=dsofile://n` → `X_FILE=/run/secrets/n` (and annotation file references likewise).
pub fn point_file_refs(
    spec: &mut Spec,
    refs: &[SecretRef],
    secrets_dir: &str,
) -> Result<(), SpecError> {
    let env = spec.env_mut()?;
    for r in refs.iter().filter(|r| r.kind == RefKind::File) {
        let index = match r.source {
            RefSource::Env(i) => Some(i),
            RefSource::Annotation(_) => None,
        };
        set_env(
            env,
            index,
            &r.var,
            &container_path(secrets_dir, r.file_name()),
        );
    }
    Ok(())
}

/// Env references: bind dso-init read-only into the container and run it first. It reads the
/// hand-off file, unlinks it, sets the variables and `execve`s the original argv (PID 1 stays
/// PID 1). The references themselves stay in the spec; values travel only through the tmpfs.
pub fn wrap_with_init(
    spec: &mut Spec,
    init_host_path: &Path,
    env_file: &str,
) -> Result<(), SpecError> {
    let path = spec.path().to_path_buf();
    let args = spec.args_mut()?;
    if args.first().and_then(Value::as_str) == Some(INIT_DEST) {
        return Ok(());
    }
    if args.is_empty() {
        return Err(SpecError::Shape {
            path,
            what: "process.args is empty".into(),
        });
    }
    args.insert(0, Value::String(INIT_DEST.into()));
    args.insert(1, Value::String(env_file.into()));
    let mount = MountBuilder::default()
        .destination(INIT_DEST)
        .typ("bind")
        .source(init_host_path)
        .options(vec![
            "rbind".to_string(),
            "ro".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ])
        .build()
        .map_err(|e| SpecError::Shape {
            path: path.clone(),
            what: e.to_string(),
        })?;
    let value = serde_json::to_value(mount).map_err(|e| SpecError::Shape {
        path,
        what: e.to_string(),
    })?;
    spec.mounts_mut()?.push(value);
    Ok(())
}

/// The secrets tmpfs as `create` lays it out.
#[derive(Debug, Clone, Copy)]
pub struct TmpfsLayout<'a> {
    pub secrets_dir: &'a str,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The whole rewrite of step 5, in order: the tmpfs, file references pointed at their paths,
/// and (when `init` is given: there are env references) the dso-init wrapper. Idempotent, like
/// each modifier.
pub fn rewrite_spec(
    spec: &mut Spec,
    refs: &[SecretRef],
    tmpfs: TmpfsLayout<'_>,
    init: Option<&Path>,
) -> Result<(), SpecError> {
    let rootfs = spec.rootfs();
    let literal = |d: &str| d.to_string();
    let in_image = rootfs.as_deref().and_then(resolver_in);
    let resolve: Resolve<'_> = match &in_image {
        Some(r) => r,
        None => &literal,
    };
    add_secrets_tmpfs(
        spec,
        tmpfs.secrets_dir,
        tmpfs.size,
        tmpfs.uid,
        tmpfs.gid,
        tmpfs.mode,
        resolve,
    )?;
    point_file_refs(spec, refs, tmpfs.secrets_dir)?;
    if let Some(init) = init {
        let env_file = container_path(tmpfs.secrets_dir, ENV_FILE_NAME);
        wrap_with_init(spec, init, &env_file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::collect_refs;
    use std::path::PathBuf;

    fn spec(json: &str) -> Spec {
        Spec::from_slice(json.as_bytes(), PathBuf::from("/b/config.json")).unwrap()
    }

    const BASE: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh","-c","x"],
                   "env":["PATH=/bin","DB_FILE=dsofile://db","API=dso://api"]},
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/run/secrets/compose_thing","type":"bind","source":"/x","options":["rbind"]}],
        "annotations":{"dso.secrets/TOKEN_FILE":"dsofile://token"}}"#;

    fn literal(d: &str) -> String {
        d.to_string()
    }

    /// Issue 14 point 11: in an image where `/var/run` → `../run`, the kubelet's
    /// `/var/run/secrets/kubernetes.io/serviceaccount` mount is below `/run/secrets`: the
    /// tmpfs must go before it, not after (which would hide the token).
    #[test]
    fn destinations_are_compared_through_the_images_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path();
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("run")).unwrap();
        std::fs::create_dir_all(rootfs.join("var")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::os::unix::fs::symlink("../run", rootfs.join("var/run")).unwrap();
        // An absolute link that would leave the root on the host resolves inside it.
        std::os::unix::fs::symlink("/etc/../../run", rootfs.join("escape")).unwrap();
        let json = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["DB_FILE=dsofile://db"]},
            "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                      {"destination":"/var/run/secrets/kubernetes.io/serviceaccount","type":"bind","source":"/sa","options":["rbind","ro"]},
                      {"destination":"/etc/hosts","type":"bind","source":"/h","options":["rbind"]}]}"#;
        let mut s = Spec::from_slice(json.as_bytes(), bundle.join("config.json")).unwrap();
        let resolve = resolver_in(&s.rootfs().unwrap()).unwrap();
        assert_eq!(resolve("/var/run/secrets/x"), "/run/secrets/x");
        assert_eq!(resolve("/var/run"), "/run");
        assert_eq!(resolve("/escape/secrets"), "/run/secrets");
        assert_eq!(resolve("/no/such//dir/"), "/no/such/dir");
        // Asked again (answers are kept per prefix), and past a file or a missing component.
        std::fs::write(rootfs.join("etc/hosts"), "").unwrap();
        assert_eq!(resolve("/var/run/secrets/x"), "/run/secrets/x");
        assert_eq!(resolve("/var/run/secrets"), "/run/secrets");
        assert_eq!(resolve("/etc/hosts/x"), "/etc/hosts/x");
        assert_eq!(resolve("/var/run/../etc"), "/etc");
        assert_eq!(resolve("/"), "/");
        rewrite_spec(
            &mut s,
            &[],
            TmpfsLayout {
                secrets_dir: "/run/secrets",
                size: 1 << 20,
                uid: 0,
                gid: 0,
                mode: 0o700,
            },
            None,
        )
        .unwrap();
        let dests: Vec<&str> = s.doc()["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/run/secrets",
                "/var/run/secrets/kubernetes.io/serviceaccount",
                "/etc/hosts"
            ]
        );
        // A secrets dir spelled through the link is the same place as a mount at /run/secrets.
        let mut again = Spec::from_slice(json.as_bytes(), bundle.join("config.json")).unwrap();
        let r = resolver_in(&rootfs).unwrap();
        add_secrets_tmpfs(&mut again, "/var/run/secrets", 1, 0, 0, 0o700, &r).unwrap();
        assert_eq!(again.doc()["mounts"][1]["destination"], "/var/run/secrets");
    }

    #[test]
    fn tmpfs_goes_before_mounts_below_it_and_is_idempotent() {
        let mut s = spec(BASE);
        add_secrets_tmpfs(&mut s, "/run/secrets", 1 << 20, 1000, 1000, 0o700, &literal).unwrap();
        add_secrets_tmpfs(&mut s, "/run/secrets", 1 << 20, 1000, 1000, 0o700, &literal).unwrap();
        let mounts = s.doc()["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1]["destination"], "/run/secrets");
        assert_eq!(mounts[1]["type"], "tmpfs");
        let opts: Vec<_> = mounts[1]["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            opts,
            [
                "nosuid",
                "nodev",
                "noexec",
                "size=1048576",
                "mode=700",
                "uid=1000",
                "gid=1000"
            ]
        );
        assert_eq!(mounts[2]["destination"], "/run/secrets/compose_thing");
    }

    #[test]
    fn foreign_mount_at_secrets_dir_is_refused() {
        let mut s = spec(BASE);
        let err = add_secrets_tmpfs(&mut s, "/proc", 1, 0, 0, 0o700, &literal).unwrap_err();
        assert!(err.to_string().contains("secrets_dir"), "{err}");
    }

    /// A mount that only borrows dso's source name is not dso's tmpfs: a bind mount from the
    /// host, or a tmpfs without nosuid/nodev/noexec, at the secrets dir is refused.
    #[test]
    fn a_mount_borrowing_the_source_name_is_not_ours() {
        for m in [
            r#"{"destination":"/run/secrets","type":"bind","source":"dso","options":["rbind"]}"#,
            r#"{"destination":"/run/secrets","type":"none","source":"dso","options":["bind","nosuid","nodev","noexec"]}"#,
            r#"{"destination":"/run/secrets","type":"tmpfs","source":"dso","options":["nosuid"]}"#,
        ] {
            let json = BASE.replace(
                r#"{"destination":"/proc","type":"proc","source":"proc"}"#,
                &format!(r#"{{"destination":"/proc","type":"proc","source":"proc"}},{m}"#),
            );
            let mut s = spec(&json);
            let err = add_secrets_tmpfs(&mut s, "/run/secrets", 1 << 20, 0, 0, 0o700, &literal)
                .unwrap_err();
            assert!(
                err.to_string().contains("a mount already exists"),
                "{m}: {err}"
            );
        }
    }

    #[test]
    fn file_refs_become_paths() {
        let mut s = spec(BASE);
        let refs = collect_refs(&s.env(), Some(&s.annotations())).unwrap();
        point_file_refs(&mut s, &refs, "/run/secrets").unwrap();
        point_file_refs(&mut s, &refs, "/run/secrets").unwrap();
        assert_eq!(
            s.doc()["process"]["env"],
            serde_json::json!([
                "PATH=/bin",
                "DB_FILE=/run/secrets/db",
                "API=dso://api",
                "TOKEN_FILE=/run/secrets/token"
            ])
        );
    }

    #[test]
    fn init_wraps_args_once() {
        let mut s = spec(BASE);
        wrap_with_init(
            &mut s,
            Path::new("/usr/bin/dso-init"),
            "/run/secrets/.dso-env",
        )
        .unwrap();
        wrap_with_init(
            &mut s,
            Path::new("/usr/bin/dso-init"),
            "/run/secrets/.dso-env",
        )
        .unwrap();
        assert_eq!(
            s.doc()["process"]["args"],
            serde_json::json!([INIT_DEST, "/run/secrets/.dso-env", "sh", "-c", "x"])
        );
        let mounts = s.doc()["mounts"].as_array().unwrap();
        assert_eq!(mounts.last().unwrap()["destination"], INIT_DEST);
        assert_eq!(mounts.last().unwrap()["source"], "/usr/bin/dso-init");
        // The reference stays; no value anywhere.
        assert!(
            s.doc()["process"]["env"]
                .as_array()
                .unwrap()
                .contains(&Value::from("API=dso://api"))
        );
    }

    #[test]
    fn paths_under() {
        assert!(under("/run/secrets", "/run/secrets/"));
        assert!(under("/run/secrets/a", "/run/secrets"));
        assert!(!under("/run/secretsX", "/run/secrets"));
        assert_eq!(container_path("/run/secrets/", "a"), "/run/secrets/a");
    }
}
