//! Who a container is, from what its engine recorded before calling the runtime — never from the
//! image or the container's own environment, which its author controls:
//! - Docker: dockerd's record of the container (`<data-root>/containers/<id>/config.v2.json`,
//!   found through the spec's hostname/hosts/resolv.conf mounts), for name, image and the
//!   compose/swarm labels the client set (a label the image itself carries with the same value
//!   does not count);
//! - Kubernetes (containerd's CRI): the `io.kubernetes.cri.*` annotations containerd writes, for a
//!   bundle in containerd's `k8s.io` namespace;
//! - podman: its bundle and `io.container.manager` annotation (engine only, no name).
//!
//! Anything else is [`Engine::Unknown`], which matches no engine rule (fail closed).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CRI annotations (containerd's `pkg/cri/annotations`, same names in CRI-O's `io.kubernetes.cri-o.*`
/// for the container type).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const CRI_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_POD: &str = "io.kubernetes.cri.sandbox-name";
const CRI_CONTAINER: &str = "io.kubernetes.cri.container-name";
const CRI_IMAGE: &str = "io.kubernetes.cri.image-name";
/// The containerd namespace the CRI plugin keeps its containers in.
const CRI_CONTAINERD_NAMESPACE: &str = "k8s.io";

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const SWARM_SERVICE: &str = "com.docker.swarm.service.name";

/// dockerd's records are small; anything bigger is not one.
const MAX_RECORD: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Docker,
    Kubernetes,
    Podman,
    #[default]
    Unknown,
}

/// A container's identity as its engine recorded it. Fields an engine does not record are None.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub engine: Engine,
    /// The runtime's container id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
    /// Why the identity could not be established (engine unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

impl Workload {
    pub fn unknown(id: &str, reason: impl Into<String>) -> Workload {
        Workload {
            id: id.to_string(),
            unknown_reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// A short label for logs, status and provider attribution: `docker:web`,
    /// `k8s:billing/api/app`, `podman:0123456789ab`, `unknown:0123456789ab`.
    pub fn label(&self) -> String {
        let short = short_id(&self.id);
        match self.engine {
            Engine::Docker => format!("docker:{}", self.name.as_deref().unwrap_or(short)),
            Engine::Kubernetes => format!(
                "k8s:{}/{}/{}",
                self.namespace.as_deref().unwrap_or("?"),
                self.pod.as_deref().unwrap_or("?"),
                self.container.as_deref().unwrap_or("?")
            ),
            Engine::Podman => format!("podman:{short}"),
            Engine::Unknown => format!("unknown:{short}"),
        }
    }
}

/// The first 12 characters of a hex id (as `docker ps` shows it); other ids whole.
fn short_id(id: &str) -> &str {
    if id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id.get(..12).unwrap_or(id)
    } else {
        id
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = short_id(&self.id);
        match self.engine {
            Engine::Docker => match &self.name {
                Some(n) => write!(f, "docker container {n:?}"),
                None => write!(f, "docker container {short}"),
            },
            Engine::Kubernetes => write!(
                f,
                "kubernetes container {:?} of pod \"{}/{}\"",
                self.container.as_deref().unwrap_or("?"),
                self.namespace.as_deref().unwrap_or("?"),
                self.pod.as_deref().unwrap_or("?")
            ),
            Engine::Podman => write!(f, "podman container {short}"),
            Engine::Unknown => match &self.unknown_reason {
                Some(r) => write!(f, "container {short} (identity unknown: {r})"),
                None => write!(f, "container {short} (identity unknown)"),
            },
        }
    }
}

/// Is this the CRI's sandbox (pause) container? It never gets secrets.
pub fn is_sandbox(annotations: &serde_json::Map<String, Value>) -> bool {
    [CRI_CONTAINER_TYPE, CRIO_CONTAINER_TYPE]
        .iter()
        .any(|k| annotations.get(*k).and_then(Value::as_str) == Some("sandbox"))
}

/// Establishes the identity of container `id` from its spec document (mounts, annotations) and
/// bundle path.
pub fn identify(spec: &Value, id: &str, bundle: &Path) -> Workload {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Workload::unknown(id, "invalid container id");
    }
    let annotations = spec.get("annotations").and_then(Value::as_object);
    let ann = |k: &str| {
        annotations
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if ann(CRI_CONTAINER_TYPE).is_some() {
        return kubernetes(id, bundle, ann);
    }
    if let Some(dir) = docker_dir(spec, id) {
        return match docker(id, &dir) {
            Ok(w) => w,
            Err(why) => Workload::unknown(id, why),
        };
    }
    let in_podman_storage = bundle.file_name().is_some_and(|n| n == "userdata")
        && bundle
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == id);
    if in_podman_storage && ann("io.container.manager").as_deref() == Some("libpod") {
        return Workload {
            engine: Engine::Podman,
            id: id.to_string(),
            ..Default::default()
        };
    }
    Workload::unknown(id, "no engine record found for it")
}

fn kubernetes(id: &str, bundle: &Path, ann: impl Fn(&str) -> Option<String>) -> Workload {
    // The CRI plugin's bundles are `<state>/io.containerd.runtime.v2.task/k8s.io/<id>`: a
    // container some other client created with look-alike annotations is not in that namespace.
    let in_cri_namespace = bundle.file_name().is_some_and(|n| n == id)
        && bundle
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == CRI_CONTAINERD_NAMESPACE);
    if !in_cri_namespace {
        return Workload::unknown(
            id,
            "CRI annotations on a container outside containerd's k8s.io namespace",
        );
    }
    let (namespace, pod, container) = (ann(CRI_NAMESPACE), ann(CRI_POD), ann(CRI_CONTAINER));
    if namespace.is_none() || pod.is_none() || container.is_none() {
        return Workload::unknown(
            id,
            "CRI annotations without namespace, pod or container name",
        );
    }
    Workload {
        engine: Engine::Kubernetes,
        id: id.to_string(),
        namespace,
        pod,
        container,
        image: ann(CRI_IMAGE),
        ..Default::default()
    }
}

/// dockerd's directory for this container, `<data-root>/containers/<id>`, from the sources of
/// the bind mounts dockerd adds to every container (hostname, hosts, resolv.conf).
fn docker_dir(spec: &Value, id: &str) -> Option<PathBuf> {
    let needle = format!("/containers/{id}/");
    spec.get("mounts")?
        .as_array()?
        .iter()
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .find_map(|src| {
            let at = src.find(&needle)?;
            Some(PathBuf::from(&src[..at + needle.len() - 1]))
        })
}

#[derive(Deserialize)]
struct DockerRecord {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    /// `sha256:<hex>` of the image.
    #[serde(rename = "Image", default)]
    image_id: Option<String>,
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<DockerRecordConfig>,
}

#[derive(Deserialize, Default)]
struct DockerRecordConfig {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ImageRecord {
    #[serde(default)]
    config: Option<ImageRecordConfig>,
}

#[derive(Deserialize)]
struct ImageRecordConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Reads a root-owned file that no one else can write, up to [`MAX_RECORD`] bytes.
fn read_trusted(path: &Path) -> Result<Vec<u8>, String> {
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !trusted_owner(meta.uid()) || meta.mode() & 0o022 != 0 || !meta.is_file() {
        return Err(format!(
            "{}: not a root-owned file that only root can write",
            path.display()
        ));
    }
    let mut buf = Vec::new();
    f.take(MAX_RECORD)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

/// Root; in unit tests also the user running them (their fixtures are theirs).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || (cfg!(test) && uid == nix::unistd::geteuid().as_raw())
}

fn docker(id: &str, dir: &Path) -> Result<Workload, String> {
    let path = dir.join("config.v2.json");
    let rec: DockerRecord = serde_json::from_slice(&read_trusted(&path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if rec.id != id {
        return Err(format!("{} is not this container's record", path.display()));
    }
    let cfg = rec.config.unwrap_or_default();
    let labels = cfg.labels.unwrap_or_default();
    // Labels the image carries reach the container's labels too; only a value the client set
    // (absent from the image, or different there) says anything about the workload.
    let image_labels = dir
        .parent()
        .and_then(Path::parent)
        .and_then(|root| image_labels(root, rec.driver.as_deref()?, rec.image_id.as_deref()?));
    let client_label = |k: &str| -> Option<String> {
        let v = labels.get(k)?;
        match &image_labels {
            Some(img) if img.get(k) == Some(v) => None,
            Some(_) => Some(v.clone()),
            // The image's labels could not be read: no label can be trusted.
            None => None,
        }
    };
    let name = rec.name.strip_prefix('/').unwrap_or(&rec.name);
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(format!("{}: no usable container name", path.display()));
    }
    Ok(Workload {
        engine: Engine::Docker,
        id: id.to_string(),
        name: Some(name.to_string()),
        image: cfg.image,
        compose_project: client_label(COMPOSE_PROJECT),
        compose_service: client_label(COMPOSE_SERVICE),
        swarm_service: client_label(SWARM_SERVICE),
        ..Default::default()
    })
}

/// The labels of image `sha256:<hex>` in dockerd's image store (graphdriver layout).
fn image_labels(
    data_root: &Path,
    driver: &str,
    image_id: &str,
) -> Option<BTreeMap<String, String>> {
    let hex = image_id.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || driver.contains('/') {
        return None;
    }
    let path = data_root
        .join("image")
        .join(driver)
        .join("imagedb/content/sha256")
        .join(hex);
    let rec: ImageRecord = serde_json::from_slice(&read_trusted(&path).ok()?).ok()?;
    Some(rec.config.and_then(|c| c.labels).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const IMG: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// A fake data-root laid out as dockerd lays it out (the real one is tested end to end in
    /// integration/e2e_policy.rs).
    fn data_root(labels: Value, image_labels: Value) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let cdir = root.path().join("containers").join(ID);
        fs::create_dir_all(&cdir).unwrap();
        fs::write(
            cdir.join("config.v2.json"),
            json!({"ID": ID, "Name": "/billing-api", "Image": format!("sha256:{IMG}"),
                   "Driver": "overlay2", "Config": {"Image": "busybox", "Labels": labels}})
            .to_string(),
        )
        .unwrap();
        let idir = root.path().join("image/overlay2/imagedb/content/sha256");
        fs::create_dir_all(&idir).unwrap();
        fs::write(
            idir.join(IMG),
            json!({"config": {"Labels": image_labels}}).to_string(),
        )
        .unwrap();
        root
    }

    fn spec_with_hostname(root: &Path) -> Value {
        json!({"mounts": [
            {"destination": "/proc", "source": "proc", "type": "proc"},
            {"destination": "/etc/hostname", "type": "bind",
             "source": root.join("containers").join(ID).join("hostname")},
        ]})
    }

    #[test]
    fn docker_identity_from_dockerds_record() {
        let root = data_root(
            json!({"com.docker.compose.project": "shop", "com.docker.compose.service": "evil",
                   "com.docker.swarm.service.name": "web"}),
            json!({"com.docker.compose.service": "evil", "com.docker.swarm.service.name": "x"}),
        );
        let w = identify(&spec_with_hostname(root.path()), ID, Path::new("/b"));
        assert_eq!(w.engine, Engine::Docker, "{w:?}");
        assert_eq!(w.name.as_deref(), Some("billing-api"));
        assert_eq!(w.image.as_deref(), Some("busybox"));
        assert_eq!(w.compose_project.as_deref(), Some("shop"));
        // Same value in the image: could be the image's own label, so it does not count.
        assert_eq!(w.compose_service, None);
        // A different value than the image's: the client set it.
        assert_eq!(w.swarm_service.as_deref(), Some("web"));
        assert_eq!(w.to_string(), "docker container \"billing-api\"");
        assert_eq!(w.label(), "docker:billing-api");

        // Another container's record (e.g. --network container:X shares its files) is not ours.
        let other = ID.replace('0', "f");
        let w = identify(&spec_with_hostname(root.path()), &other, Path::new("/b"));
        assert_eq!(w.engine, Engine::Unknown);
    }

    #[test]
    fn a_record_others_can_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let root = data_root(json!({}), json!({}));
        let rec = root
            .path()
            .join("containers")
            .join(ID)
            .join("config.v2.json");
        fs::set_permissions(&rec, fs::Permissions::from_mode(0o666)).unwrap();
        let w = identify(&spec_with_hostname(root.path()), ID, Path::new("/b"));
        assert_eq!(w.engine, Engine::Unknown);
        assert!(w.unknown_reason.unwrap().contains("only root can write"));
    }

    #[test]
    fn kubernetes_identity_needs_the_cri_namespace() {
        let spec = json!({"annotations": {
            CRI_CONTAINER_TYPE: "container", CRI_NAMESPACE: "billing", CRI_POD: "api-7d9",
            CRI_CONTAINER: "app", CRI_IMAGE: "busybox:latest"}});
        let bundle = format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}");
        let w = identify(&spec, ID, Path::new(&bundle));
        assert_eq!(w.engine, Engine::Kubernetes);
        assert_eq!(
            (
                w.namespace.as_deref(),
                w.pod.as_deref(),
                w.container.as_deref()
            ),
            (Some("billing"), Some("api-7d9"), Some("app"))
        );
        assert_eq!(
            w.to_string(),
            "kubernetes container \"app\" of pod \"billing/api-7d9\""
        );
        assert_eq!(w.label(), "k8s:billing/api-7d9/app");
        // The same annotations from another containerd namespace (ctr, docker's moby): unknown.
        let bundle = format!("/run/containerd/io.containerd.runtime.v2.task/default/{ID}");
        assert_eq!(
            identify(&spec, ID, Path::new(&bundle)).engine,
            Engine::Unknown
        );
    }

    #[test]
    fn sandbox_and_unknown() {
        let ann = json!({CRI_CONTAINER_TYPE: "sandbox"});
        assert!(is_sandbox(ann.as_object().unwrap()));
        let ann = json!({CRIO_CONTAINER_TYPE: "sandbox"});
        assert!(is_sandbox(ann.as_object().unwrap()));
        let ann = json!({CRI_CONTAINER_TYPE: "container"});
        assert!(!is_sandbox(ann.as_object().unwrap()));
        let w = identify(&json!({}), "plain", Path::new("/tmp/bundle"));
        assert_eq!(w.engine, Engine::Unknown);
        assert_eq!(
            w.to_string(),
            "container plain (identity unknown: no engine record found for it)"
        );
        assert_eq!(
            identify(&json!({}), "../x", Path::new("/b")).engine,
            Engine::Unknown
        );
    }

    #[test]
    fn podman_by_bundle_and_manager() {
        let bundle = format!("/var/lib/containers/storage/overlay-containers/{ID}/userdata");
        let spec = json!({"annotations": {"io.container.manager": "libpod"}});
        assert_eq!(
            identify(&spec, ID, Path::new(&bundle)).engine,
            Engine::Podman
        );
        assert_eq!(
            identify(&json!({}), ID, Path::new(&bundle)).engine,
            Engine::Unknown
        );
    }
}
