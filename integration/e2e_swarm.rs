//! Docker Swarm end to end: two private dockerds, each in its own network namespace (joined by a
//! veth pair with TEST-NET-1 addresses), each running dso as its `default-runtime` (written by
//! `dso install --default`) with its own dso.yaml, local store, state dir and a different value
//! for the same secret. Node 1 runs `docker swarm init`, node 2 joins as a worker. Services can
//! not choose a runtime, so every task container goes through dso-runc on the node it lands on,
//! and gets that node's secret, granted by the swarm service (`docker: { swarm_service }`) or by
//! the task name (`docker: { name: "<service>.*" }`).
//!
//! Nothing here touches the system's Docker or the host's network: the namespaces, the veth pair,
//! the dockerds, their containerds and their files are removed when the test ends, passes or not.

use dso_testkit::harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use harness::{
    IMAGE, TMP_PARENT, TMP_PREFIX, clean_stale_dirs, docker_command, dockerd_major_version,
    dso_exe, dso_runc_exe, import_image_into, log_tail, path_str, pid_alive, random_token,
    release_dir, require_root, require_tool, run_with_deadline, search_path, spawn_dockerd_in,
    terminate_child, wait_until_answering,
};

/// Network namespaces and veths are named `dsosw-<pid>-…` / `dsosw<pid>…` so that a later run can
/// remove those of a test process that was killed before its cleanup ran.
const NETNS_PREFIX: &str = "dsosw-";
/// How long a service may take to reach the expected state (task scheduling, a node marked
/// down after the 1 s dispatcher heartbeat, swarm's 5 s restart delay).
const SETTLE: Duration = Duration::from_secs(90);

/// One node: a dockerd in its own network namespace, with its own files under `dir`.
struct Node {
    index: usize,
    dir: PathBuf,
    netns: String,
    addr: &'static str,
    dockerd: Option<Child>,
    /// This node's value of `db_password`.
    value: String,
}

impl Node {
    fn docker(&self, args: &[&str]) -> Output {
        docker_command(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "node {}: docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndockerd log:\n{}",
            self.index,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_tail(&self.dir.join("dockerd.log"), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dso(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = Command::new(dso_exe())
            .arg("--config")
            .arg(self.dir.join("dso.yaml"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", dso_exe()));
        let mut pipe = child.stdin.take().expect("stdin is piped");
        if let Some(input) = stdin {
            pipe.write_all(input).expect("writing dso's stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("waiting for dso")
    }

    fn dso_ok(&self, args: &[&str], stdin: Option<&[u8]>) {
        let out = self.dso(args, stdin);
        assert!(
            out.status.success(),
            "node {}: dso {args:?} failed ({}): {}",
            self.index,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Ids of this node's containers (running or not) that are tasks of `service`.
    fn task_containers(&self, service: &str) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        self.docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// The logs (stdout and stderr) of this node's tasks of `service`.
    fn task_logs(&self, service: &str) -> Vec<(String, String)> {
        self.task_containers(service)
            .into_iter()
            .map(|id| {
                let out = self.docker(&["logs", &id]);
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                (id, text)
            })
            .collect()
    }

    fn audit_events(&self, event: &str) -> Vec<serde_json::Value> {
        fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// dso's state record for container `id` on this node, if any.
    fn state_record(&self, id: &str) -> Option<serde_json::Value> {
        let text = fs::read(self.path("state").join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// The two nodes, their namespaces and temp dir; everything is stopped and removed on drop.
struct Swarm {
    dir: PathBuf,
    nodes: Vec<Node>,
    netns: Vec<String>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let keep = std::env::var_os("DSO_E2E_KEEP").is_some();
        for node in &mut self.nodes {
            let Some(mut dockerd) = node.dockerd.take() else {
                continue;
            };
            if matches!(dockerd.try_wait(), Ok(None)) {
                // Leaving the swarm first makes the shutdown quick and stops the tasks.
                let _ = run_with_deadline(
                    docker_command(&node.dir).args(["swarm", "leave", "--force"]),
                    Duration::from_secs(20),
                );
                if let Some(ps) = run_with_deadline(
                    docker_command(&node.dir).args(["ps", "-aq"]),
                    Duration::from_secs(20),
                ) {
                    let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
                        .split_whitespace()
                        .map(String::from)
                        .collect();
                    if !ids.is_empty() {
                        let _ = run_with_deadline(
                            docker_command(&node.dir).args(["rm", "-f"]).args(&ids),
                            Duration::from_secs(30),
                        );
                    }
                }
            }
            terminate_child(&mut dockerd, Duration::from_secs(30));
        }
        // Containerds, shims and containers left over; then every mount under the dir.
        release_dir(&self.dir);
        for ns in &self.netns {
            delete_netns(ns);
        }
        if keep {
            eprintln!(
                "dso e2e swarm: DSO_E2E_KEEP is set; leaving {}",
                self.dir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("dso e2e swarm: cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .env("PATH", search_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Deleting the namespace also removes the veth end inside it (once no process is left in it).
fn delete_netns(name: &str) {
    if Path::new("/run/netns").join(name).exists()
        && let Err(e) = ip(&["netns", "delete", name])
    {
        eprintln!("dso e2e swarm: {e}");
    }
}

/// Removes the namespaces of test processes that are gone.
fn clean_stale_netns() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !pid_alive(owner) {
            eprintln!(
                "dso e2e swarm: removing network namespace {name} left by dead process {owner}"
            );
            delete_netns(&name);
        }
    }
}

fn node_yaml(node: &Node) -> String {
    let q =
        |name: &str| serde_json::Value::String(path_str(&node.path(name)).to_string()).to_string();
    format!(
        "providers:\n  local: {{ type: local, path: {}, key_file: {} }}\n\
         secrets:\n  db_password:\n    allow:\n\
         \x20     - docker: {{ swarm_service: web }}\n\
         \x20     - docker: {{ swarm_service: mover }}\n\
         \x20     - docker: {{ name: \"shop_api.*\" }}\n\
         policy: {{ default: deny }}\n\
         audit: {{ path: {} }}\n\
         runtime: {{ state_dir: {} }}\n",
        q("store.vault"),
        q("master.key"),
        q("audit.log"),
        q("state"),
    )
}

/// Sets up node `index` (1 or 2): daemon.json through `dso install --default`, store, dso.yaml,
/// secret, dockerd in the namespace, the busybox image.
fn start_node(swarm: &mut Swarm, index: usize, addr: &'static str) {
    let dir = swarm.dir.join(format!("n{index}"));
    fs::create_dir_all(&dir).expect("creating the node dir");
    let node = Node {
        index,
        dir,
        netns: swarm.netns[index - 1].clone(),
        addr,
        dockerd: None,
        value: random_token(&format!("node{index}-")),
    };
    let mut daemon_json = serde_json::json!({ "shutdown-timeout": 2 });
    if dockerd_major_version().is_some_and(|v| v <= 20) {
        // As in the harness: Docker 20.10 would otherwise create /etc/docker/key.json.
        daemon_json["deprecated-key-path"] = path_str(&node.path("key.json")).into();
    }
    fs::write(node.path("daemon.json"), daemon_json.to_string()).expect("writing daemon.json");
    // What an operator runs on every node: dso becomes dockerd's default runtime.
    node.dso_ok(
        &[
            "install",
            "--default",
            "--no-reload",
            "--daemon-json",
            path_str(&node.path("daemon.json")),
            "--runtime-path",
            dso_runc_exe(),
        ],
        None,
    );
    let installed: serde_json::Value =
        serde_json::from_slice(&fs::read(node.path("daemon.json")).expect("reading daemon.json"))
            .expect("daemon.json is JSON");
    assert_eq!(installed["default-runtime"], "dso", "{installed}");
    node.dso_ok(
        &[
            "init",
            "--store",
            path_str(&node.path("store.vault")),
            "--key-file",
            path_str(&node.path("master.key")),
        ],
        None,
    );
    fs::write(node.path("dso.yaml"), node_yaml(&node)).expect("writing dso.yaml");
    node.dso_ok(
        &["secret", "set", "db_password"],
        Some(node.value.as_bytes()),
    );

    let ns_path = Path::new("/run/netns").join(&node.netns);
    let child =
        spawn_dockerd_in(&node.dir, Some(&ns_path)).unwrap_or_else(|e| panic!("node {index}: {e}"));
    eprintln!(
        "dso e2e swarm: node {index} dockerd (pid {}) in netns {} at {addr}; log: {}",
        child.id(),
        node.netns,
        node.path("dockerd.log").display()
    );
    swarm.nodes.push(node);
    let node = swarm.nodes.last_mut().expect("just pushed");
    node.dockerd = Some(child);
    let dockerd = node.dockerd.as_mut().expect("just set");
    wait_until_answering(&node.dir, || dockerd.try_wait().ok().flatten())
        .unwrap_or_else(|e| panic!("node {index}: {e}"));
    import_image_into(&node.dir, IMAGE, None).unwrap_or_else(|e| panic!("node {index}: {e}"));
}

/// Two namespaces joined by a veth pair, a dockerd in each, a swarm of the two.
fn start_swarm() -> Option<Swarm> {
    if !require_root() || !require_tool("nsenter") || !require_tool("ip") {
        return None;
    }
    clean_stale_dirs();
    clean_stale_netns();
    let dir = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir_in(TMP_PARENT)
        .expect("creating the temp dir")
        .keep();
    // Lets the harness's stale-dir cleanup remove this dir if this process is killed.
    fs::write(dir.join("owner.pid"), std::process::id().to_string()).expect("writing owner.pid");
    let pid = std::process::id();
    let mut swarm = Swarm {
        dir,
        nodes: Vec::new(),
        netns: Vec::new(),
    };
    for n in 1..=2 {
        let name = format!("{NETNS_PREFIX}{pid}-{n}");
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        swarm.netns.push(name);
    }
    let (ns1, ns2) = (swarm.netns[0].clone(), swarm.netns[1].clone());
    let (veth1, veth2) = (format!("dsosw{pid}a"), format!("dsosw{pid}b"));
    // Both ends are created inside the namespaces: nothing is added to the host's network.
    ip(&[
        "-n", &ns1, "link", "add", &veth1, "type", "veth", "peer", "name", &veth2, "netns", &ns2,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    for (ns, dev, addr) in [
        (&ns1, &veth1, "192.0.2.1/24"),
        (&ns2, &veth2, "192.0.2.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]).unwrap_or_else(|e| panic!("{e}"));
        ip(&["-n", ns, "link", "set", dev, "up"]).unwrap_or_else(|e| panic!("{e}"));
        ip(&["-n", ns, "link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("{e}"));
    }

    start_node(&mut swarm, 1, "192.0.2.1");
    start_node(&mut swarm, 2, "192.0.2.2");
    let (n1, n2) = (&swarm.nodes[0], &swarm.nodes[1]);
    // A 1 s heartbeat: a stopped node is marked down after a few seconds, not 15.
    n1.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        n1.addr,
        "--dispatcher-heartbeat",
        "1s",
    ]);
    let token = n1.docker_ok(&["swarm", "join-token", "-q", "worker"]);
    let manager = format!("{}:2377", n1.addr);
    n2.docker_ok(&["swarm", "join", "--token", token.trim(), &manager]);
    wait_for("both nodes Ready in `docker node ls`", &swarm, || {
        let ls = n1.docker_ok(&["node", "ls", "--format", "{{.Status}}"]);
        (ls.lines().filter(|l| l.trim() == "Ready").count() == 2).then_some(())
    });
    Some(swarm)
}

/// Polls `check` until it returns Some, for up to [`SETTLE`]; then fails with the swarm's view.
fn wait_for<T>(what: &str, swarm: &Swarm, mut check: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if t0.elapsed() > SETTLE {
            let n1 = &swarm.nodes[0];
            let services = n1.docker(&["service", "ls", "-q"]);
            let mut ps = String::new();
            for id in String::from_utf8_lossy(&services.stdout).split_whitespace() {
                ps.push_str(&String::from_utf8_lossy(
                    &n1.docker(&["service", "ps", "--no-trunc", id]).stdout,
                ));
            }
            panic!(
                "waited {}s for {what}\nservice ps:\n{ps}\nnode 1 dockerd:\n{}\nnode 2 dockerd:\n{}",
                SETTLE.as_secs(),
                log_tail(&swarm.nodes[0].path("dockerd.log"), 20),
                log_tail(&swarm.nodes[1].path("dockerd.log"), 20),
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The value a task printed as `<tag>=<value>` in its logs on `node`, with the container id.
fn printed(node: &Node, service: &str, tag: &str) -> Option<(String, String)> {
    let prefix = format!("{tag}=");
    node.task_logs(service).into_iter().find_map(|(id, logs)| {
        logs.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| (id.clone(), v.trim().to_string()))
    })
}

/// `docker service create -d --no-resolve-image` on the manager, returns nothing.
fn create_service(swarm: &Swarm, args: &[&str], script: &str) {
    let mut all = vec!["service", "create", "-d", "--no-resolve-image"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMAGE, "sh", "-c", script]);
    swarm.nodes[0].docker_ok(&all);
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn swarm_tasks_get_their_nodes_secrets() {
    let Some(mut swarm) = start_swarm() else {
        return;
    };
    global_service_reads_each_nodes_value(&swarm);
    stack_deploy_gets_its_secret(&swarm);
    ungranted_service_never_runs(&swarm);
    passthrough_service_unaffected(&swarm);
    rescheduled_task_gets_the_other_nodes_value(&mut swarm);
}

/// (a) A global service granted by `swarm_service`: one task per node, each reading that node's
/// own value, each recorded by that node's dso with the swarm service as its identity.
fn global_service_reads_each_nodes_value(swarm: &Swarm) {
    create_service(
        swarm,
        &[
            "--name",
            "web",
            "--mode",
            "global",
            "-e",
            "DB_PASSWORD_FILE=dsofile://db_password",
        ],
        "echo \"secret=$(cat \"$DB_PASSWORD_FILE\")\"; echo \"path=$DB_PASSWORD_FILE\"; sleep 600",
    );
    for node in &swarm.nodes {
        let (id, value) = wait_for(&format!("web's task on node {}", node.index), swarm, || {
            printed(node, "web", "secret").filter(|(_, v)| !v.is_empty())
        });
        assert_eq!(
            value, node.value,
            "(a) web's task on node {} read another value than its node's",
            node.index
        );
        let (_, path) = printed(node, "web", "path").expect("the task printed its path");
        assert_eq!(
            path, "/run/secrets/db_password",
            "(a) the reference was rewritten"
        );
        let record = node
            .state_record(&id)
            .unwrap_or_else(|| panic!("(a) node {} has no dso state record for {id}", node.index));
        let workload = &record["workload"];
        assert_eq!(workload["engine"], "docker", "{record}");
        assert_eq!(workload["swarm_service"], "web", "{record}");
        assert!(
            workload["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("web.")),
            "{record}"
        );
    }
    // The swarm carries only the reference: neither node's raft store, task records or
    // container records hold either value. The task's own log does (it printed its value),
    // which also shows that the scan reads dockerd's files.
    for node in &swarm.nodes {
        for other in &swarm.nodes {
            let (logs, rest): (Vec<String>, Vec<String>) =
                harness::files_containing(&[&node.path("data")], &other.value)
                    .into_iter()
                    .partition(|f| f.ends_with("-json.log"));
            assert!(
                rest.is_empty(),
                "(a) node {}'s value is in node {}'s dockerd files: {rest:?}",
                other.index,
                node.index
            );
            assert_eq!(
                logs.is_empty(),
                other.index != node.index,
                "(a) node {}'s value in node {}'s task logs: {logs:?}",
                other.index,
                node.index
            );
        }
    }
    swarm.nodes[0].docker_ok(&["service", "rm", "web"]);
}

/// (b) `docker stack deploy` of a compose v3 file whose service asks for the secret in its
/// `environment:`; granted by the task name `shop_api.*`.
fn stack_deploy_gets_its_secret(swarm: &Swarm) {
    let compose = swarm.dir.join("stack.yml");
    fs::write(
        &compose,
        format!(
            "version: \"3.8\"\n\
             services:\n\
             \x20 api:\n\
             \x20   image: {IMAGE}\n\
             \x20   command: [\"sh\", \"-c\", \"echo \\\"secret=$$(cat $$DB_PASSWORD_FILE)\\\"; sleep 600\"]\n\
             \x20   environment:\n\
             \x20     DB_PASSWORD_FILE: dsofile://db_password\n\
             \x20   deploy:\n\
             \x20     replicas: 1\n"
        ),
    )
    .expect("writing stack.yml");
    swarm.nodes[0].docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        path_str(&compose),
        "shop",
    ]);
    let (node, value) = wait_for("shop_api's task", swarm, || {
        swarm.nodes.iter().find_map(|n| {
            printed(n, "shop_api", "secret")
                .filter(|(_, v)| !v.is_empty())
                .map(|(_, v)| (n, v))
        })
    });
    assert_eq!(
        value, node.value,
        "(b) the stack's task on node {} read another value",
        node.index
    );
    swarm.nodes[0].docker_ok(&["stack", "rm", "shop"]);
}

/// (c) A service no rule grants: its tasks fail at create, the refusal is in
/// `docker service ps --no-trunc`'s error column, nothing of it ever runs, the refusal is audited.
fn ungranted_service_never_runs(swarm: &Swarm) {
    let n1 = &swarm.nodes[0];
    create_service(
        swarm,
        &[
            "--name",
            "evil",
            "--replicas",
            "1",
            "-e",
            "DB_PASSWORD_FILE=dsofile://db_password",
        ],
        "echo must not run; cat \"$DB_PASSWORD_FILE\"; sleep 600",
    );
    let error = wait_for("evil's task to fail", swarm, || {
        let out = n1.docker_ok(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Error}}",
            "evil",
        ]);
        out.lines()
            .find(|l| l.contains("is not allowed for docker container"))
            .map(str::to_string)
    });
    eprintln!("(c) evil's task error: {error}");
    assert!(
        error.contains("secret \"db_password\" is not allowed for docker container \"evil.1."),
        "(c) the error column does not name the secret and the task: {error}"
    );
    // Stop the restarts before looking at what exists.
    n1.docker_ok(&["service", "scale", "-d", "evil=0"]);
    let states = n1.docker_ok(&["service", "ps", "--format", "{{.CurrentState}}", "evil"]);
    assert!(
        !states.lines().any(|s| s.starts_with("Running")),
        "(c) a task of evil ran: {states}"
    );
    let mut denied = 0;
    for node in &swarm.nodes {
        for (id, logs) in node.task_logs("evil") {
            assert!(!logs.contains("must not run"), "(c) {id} ran: {logs}");
            let started = node.docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &id]);
            assert!(
                started.starts_with("0001-01-01"),
                "(c) {id} on node {} was started at {started}",
                node.index
            );
            assert!(!logs.contains(&node.value), "(c) {id} printed the value");
            assert!(
                node.state_record(&id).is_none(),
                "(c) {id} has a state record"
            );
        }
        denied += node
            .audit_events("access_denied")
            .iter()
            .filter(|e| e.to_string().contains("evil.1."))
            .count();
    }
    assert!(
        denied > 0,
        "(c) no access_denied audit event for evil's tasks"
    );
    n1.docker_ok(&["service", "rm", "evil"]);
}

/// (d) A service without references runs as usual on both nodes: no secrets tmpfs, no state.
fn passthrough_service_unaffected(swarm: &Swarm) {
    create_service(
        swarm,
        &["--name", "plain", "--mode", "global"],
        "echo \"plain=ok mounts=$(grep -c ' /run/secrets ' /proc/mounts)\"; sleep 600",
    );
    for node in &swarm.nodes {
        let (id, line) = wait_for(
            &format!("plain's task on node {}", node.index),
            swarm,
            || printed(node, "plain", "plain"),
        );
        assert_eq!(
            line, "ok mounts=0",
            "(d) plain's task on node {}",
            node.index
        );
        assert!(
            node.state_record(&id).is_none(),
            "(d) dso kept state for a passthrough task on node {}",
            node.index
        );
    }
    swarm.nodes[0].docker_ok(&["service", "rm", "plain"]);
}

/// (e) A replicated task placed on node 2 (node 1 drained); node 1 made active again and node 2's
/// dockerd stopped: the swarm marks node 2 down and reschedules the task on node 1, where it
/// reads node 1's value.
fn rescheduled_task_gets_the_other_nodes_value(swarm: &mut Swarm) {
    let n1 = &swarm.nodes[0];
    let self_id = n1.docker_ok(&["node", "inspect", "self", "--format", "{{.ID}}"]);
    let self_id = self_id.trim().to_string();
    n1.docker_ok(&["node", "update", "--availability", "drain", &self_id]);
    create_service(
        swarm,
        &[
            "--name",
            "mover",
            "--replicas",
            "1",
            "-e",
            "DB_PASSWORD_FILE=dsofile://db_password",
        ],
        "echo \"secret=$(cat \"$DB_PASSWORD_FILE\")\"; sleep 600",
    );
    let n2 = &swarm.nodes[1];
    let (_, on_2) = wait_for("mover's task on node 2", swarm, || {
        printed(n2, "mover", "secret").filter(|(_, v)| !v.is_empty())
    });
    assert_eq!(on_2, n2.value, "(e) mover on node 2 read another value");
    assert!(
        swarm.nodes[0].task_containers("mover").is_empty(),
        "(e) drained node 1 got a mover task"
    );
    swarm.nodes[0].docker_ok(&["node", "update", "--availability", "active", &self_id]);

    // Node 2 stops: its dockerd is terminated (it stops its containers on the way out).
    let mut dockerd = swarm.nodes[1]
        .dockerd
        .take()
        .expect("node 2's dockerd runs");
    terminate_child(&mut dockerd, Duration::from_secs(30));
    let (swarm_ref, n1) = (&*swarm, &swarm.nodes[0]);
    wait_for("node 2 Down in `docker node ls`", swarm_ref, || {
        let ls = n1.docker_ok(&["node", "ls", "--format", "{{.Self}} {{.Status}}"]);
        ls.lines().any(|l| l.trim() == "false Down").then_some(())
    });
    let (_, on_1) = wait_for("mover rescheduled on node 1", swarm_ref, || {
        printed(n1, "mover", "secret").filter(|(_, v)| !v.is_empty())
    });
    assert_eq!(
        on_1, n1.value,
        "(e) the rescheduled task on node 1 did not read node 1's value"
    );
    n1.docker_ok(&["service", "rm", "mover"]);
}
