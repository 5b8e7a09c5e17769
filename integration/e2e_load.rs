//! Load through a real dockerd (issue 7): 30 concurrent `docker run --runtime dso`, each with
//! its own secret, each seeing exactly its own (with and without the agent serving the
//! creates); then 100 forced rotations per second for a minute through the agent's control
//! socket while a stream of short-lived containers starts and stops, with no error, every
//! running container at the latest value at the end, and no leak in the agent (fd count, RSS).
//! Needs root, dockerd, runc and busybox-static (skipped elsewhere, a failure under `CI=true`).

use dso_testkit::harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Harness, IMAGE};

/// The dso.yaml: the harness's, plus `extra` secrets (declared with `{}`).
fn config(h: &Harness, extra: &[String]) {
    let declared: String = extra.iter().map(|n| format!("  {n}: {{}}\n")).collect();
    h.write_dso_yaml_with_secrets(&declared);
}

/// State records and runc containers left by dso: none may remain once containers are gone.
/// Records of deleted containers are dropped by `dso status` (and the agent's cycle), which
/// runs first.
fn leftovers(h: &Harness) -> (Vec<String>, Vec<String>) {
    let out = h.dso(&["status"], None);
    assert!(
        out.status.success(),
        "dso status: {}",
        harness::stderr(&out)
    );
    let records = std::fs::read_dir(h.state_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "dso.sock")
                .collect()
        })
        .unwrap_or_default();
    (records, h.runc_list(&harness::dso_runc_root(h)))
}

/// One `docker run --rm` per secret, all at once; each prints its env and file value.
fn concurrent_round(h: &'static Harness, values: &[String]) -> Duration {
    let t0 = Instant::now();
    let handles: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, _)| {
            std::thread::spawn(move || {
                let env = format!("V=dso://load_{i}");
                let file = format!("F=dsofile://load_{i}");
                h.docker(&[
                    "run",
                    "--rm",
                    "--runtime",
                    "dso",
                    "--network",
                    "none",
                    "-e",
                    &env,
                    "-e",
                    &file,
                    IMAGE,
                    "sh",
                    "-c",
                    "echo \"env=$V\"; echo \"file=$(cat $F)\"",
                ])
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|t| t.join().unwrap()).collect();
    let took = t0.elapsed();
    for (i, out) in outs.iter().enumerate() {
        assert!(
            out.status.success(),
            "run {i} failed: {}\n{}",
            harness::stderr(out),
            h.dockerd_log_tail(20)
        );
        let text = harness::stdout(out);
        assert_eq!(
            text,
            format!("env={v}\nfile={v}\n", v = values[i]),
            "container {i} saw something else"
        );
        for (j, other) in values.iter().enumerate() {
            assert!(
                j == i || !text.contains(other.as_str()),
                "{i} saw {j}'s value"
            );
        }
    }
    took
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn thirty_concurrent_runs_each_see_exactly_their_own_secret() {
    let Some((h, _serial)) = harness::begin() else {
        return;
    };
    const N: usize = 30;
    let names: Vec<String> = (0..N).map(|i| format!("load_{i}")).collect();
    config(h, &names);
    for round in ["without the agent", "with the agent serving the creates"] {
        let values: Vec<String> = (0..N)
            .map(|i| harness::random_token(&format!("load-{i}-")))
            .collect();
        for (n, v) in names.iter().zip(&values) {
            h.set_secret(n, v.as_bytes());
        }
        let agent = round.starts_with("with").then(|| h.start_agent());
        let took = concurrent_round(h, &values);
        eprintln!("{N} concurrent docker runs {round}: {took:?}");
        drop(agent);
        let (records, containers) = leftovers(h);
        assert!(records.is_empty(), "state records left: {records:?}");
        assert!(
            containers.is_empty(),
            "runc containers left: {containers:?}"
        );
        if round.starts_with("with") {
            let audit = std::fs::read_to_string(h.audit_path()).unwrap();
            let via_agent = audit
                .lines()
                .filter(|l| l.contains("\"via\":\"agent\"") && l.contains("\"load_"))
                .count();
            assert!(
                via_agent >= N,
                "only {via_agent} fetches went through the agent"
            );
        }
    }
}

/// `/proc/<pid>`: open fds and VmRSS in KiB.
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (fds, rss)
}

/// One request on the agent's control socket; the answer as JSON.
fn control(socket: &std::path::Path, req: &serde_json::Value) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_hundred_rotations_a_second_for_a_minute_while_containers_come_and_go() {
    let Some((h, _serial)) = harness::begin() else {
        return;
    };
    const SECRETS: usize = 10;
    const LONG: usize = 5;
    const RATE: u64 = 100;
    const SECONDS: u64 = 60;
    let rot: Vec<String> = (0..SECRETS).map(|i| format!("rot_{i}")).collect();
    let churn: Vec<String> = (0..3).map(|i| format!("churn_{i}")).collect();
    config(h, &[rot.clone(), churn.clone()].concat());
    // Every value ever set, per secret: a container may see any of them, nothing else.
    let history: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let set = |name: &str, tag: &str| {
        let v = harness::random_token(&format!("{name}-{tag}-"));
        h.set_secret(name, v.as_bytes());
        history
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .push(v);
    };
    for n in rot.iter().chain(&churn) {
        set(n, "0");
    }
    let agent = h.start_agent();
    let agent_pid = agent.0.id();
    let socket = h.state_dir().join("dso.sock");

    // Long-running containers, each with two of the rotated secrets as files: a rotation is
    // one secret re-fetched and rewritten into the container that uses it.
    let guards: Vec<_> = (0..LONG)
        .map(|i| harness::ContainerGuard::new(h, format!("dso-load-long-{i}")))
        .collect();
    let owner = |secret: usize| secret / (SECRETS / LONG);
    for (i, g) in guards.iter().enumerate() {
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            g.name.clone(),
            "--runtime".into(),
            "dso".into(),
            "--network".into(),
            "none".into(),
        ];
        for n in rot
            .iter()
            .enumerate()
            .filter(|(j, _)| owner(*j) == i)
            .map(|(_, n)| n)
        {
            args.extend(["-e".into(), format!("{}=dsofile://{n}", n.to_uppercase())]);
        }
        args.extend([
            IMAGE.into(),
            "sh".into(),
            "-c".into(),
            "while :; do sleep 1; done".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = h.docker(&args);
        assert!(out.status.success(), "{}", harness::stderr(&out));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    // Warm-up: a few seconds of the full load before the baseline is taken.
    let mut threads = Vec::new();
    // Rotation drivers: two clients, each paced at RATE/2 a second.
    for client in 0..2u64 {
        let (stop, rotations, failures, socket, rot) = (
            stop.clone(),
            rotations.clone(),
            failures.clone(),
            socket.clone(),
            rot.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let every = Duration::from_micros(2_000_000 / RATE);
            let mut next = Instant::now();
            let mut k = client as usize;
            while !stop.load(Ordering::SeqCst) {
                let name = &rot[k % rot.len()];
                k += 2;
                let answer = control(
                    &socket,
                    &serde_json::json!({"op": "rotate", "secret": name}),
                );
                let outcomes = answer["outcomes"].as_array().cloned().unwrap_or_default();
                let bad: Vec<_> = outcomes
                    .iter()
                    .filter(|o| o["status"] != "rotated")
                    .collect();
                if answer["ok"] != true || outcomes.len() != 1 || !bad.is_empty() {
                    failures.lock().unwrap().push(format!("{name}: {answer}"));
                }
                rotations.fetch_add(1, Ordering::SeqCst);
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }));
    }
    // The values change too, once a second, one secret at a time.
    {
        let (stop, history, rot) = (stop.clone(), history.clone(), rot.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = &rot[k % rot.len()];
                let v = harness::random_token(&format!("{name}-{k}-"));
                h.set_secret(name, v.as_bytes());
                history.lock().unwrap().get_mut(name).unwrap().push(v);
                k += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    // Short-lived containers, one after another, each checking its secret.
    let runs = Arc::new(AtomicU64::new(0));
    {
        let (stop, runs, failures, history, churn) = (
            stop.clone(),
            runs.clone(),
            failures.clone(),
            history.clone(),
            churn.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = &churn[k % churn.len()];
                k += 1;
                let env = format!("F=dsofile://{name}");
                let out = h.docker(&[
                    "run",
                    "--rm",
                    "--runtime",
                    "dso",
                    "--network",
                    "none",
                    "-e",
                    &env,
                    IMAGE,
                    "sh",
                    "-c",
                    "cat $F",
                ]);
                let seen = harness::stdout(&out);
                let known = history.lock().unwrap()[name].contains(&seen);
                if !out.status.success() || !known {
                    failures.lock().unwrap().push(format!(
                        "short-lived run of {name}: {} {}",
                        out.status,
                        harness::stderr(&out)
                    ));
                }
                runs.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    std::thread::sleep(Duration::from_secs(5));
    let (fd0, rss0) = footprint(agent_pid);
    let (r0, t0) = (rotations.load(Ordering::SeqCst), Instant::now());
    std::thread::sleep(Duration::from_secs(SECONDS));
    let (r1, elapsed) = (rotations.load(Ordering::SeqCst), t0.elapsed());
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    // Let connection threads and the last creates finish.
    std::thread::sleep(Duration::from_secs(2));
    let (fd1, rss1) = footprint(agent_pid);
    let rate = (r1 - r0) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} forced rotations in {elapsed:?} ({rate:.1}/s), \
         {} short-lived containers; agent fds {fd0} -> {fd1}, RSS {rss0} KiB -> {rss1} KiB",
        r1 - r0,
        runs.load(Ordering::SeqCst)
    );

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // The rate is a performance figure (bench/rotation.py measures it); on a loaded 2-core
    // machine it varies with whatever else runs. What this test holds the agent to is load
    // without failure, leak or growth: it must have done real work meanwhile.
    assert!(
        r1 - r0 >= 100,
        "only {} rotations in {elapsed:?}: the load never really ran",
        r1 - r0
    );
    assert!(
        runs.load(Ordering::SeqCst) >= 10,
        "too few short-lived containers"
    );
    assert!(fd1 <= fd0 + 4, "the agent's fds grew: {fd0} -> {fd1}");
    assert!(
        rss1 <= rss0 + 8 * 1024,
        "the agent's RSS grew by more than 8 MiB: {rss0} -> {rss1} KiB"
    );

    // The audit trail agrees: no rotation failed.
    let audit = std::fs::read_to_string(h.audit_path()).unwrap();
    let failed: Vec<_> = audit
        .lines()
        .filter(|l| l.contains("\"rotation_failed\"") || l.contains("\"injection_failed\""))
        .collect();
    assert!(failed.is_empty(), "failures in the audit: {failed:#?}");

    // At the end every long-running container holds the latest value of every secret.
    for n in &rot {
        let answer = control(&socket, &serde_json::json!({"op": "rotate", "secret": n}));
        assert_eq!(answer["ok"], true, "{answer}");
    }
    let latest = history.lock().unwrap().clone();
    for (i, g) in guards.iter().enumerate() {
        for n in rot
            .iter()
            .enumerate()
            .filter(|(j, _)| owner(*j) == i)
            .map(|(_, n)| n)
        {
            let out = h.docker(&["exec", &g.name, "cat", &format!("/run/secrets/{n}")]);
            assert_eq!(
                harness::stdout(&out),
                *latest[n].last().unwrap(),
                "{} {n}",
                g.name
            );
        }
    }
    drop(guards);
    drop(agent);
}

/// `docker exec NAME cat FILE`, or None when the container is not running.
fn cat(h: &Harness, name: &str, file: &str) -> Option<String> {
    let out = h.docker(&["exec", name, "cat", file]);
    out.status.success().then(|| harness::stdout(&out))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn dockerd_restarted_while_the_agent_runs() {
    let Some((h, _serial)) = harness::begin() else {
        return;
    };
    h.write_dso_yaml_with_secrets("  restart_file: { rotation: { interval: 1s } }\n");
    let v1 = harness::random_token("restart-1-");
    let v2 = harness::random_token("restart-2-");
    h.set_secret("restart_file", v1.as_bytes());
    let agent = h.start_agent();
    let agent_pid = agent.0.id();
    let socket = h.state_dir().join("dso.sock");

    // One container dockerd brings back after its restart, one it leaves stopped.
    let kept = harness::ContainerGuard::new(h, "dso-load-restart-always");
    let left = harness::ContainerGuard::new(h, "dso-load-restart-no");
    for (g, policy) in [(&kept, "always"), (&left, "no")] {
        let out = h.docker(&[
            "run",
            "-d",
            "--name",
            &g.name,
            "--restart",
            policy,
            "--runtime",
            "dso",
            "--network",
            "none",
            "-e",
            "F=dsofile://restart_file",
            IMAGE,
            "sh",
            "-c",
            "while :; do sleep 1; done",
        ]);
        assert!(out.status.success(), "{}", harness::stderr(&out));
        assert_eq!(
            cat(h, &g.name, "/run/secrets/restart_file").as_deref(),
            Some(v1.as_str())
        );
    }
    let kept_id = harness::container_id(h, &kept.name).unwrap();
    let left_id = harness::container_id(h, &left.name).unwrap();
    let listed = |answer: &serde_json::Value| -> Vec<String> {
        answer["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect()
    };
    let before = listed(&control(&socket, &serde_json::json!({"op": "status"})));
    assert!(
        before.contains(&kept_id) && before.contains(&left_id),
        "{before:?}"
    );

    let t0 = Instant::now();
    h.restart_dockerd();
    eprintln!("dockerd restarted in {:?}", t0.elapsed());

    // The agent lived through it and still answers.
    assert!(
        std::path::Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the agent died with dockerd"
    );
    assert_eq!(
        control(&socket, &serde_json::json!({"op": "ping"}))["ok"],
        true
    );
    // dockerd restarted the `always` container: dso-runc injected its secret again.
    wait_for(
        "the restart-always container back with its secret",
        Duration::from_secs(60),
        || cat(h, &kept.name, "/run/secrets/restart_file").as_deref() == Some(v1.as_str()),
    );
    // The agent tracks the new instance and drops the stopped one.
    wait_for(
        "the agent's registry after the restart",
        Duration::from_secs(10),
        || {
            let now = listed(&control(&socket, &serde_json::json!({"op": "status"})));
            now.contains(&kept_id) && !now.contains(&left_id)
        },
    );
    // And rotation reaches the restarted container within its 1 s interval (+ slack).
    h.set_secret("restart_file", v2.as_bytes());
    wait_for(
        "rotation after the dockerd restart",
        Duration::from_secs(5),
        || cat(h, &kept.name, "/run/secrets/restart_file").as_deref() == Some(v2.as_str()),
    );
    let audit = std::fs::read_to_string(h.audit_path()).unwrap();
    assert!(!audit.contains("\"rotation_failed\""), "{audit}");
    drop((kept, left));
    drop(agent);
}
