//! Kubernetes' path, for real: a private containerd (Debian's, CRI plugin on, runtimes `runc`
//! and `dso`) driven over the CRI the way kubelet drives it (RunPodSandbox with
//! `runtime_handler: dso`, CreateContainer, StartContainer, ExecSync), through the published
//! `k8s-cri` client. Kubelet's settings: host network, a pid namespace per container. The pod's
//! annotations reach its pause container too: that one must pass through untouched. Grants by
//! namespace/pod/container come from the CRI's own annotations (docs/kubernetes.md).
//! Needs root, containerd, ctr and busybox-static (a failure under `CI=true`, skipped elsewhere).

use dso_testkit::harness;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::{ContainerdGuard, build_busybox_rootfs, dso_exe, dso_runc_exe, random_token};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use sha2::Digest;
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "docker.io/dso-test/cri-busybox:latest";

fn path_env() -> String {
    let base = std::env::var("PATH").unwrap_or_default();
    format!("{base}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

fn ready() -> bool {
    if !harness::require_root() {
        return false;
    }
    ["containerd", "ctr"]
        .iter()
        .all(|t| harness::require_tool(t))
}

/// A private containerd with the CRI plugin, a local store and a dso.yaml.
struct Cri {
    dir: tempfile::TempDir,
    _containerd: ContainerdGuard,
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
}

impl Cri {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(secrets: &str) -> Cri {
        Cri::start_with(secrets, dso_runc_exe())
    }

    /// With another dso-runc (the benchmark's release build).
    fn start_with(secrets: &str, dso_runc: &str) -> Cri {
        let dir = tempfile::Builder::new()
            .prefix("dsocri-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        // The local store and dso.yaml.
        let out = Command::new(dso_exe())
            .arg("--config")
            .arg(d.join("dso.yaml"))
            .arg("init")
            .arg("--store")
            .arg(d.join("store"))
            .arg("--key-file")
            .arg(d.join("key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dso init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let q = |p: &str| serde_json::Value::String(d.join(p).display().to_string()).to_string();
        fs::write(
            d.join("dso.yaml"),
            format!(
                "providers:\n  local: {{ type: local, path: {}, key_file: {} }}\n\
                 secrets:\n{secrets}\
                 policy: {{ default: deny }}\n\
                 audit: {{ path: {} }}\n\
                 runtime: {{ state_dir: {} }}\n",
                q("store"),
                q("key"),
                q("audit.log"),
                q("dso-state"),
            ),
        )
        .unwrap();
        // containerd with the CRI plugin: the config the docs ship, with this test's paths.
        let template = include_str!("../runtime-config/containerd/cri-config.toml");
        let config = template
            .replace("/var/lib/containerd", &d.join("root").display().to_string())
            .replace(
                "/run/containerd/containerd.sock",
                &d.join("c.sock").display().to_string(),
            )
            .replace(
                "/run/containerd/ttrpc.sock",
                &d.join("t.sock").display().to_string(),
            )
            .replace("/run/containerd", &d.join("state").display().to_string())
            .replace("/usr/bin/dso-runc", dso_runc)
            .replace("/etc/cni/net.d", &d.join("cni-conf").display().to_string())
            .replace("/opt/cni/bin", &d.join("cni-bin").display().to_string())
            .replace("registry.k8s.io/pause:3.6", IMAGE);
        assert!(
            config.contains(dso_runc) && config.contains(IMAGE),
            "{config}"
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .env("PATH", path_env())
            // containerd's runc shim passes no runtime arguments: dso-runc reads DSO_CONFIG,
            // which the shim inherits from containerd (docs/kubernetes.md).
            .env("DSO_CONFIG", d.join("dso.yaml"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let guard = ContainerdGuard {
            child,
            dir: d.to_path_buf(),
        };
        let socket = d.join("c.sock");
        let t0 = Instant::now();
        while !ctr(&socket, &["version"]).status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "private containerd did not answer; log:\n{}",
                fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The image (also the sandbox image), built here from busybox-static.
        let tar = oci_image(d, IMAGE);
        let out = ctr(
            &socket,
            &["-n", "k8s.io", "images", "import", path_str(&tar)],
        );
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt.block_on(async {
            let socket = socket.clone();
            Endpoint::try_from("http://[::]")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await
                .expect("connecting to the CRI")
        });
        Cri {
            dir,
            _containerd: guard,
            rt,
            runtime: RuntimeServiceClient::new(channel),
        }
    }

    fn dso(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(dso_exe())
            .arg("--config")
            .arg(self.path("dso.yaml"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or_default()).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    fn set_secret(&self, name: &str, value: &str) {
        let out = self.dso(&["secret", "set", name], Some(value.as_bytes()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kubelet's pod: host network, a pid namespace per container.
    fn pod_config(&self, ns: &str, name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{ns}-{name}"),
                namespace: ns.into(),
                attempt: 0,
            }),
            // Host network: the node's hostname (kubelet leaves it empty).
            hostname: String::new(),
            log_directory: self
                .path(&format!("logs/{ns}_{name}"))
                .display()
                .to_string(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run_pod(&mut self, cfg: &PodSandboxConfig) -> String {
        self.run_pod_with(cfg, "dso")
    }

    fn run_pod_with(&mut self, cfg: &PodSandboxConfig, handler: &str) -> String {
        let req = RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        };
        let res = self.rt.block_on(self.runtime.run_pod_sandbox(req));
        res.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()))
            .into_inner()
            .pod_sandbox_id
    }

    /// CreateContainer then StartContainer (where containerd runs `runc create`).
    fn start_container(
        &mut self,
        pod: &str,
        pod_cfg: &PodSandboxConfig,
        name: &str,
        env: &[(&str, &str)],
        script: &str,
    ) -> Result<String, tonic::Status> {
        let cfg = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            envs: env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .rt
            .block_on(self.runtime.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            }))?;
        let id = created.into_inner().container_id;
        self.rt
            .block_on(self.runtime.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))?;
        Ok(id)
    }

    fn exec(&mut self, id: &str, cmd: &[&str]) -> String {
        let res = self
            .rt
            .block_on(self.runtime.exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner();
        String::from_utf8_lossy(&res.stdout).into_owned()
    }

    /// The pid of a container's init, from the CRI's verbose status.
    fn container_pid(&mut self, id: &str) -> i32 {
        let info = self
            .rt
            .block_on(self.runtime.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            }))
            .unwrap()
            .into_inner()
            .info;
        pid_of(&info)
    }

    fn sandbox_pid(&mut self, pod: &str) -> i32 {
        let info = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: true,
            }))
            .unwrap()
            .into_inner()
            .info;
        pid_of(&info)
    }

    fn remove_pod(&mut self, pod: &str) {
        let _ = self
            .rt
            .block_on(self.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            }));
        let _ = self
            .rt
            .block_on(self.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            }));
    }

    fn state_records(&self) -> Vec<String> {
        fs::read_dir(self.path("dso-state"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn audit(&self) -> String {
        fs::read_to_string(self.path("audit.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pid_of(info: &HashMap<String, String>) -> i32 {
    let v: serde_json::Value =
        serde_json::from_str(info.get("info").expect("verbose info")).expect("info is JSON");
    v["pid"].as_i64().expect("pid in the verbose info") as i32
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn ctr(socket: &Path, args: &[&str]) -> Output {
    Command::new("ctr")
        .env("PATH", path_env())
        .args(["--address", path_str(socket)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ctr")
}

/// An OCI image layout (one uncompressed layer: a busybox root; entrypoint a long sleep, which
/// also serves as the pause container), as a tar that `ctr images import` takes.
fn oci_image(dir: &Path, name: &str) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    build_busybox_rootfs(&rootfs);
    for applet in ["sleep", "env", "grep", "tr"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layout = dir.join("image-layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| -> (String, usize) {
        let hex: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer = Command::new("tar")
        .args(["--numeric-owner", "-C", path_str(&rootfs), "-c", "."])
        .output()
        .unwrap();
    assert!(layer.status.success());
    let (layer_digest, layer_size) = blob(&layer.stdout);
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "1000000"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let tar = dir.join("image.tar");
    let out = Command::new("tar")
        .args(["-C", path_str(&layout), "-cf", path_str(&tar), "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    tar
}

const SECRETS: &str = "  billing_db:
    provider: local
    allow: [ { kubernetes: { namespace: billing } } ]
  api_key:
    provider: local
    allow: [ { kubernetes: { namespace: billing, container: app } } ]
  sidecar_token:
    provider: local
    allow: [ { kubernetes: { namespace: billing, container: sidecar } } ]
";

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_pod_gets_its_secrets_and_its_pause_container_none() {
    if !ready() {
        return;
    }
    let mut cri = Cri::start(SECRETS);
    let db = random_token("cri-db-");
    let api = random_token("cri-api-");
    let side = random_token("cri-side-");
    cri.set_secret("billing_db", &db);
    cri.set_secret("api_key", &api);
    cri.set_secret("sidecar_token", &side);

    // Pod-wide and per-container references, as pod annotations (what a pod author writes).
    let pod_cfg = cri.pod_config(
        "billing",
        "api-7d9",
        &[
            ("dso.secrets/DB_PASSWORD_FILE", "dsofile://billing_db"),
            ("dso.secrets.sidecar/TOKEN_FILE", "dsofile://sidecar_token"),
        ],
    );
    let pod = cri.run_pod(&pod_cfg);
    let app = cri
        .start_container(
            &pod,
            &pod_cfg,
            "app",
            &[("API_KEY", "dso://api_key")],
            "sleep 1000000",
        )
        .unwrap_or_else(|e| panic!("app: {e}\n{}", cri.log()));
    let sidecar = cri
        .start_container(&pod, &pod_cfg, "sidecar", &[], "sleep 1000000")
        .unwrap_or_else(|e| panic!("sidecar: {e}\n{}", cri.log()));

    // The app: the pod-wide file, its env secret (read from the process itself: an exec sees the
    // spec's references), and not the sidecar's file.
    assert_eq!(cri.exec(&app, &["cat", "/run/secrets/billing_db"]), db);
    let pid = cri.container_pid(&app);
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|e| e == format!("API_KEY={api}")),
        "app env: {environ:?}"
    );
    assert!(
        environ
            .split('\0')
            .any(|e| e == "DB_PASSWORD_FILE=/run/secrets/billing_db")
    );
    assert_eq!(
        cri.exec(&app, &["ls", "/run/secrets"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["billing_db"]
    );
    // The sidecar: the pod-wide file and its own, nothing of the app's.
    let listed = cri.exec(&sidecar, &["ls", "/run/secrets"]);
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["billing_db", "sidecar_token"]
    );
    assert_eq!(
        cri.exec(&sidecar, &["cat", "/run/secrets/sidecar_token"]),
        side
    );

    // The pause container: no secrets tmpfs, no state record, no fetch.
    let pause = cri.sandbox_pid(&pod);
    let mounts = fs::read_to_string(format!("/proc/{pause}/mounts")).unwrap();
    assert!(
        !mounts.contains("/run/secrets"),
        "pause has a secrets mount:\n{mounts}"
    );
    let records = cri.state_records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(!records.iter().any(|r| r.starts_with(&pod)), "{records:?}");
    // Status and audit name the pod, not only the id.
    let audit = cri.audit();
    assert!(
        audit.contains(r#""namespace":"billing","pod":"api-7d9","container":"app""#),
        "{audit}"
    );
    let status = cri.dso(&["status", "--json"], None);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("api-7d9"), "dso status: {status}");

    // Rotation by the agent reaches the pod's container.
    let mut agent = Command::new(dso_exe())
        .arg("--config")
        .arg(cri.path("dso.yaml"))
        .arg("agent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(cri.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !fs::read_to_string(cri.path("agent.log"))
        .unwrap_or_default()
        .contains("watching")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated = random_token("cri-db-rotated-");
    cri.set_secret("billing_db", &rotated);
    let out = cri.dso(&["rotate", "billing_db"], None);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cri.exec(&app, &["cat", "/run/secrets/billing_db"]), rotated);
    assert_eq!(
        cri.exec(&sidecar, &["cat", "/run/secrets/billing_db"]),
        rotated
    );
    let _ = agent.kill();
    let _ = agent.wait();

    // No value in containerd's root, state or log (or anywhere under the test's dir).
    for value in [&db, &api, &side, &rotated] {
        let grep = Command::new("grep")
            .args(["-rlF", "--devices=skip", "-s", "--", value])
            .arg(cri.dir.path())
            .output()
            .unwrap();
        assert!(
            grep.stdout.is_empty(),
            "value found in {}",
            String::from_utf8_lossy(&grep.stdout)
        );
    }

    // The pod deleted: its records are dropped.
    cri.remove_pod(&pod);
    let _ = cri.dso(&["status", "--json"], None);
    assert!(cri.state_records().is_empty(), "{:?}", cri.state_records());
}

#[test]
#[ignore = "root: private dockerd/containerd; scripts/test.sh runs it (--include-ignored)"]
fn a_pod_in_another_namespace_is_refused_at_start_container() {
    if !ready() {
        return;
    }
    let mut cri = Cri::start(SECRETS);
    let db = random_token("cri-db-");
    cri.set_secret("billing_db", &db);
    let pod_cfg = cri.pod_config(
        "default",
        "intruder",
        &[("dso.secrets/DB_PASSWORD_FILE", "dsofile://billing_db")],
    );
    let pod = cri.run_pod(&pod_cfg);
    let err = cri
        .start_container(
            &pod,
            &pod_cfg,
            "app",
            &[],
            "cat $DB_PASSWORD_FILE; sleep 1000",
        )
        .expect_err("a pod in default got billing_db");
    let msg = err.message().to_string();
    assert!(
        msg.contains(r#"secret "billing_db" is not allowed for kubernetes container "app" of pod "default/intruder" (no allow rule matches; see dso policy explain)"#),
        "CRI error: {msg}"
    );
    assert!(!msg.contains(&db));
    assert!(cri.state_records().is_empty(), "{:?}", cri.state_records());
    assert!(cri.audit().contains(r#""event":"access_denied""#));

    // A malformed reference in a pod annotation: a clear error, nothing half-made.
    let bad_cfg = cri.pod_config(
        "billing",
        "typo",
        &[("dso.secrets/DB_PASSWORD_FILE", "dsofile://../etc/shadow")],
    );
    let bad = cri.run_pod(&bad_cfg);
    let err = cri
        .start_container(&bad, &bad_cfg, "app", &[], "sleep 1000")
        .expect_err("a malformed reference was accepted");
    assert!(
        err.message().contains("secret reference"),
        "CRI error: {}",
        err.message()
    );
    assert!(cri.state_records().is_empty(), "{:?}", cri.state_records());
    cri.remove_pod(&pod);
    cri.remove_pod(&bad);
}

/// Issue 18's Kubernetes-shaped benchmark row, run by `bench/bench.py` (not a test: it asserts
/// nothing about time). Per round, interleaved, one pod per runtime handler: RunPodSandbox +
/// CreateContainer + StartContainer of a container with 10 file secrets, through `runc` and
/// through `dso`; prints one JSON line per pod (`{"handler", "start_ms", "remove_ms"}`).
/// `DSO_BENCH_BINDIR` names the dso-runc to measure (the release build), `DSO_BENCH_ROUNDS`
/// the rounds.
#[test]
#[ignore = "benchmark, run by bench/bench.py"]
fn cri_bench_rounds() {
    if !ready() {
        return;
    }
    let bindir = std::env::var("DSO_BENCH_BINDIR").ok();
    let dso_runc = bindir.map_or(dso_runc_exe().to_string(), |d| {
        Path::new(&d).join("dso-runc").display().to_string()
    });
    let rounds: usize = std::env::var("DSO_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let secrets: String = (0..10)
        .map(|i| format!("  s{i}:\n    provider: local\n    allow: [ {{ kubernetes: {{ namespace: bench }} }} ]\n"))
        .collect();
    let mut cri = Cri::start_with(&secrets, &dso_runc);
    for i in 0..10 {
        cri.set_secret(&format!("s{i}"), &random_token("bench-"));
    }
    let env: Vec<(String, String)> = (0..10)
        .map(|i| (format!("S{i}_FILE"), format!("dsofile://s{i}")))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut n = 0;
    // One unmeasured pod per handler first (image unpack, shim start-up caches).
    for round in 0..=rounds {
        let order = if round % 2 == 0 {
            ["runc", "dso"]
        } else {
            ["dso", "runc"]
        };
        for handler in order {
            n += 1;
            let pod_cfg = cri.pod_config("bench", &format!("p{n}"), &[]);
            let t0 = Instant::now();
            let pod = cri.run_pod_with(&pod_cfg, handler);
            cri.start_container(&pod, &pod_cfg, "app", &env, "sleep 1000000")
                .unwrap_or_else(|e| panic!("{handler}: {e}\n{}", cri.log()));
            let start = t0.elapsed();
            let t1 = Instant::now();
            cri.remove_pod(&pod);
            let remove = t1.elapsed();
            if round > 0 {
                println!(
                    "{}",
                    serde_json::json!({
                        "handler": handler,
                        "start_ms": start.as_secs_f64() * 1000.0,
                        "remove_ms": remove.as_secs_f64() * 1000.0,
                    })
                );
            }
        }
    }
    // The dso pods got their secrets (else the row measured nothing).
    assert!(
        cri.audit().contains(r#""event":"secret_injected""#),
        "no injection in the dso pods"
    );
}
