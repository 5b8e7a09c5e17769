//! A container in a user namespace with remapped ids, against the real runc (issue 7): uid and
//! gid 0..65535 inside are 100000..165535 on the host, as `dockerd --userns-remap` sets up.
//! The container gets its file and env secrets; each file is owned by the container's user as
//! the container sees it (the mapped id on the host), the tmpfs belongs to the container, and
//! nothing is written outside it. A container user the mapping does not cover is refused before
//! anything is created. Needs root, runc and busybox-static (skipped outside CI when missing, a
//! failure under `CI=true`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dso_testkit::runc_lab::*;

const HOST_BASE: u32 = 100_000;

/// Turns a lab bundle into one with a user namespace mapping 0..65535 to HOST_BASE.., the
/// rootfs owned by the mapped root (as Docker's remapped layers are), and /sys bound rather
/// than mounted (a new sysfs needs a network namespace owned by the user namespace).
fn remap(bundle: &Path, size: u32) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": HOST_BASE, "size": size}]);
    spec["linux"]["uidMappings"] = map.clone();
    spec["linux"]["gidMappings"] = map;
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    for m in mounts.iter_mut() {
        if m["destination"] == "/sys" {
            *m = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
    }
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = Command::new("chown")
        .args(["-R", &format!("{HOST_BASE}:{HOST_BASE}")])
        .arg(bundle.join("rootfs"))
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn run(lab: &Lab, bundle: &Path, id: &str) -> i32 {
    let out = lab.create(bundle, id);
    let log = fs::read_to_string(lab.path("runc.log")).unwrap_or_default();
    assert!(out.status.success(), "create: {}\n{log}", out.stderr);
    assert!(lab.runc(&["start", id]).status.success());
    let pid: i32 = fs::read_to_string(bundle.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sh\n" {
        assert!(t0.elapsed() < Duration::from_secs(10), "no exec");
        std::thread::sleep(Duration::from_millis(10));
    }
    pid
}

fn exec(lab: &Lab, id: &str, cmd: &str) -> String {
    let out = lab.runc(&["exec", id, "sh", "-c", cmd]);
    assert!(
        out.status.success(),
        "exec {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "root: real runc and busybox-static; scripts/test.sh runs it (--include-ignored)"]
fn user_namespace_with_remapped_ids() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    lab.write_config(
        "  custom: { provider: local, uid: 1234, gid: 55, mode: \"0440\" }\n",
        "",
    );
    lab.set_secret("db", b"userns-db");
    lab.set_secret("api", b"userns-api");
    lab.set_secret("custom", b"userns-custom");
    let env = [
        "DB_FILE=dsofile://db",
        "API=dso://api",
        "C_FILE=dsofile://custom",
    ];

    for (user, id) in [((1000, 1000), "t-userns-1000"), ((0, 0), "t-userns-root")] {
        let b = lab.bundle("while :; do sleep 1; done", &env, user);
        remap(&b, 65536);
        let pid = run(&lab, &b, id);
        // The process really is in a user namespace, with the mapping.
        let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        assert_eq!(
            map.split_whitespace().collect::<Vec<_>>(),
            ["0", "100000", "65536"],
            "{id}"
        );
        // From the host: values in place, owners are the mapped ids.
        let dir = format!("/proc/{pid}/root/run/secrets");
        assert_eq!(fs::read(format!("{dir}/db")).unwrap(), b"userns-db");
        let db = fs::metadata(format!("{dir}/db")).unwrap();
        assert_eq!(
            (db.uid(), db.gid(), db.permissions().mode() & 0o777),
            (HOST_BASE + user.0, HOST_BASE + user.1, 0o400),
            "{id}"
        );
        let custom = fs::metadata(format!("{dir}/custom")).unwrap();
        assert_eq!(
            (custom.uid(), custom.gid()),
            (HOST_BASE + 1234, HOST_BASE + 55)
        );
        // From inside: the container's own ids, readable by its user, env value delivered.
        assert_eq!(
            exec(
                &lab,
                id,
                "stat -c '%u:%g %a' /run/secrets/db /run/secrets/custom"
            ),
            format!("{}:{} 400\n1234:55 440\n", user.0, user.1)
        );
        let inside = exec(
            &lab,
            id,
            "cat /run/secrets/db; echo; stat -c '%u:%g' /run/secrets; \
             grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3",
        );
        assert_eq!(
            inside,
            format!("userns-db\n{}:{}\ntmpfs\n", user.0, user.1),
            "{id}"
        );
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            environ.split(|b| *b == 0).any(|v| v == b"API=userns-api"),
            "{id}: env value missing"
        );
        // Rotation writes into the same namespace-owned tmpfs, keeping the mapped owner.
        lab.set_secret("db", b"userns-db-2");
        let out = Command::new(dso_exe())
            .arg("--config")
            .arg(lab.path("dso.yaml"))
            .args(["rotate", "db"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(format!("{dir}/db")).unwrap(), b"userns-db-2");
        let db = fs::metadata(format!("{dir}/db")).unwrap();
        assert_eq!(
            (db.uid(), db.gid()),
            (HOST_BASE + user.0, HOST_BASE + user.1)
        );
        lab.set_secret("db", b"userns-db");
        // Nothing written outside the container: the bundle holds no value.
        let bundle_text = fs::read_to_string(b.join("config.json")).unwrap();
        assert!(
            !bundle_text.contains("userns-"),
            "{id}: a value in config.json"
        );
        lab.runc(&["delete", "--force", id]);
    }

    // A container user outside the mapping (size 1000: 1000 and 1234 are not mapped): refused
    // before anything is created, with an error that says so.
    let b = lab.bundle("true", &env, (1000, 1000));
    remap(&b, 1000);
    let before = fs::read(b.join("config.json")).unwrap();
    let out = lab.create(&b, "t-userns-unmapped");
    assert!(!out.status.success());
    let log = fs::read_to_string(lab.path("runc.log")).unwrap_or_default();
    assert!(
        log.lines()
            .last()
            .unwrap_or_default()
            .contains("is not mapped in the container's user namespace"),
        "{log}"
    );
    assert!(!lab.list().lines().any(|l| l == "t-userns-unmapped"));
    assert!(!lab.path("state/t-userns-unmapped.json").exists());
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
}
