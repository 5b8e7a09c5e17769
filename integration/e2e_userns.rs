//! `dockerd --userns-remap=default` (issue 7): Docker's own user-namespace remapping, where
//! container root is an unprivileged host id and the secrets tmpfs belongs to the container's
//! user namespace. The container gets its file and env secrets, owned by its user as it sees
//! them. Its own test binary: the private dockerd runs with the remap for all of it. dockerd
//! creates the `dockremap` user and its /etc/subuid and /etc/subgid ranges on first use, as on
//! any host that turns the option on. Needs root, dockerd, runc and busybox-static (skipped
//! elsewhere, a failure under `CI=true`).

use dso_testkit::harness;

use harness::IMAGE;

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn docker_userns_remap_containers_get_their_secrets() {
    harness::DAEMON_EXTRA
        .set(serde_json::json!({"userns-remap": "default"}))
        .unwrap();
    let Some((h, _serial)) = harness::begin() else {
        return;
    };
    let db = harness::random_token("remap-db-");
    let api = harness::random_token("remap-api-");
    h.set_secret("db_password", db.as_bytes());
    h.set_secret("api_key", api.as_bytes());
    let info = h.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(info.contains("userns"), "dockerd is not remapping: {info}");

    for user in ["0:0", "1000:1000"] {
        let c = harness::ContainerGuard::new(h, format!("dso-e2e-remap-{}", &user[..1]));
        let out = h.docker(&[
            "run",
            "--name",
            &c.name,
            "--runtime",
            "dso",
            "--network",
            "none",
            "--user",
            user,
            "-e",
            "DB_FILE=dsofile://db_password",
            "-e",
            "API=dso://api_key",
            IMAGE,
            "sh",
            "-c",
            "cat $DB_FILE; echo; echo \"$API\"; stat -c '%u:%g %a' $DB_FILE; \
             grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3; cat /proc/self/uid_map",
        ]);
        assert!(
            out.status.success(),
            "docker run --user {user}: {}\n{}",
            harness::stderr(&out),
            h.dockerd_log_tail(20)
        );
        let text = harness::stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], db, "{text}");
        assert_eq!(lines[1], api, "{text}");
        assert_eq!(lines[2], format!("{user} 400"), "{text}");
        assert_eq!(lines[3], "tmpfs", "{text}");
        // Remapped: container 0 is not host 0.
        let map: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(map[0], "0", "{text}");
        assert_ne!(map[1], "0", "not remapped: {text}");
    }
}
