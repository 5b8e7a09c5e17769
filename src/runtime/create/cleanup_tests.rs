//! The fail-closed matrix of [`create_with_secrets`] with a fake delegate, as any user: what
//! dso undoes when runc's create, the pid, the injection, the record or the audit fails.
//! The container's tmpfs is a dir in /dev/shm (a tmpfs: no mount(2) needed), reached through
//! this process's own `/proc/<pid>/root`; a dir in the temp dir (not a tmpfs) makes injection
//! fail. Not covered here: the tmpfs mount itself and its removal with the container's mount
//! namespace, which are real runc's (tests/runc_real.rs).

use std::ffi::OsString;
use std::path::PathBuf;

use super::*;
use crate::runtime::delegate::fake::{Call, FakeDelegate};

const ID: &str = "t1";

struct Lab {
    dir: tempfile::TempDir,
    /// The "container's" secrets dir (on a tmpfs).
    shm: tempfile::TempDir,
}

impl Lab {
    /// A local store holding `db`, dso.yaml and a bundle whose spec references
    /// `DB_FILE=dsofile://db`.
    fn new() -> Lab {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(p("key"), b"cleanup-test-key-cleanup-test-key").unwrap();
        fs::set_permissions(p("key"), fs::Permissions::from_mode(0o600)).unwrap();
        let mut store = crate::providers::local::Store::create(&p("store"), &p("key")).unwrap();
        store
            .set("db", SecretValue::new(b"s3cret".to_vec()))
            .unwrap();
        let yaml = format!(
            "providers:\n  local: {{ type: local, path: {}, key_file: {} }}\nsecrets:\n  db: {{}}\npolicy: {{ default: allow }}\naudit: {{ path: {} }}\nagent: {{ socket: {} }}\nruntime: {{ state_dir: {}, secrets_dir: {} }}\n",
            p("store").display(),
            p("key").display(),
            p("audit.log").display(),
            p("agent.sock").display(),
            p("state").display(),
            shm.path().display(),
        );
        fs::write(p("dso.yaml"), yaml).unwrap();
        fs::create_dir(p("bundle")).unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "user": { "uid": nix::unistd::getuid().as_raw(), "gid": nix::unistd::getgid().as_raw() },
                "args": ["sh"], "cwd": "/", "env": ["PATH=/bin", "DB_FILE=dsofile://db"],
            },
            "root": { "path": "rootfs" },
        });
        fs::write(p("bundle/config.json"), spec.to_string()).unwrap();
        Lab { dir, shm }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// dso-runc's argv for `cmd` (`create`, or `run` with `flags`), as Docker gives it (the
    /// temp paths have no spaces).
    fn inv(&self, cmd: &str, flags: &[&str]) -> Invocation {
        let p = |n: &str| self.path(n).display().to_string();
        let flags = flags.join(" ");
        let argv = format!(
            "--dso-config={} --root {} --log {} --log-format json {cmd} --bundle {} {flags} {ID}",
            p("dso.yaml"),
            p("runc-root"),
            p("runc.log"),
            p("bundle"),
        );
        Invocation::parse(argv.split_whitespace().map(OsString::from)).unwrap()
    }

    fn create(&self, inv: &Invocation, delegate: &FakeDelegate) -> Result<i32, CreateError> {
        let spec = Spec::load(&self.path("bundle")).unwrap();
        create_with_secrets(inv, delegate, spec, &RuncLog::from_invocation(inv))
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn record_exists(&self) -> bool {
        self.path(&format!("state/{ID}.json")).exists()
    }

    fn injected(&self) -> Option<String> {
        fs::read_to_string(self.shm.path().join("db")).ok()
    }
}

/// A fake whose `state` reports this process: its root is the host's, where the secrets dir is.
fn fake(fail: Option<Call>) -> FakeDelegate {
    FakeDelegate::new(std::process::id() as i32, fail)
}

fn count(audit: &str, event: &str) -> usize {
    audit.matches(&format!("\"event\":\"{event}\"")).count()
}

#[test]
fn a_create_injects_then_records() {
    let lab = Lab::new();
    let d = fake(None);
    assert_eq!(lab.create(&lab.inv("create", &[]), &d).unwrap(), 0);
    assert_eq!(d.calls(), [Call::Create, Call::State]);
    assert_eq!(lab.injected().as_deref(), Some("s3cret"));
    assert!(lab.record_exists());
    let audit = lab.read("audit.log");
    assert_eq!(count(&audit, "secret_fetched"), 1, "{audit}");
    assert_eq!(count(&audit, "secret_injected"), 1, "{audit}");
    // The spec names the file, never the value.
    let spec = lab.read("bundle/config.json");
    assert!(spec.contains(&format!("DB_FILE={}/db", lab.shm.path().display())));
    assert!(!spec.contains("s3cret"));
}

#[test]
fn a_pid_file_spares_runc_state_and_run_detach_starts() {
    let lab = Lab::new();
    let d = fake(None);
    fs::write(lab.path("pid"), format!("{}\n", std::process::id())).unwrap();
    let pid_file = lab.path("pid").display().to_string();
    let inv = lab.inv("run", &["--detach", "--pid-file", &pid_file]);
    assert_eq!(lab.create(&inv, &d).unwrap(), 0);
    assert_eq!(d.calls(), [Call::Create, Call::Start]);
    assert!(lab.record_exists());
}

#[test]
fn a_refused_reference_runs_nothing_and_leaves_the_spec() {
    let lab = Lab::new();
    let before = lab.read("bundle/config.json");
    let text = before.replace("dsofile://db", "dsofile://nope");
    fs::write(lab.path("bundle/config.json"), &text).unwrap();
    let d = fake(None);
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(matches!(err, CreateError::UnknownSecret { .. }), "{err}");
    assert_eq!(d.calls(), []);
    assert_eq!(lab.read("bundle/config.json"), text);
}

#[test]
fn a_failed_runc_create_returns_its_status_and_deletes_nothing() {
    let lab = Lab::new();
    let d = fake(Some(Call::Create));
    assert_eq!(lab.create(&lab.inv("create", &[]), &d).unwrap(), 1);
    assert_eq!(d.calls(), [Call::Create]);
    assert!(!lab.record_exists());
    assert_eq!(lab.injected(), None);
    let audit = lab.read("audit.log");
    assert_eq!(count(&audit, "injection_failed"), 0, "{audit}");
    // The spec stays rewritten (runc read it; the bundle is the engine's to remove).
    assert!(lab.read("bundle/config.json").contains("/db\""));
}

/// The failures after runc's create: each deletes the container, audits `injection_failed`
/// and leaves no state record.
fn assert_cleaned_up(lab: &Lab, d: &FakeDelegate, calls: &[Call]) {
    assert_eq!(d.calls(), calls);
    assert_eq!(d.calls().last(), Some(&Call::Delete));
    assert!(!lab.record_exists());
    let audit = lab.read("audit.log");
    assert_eq!(count(&audit, "injection_failed"), 1, "{audit}");
    assert_eq!(count(&audit, "secret_injected"), 0, "{audit}");
}

#[test]
fn a_failed_runc_state_deletes_the_container() {
    let lab = Lab::new();
    let d = fake(Some(Call::State));
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(matches!(
        err,
        CreateError::Delegate(DelegateError::Failed { what: "state", .. })
    ));
    assert_cleaned_up(&lab, &d, &[Call::Create, Call::State, Call::Delete]);
}

#[test]
fn a_bad_pid_file_deletes_the_container() {
    let lab = Lab::new();
    fs::write(lab.path("pid"), "not-a-pid").unwrap();
    let pid_file = lab.path("pid").display().to_string();
    let d = fake(None);
    let err = lab
        .create(&lab.inv("create", &["--pid-file", &pid_file]), &d)
        .unwrap_err();
    assert!(
        matches!(err, CreateError::Delegate(DelegateError::Pid { .. })),
        "{err}"
    );
    assert_cleaned_up(&lab, &d, &[Call::Create, Call::Delete]);
}

#[test]
fn a_secrets_dir_that_is_no_tmpfs_deletes_the_container() {
    let lab = Lab::new();
    let not_tmpfs = lab.path("bundle").display().to_string();
    let yaml = lab.read("dso.yaml");
    let yaml = yaml.replace(&lab.shm.path().display().to_string(), &not_tmpfs);
    fs::write(lab.path("dso.yaml"), yaml).unwrap();
    let d = fake(None);
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(
        matches!(err, CreateError::Inject(InjectError::NotTmpfs { .. })),
        "{err}"
    );
    assert_cleaned_up(&lab, &d, &[Call::Create, Call::State, Call::Delete]);
    // A stale record of an earlier container under this id is gone too.
    fs::create_dir(lab.path("state")).unwrap();
    fs::write(lab.path(&format!("state/{ID}.json")), "{}").unwrap();
    let d = fake(None);
    lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(!lab.record_exists());
}

#[test]
fn a_failed_registration_deletes_the_container() {
    let lab = Lab::new();
    // The state dir is a file: registering fails after the files were written.
    fs::write(lab.path("state"), "").unwrap();
    let d = fake(None);
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(matches!(err, CreateError::State(_)), "{err}");
    assert_eq!(d.calls(), [Call::Create, Call::State, Call::Delete]);
    assert_eq!(count(&lab.read("audit.log"), "injection_failed"), 1);
}

#[test]
fn an_injection_that_cannot_be_audited_is_undone_with_its_record() {
    let lab = Lab::new();
    let yaml = lab
        .read("dso.yaml")
        .replace("audit: {", "audit: { required: true,");
    fs::write(lab.path("dso.yaml"), yaml).unwrap();
    // The audit log breaks while runc creates: the fetch is on record, the injection cannot be.
    let audit_log = lab.path("audit.log");
    let mut d = fake(None);
    d.on_create = Some(Box::new(move || {
        fs::remove_file(&audit_log).unwrap();
        fs::create_dir(&audit_log).unwrap();
    }));
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(matches!(err, CreateError::Audit(_)), "{err}");
    assert_eq!(d.calls(), [Call::Create, Call::State, Call::Delete]);
    // It was registered, then removed.
    assert!(!lab.record_exists());
}

#[test]
fn a_failed_delete_is_logged_and_the_first_error_returned() {
    let lab = Lab::new();
    fs::write(lab.path("state"), "").unwrap();
    let d = fake(Some(Call::Delete));
    let err = lab.create(&lab.inv("create", &[]), &d).unwrap_err();
    assert!(matches!(err, CreateError::State(_)), "{err}");
    assert_eq!(d.calls(), [Call::Create, Call::State, Call::Delete]);
    let log = lab.read("runc.log");
    assert!(log.contains(&format!("dso: cleaning up {ID}: ")), "{log}");
}

#[test]
fn a_failed_start_deletes_the_container() {
    let lab = Lab::new();
    let d = fake(Some(Call::Start));
    let err = lab.create(&lab.inv("run", &["--detach"]), &d).unwrap_err();
    assert!(matches!(
        err,
        CreateError::Delegate(DelegateError::Failed { what: "start", .. })
    ));
    assert_eq!(
        d.calls(),
        [Call::Create, Call::State, Call::Start, Call::Delete]
    );
}
