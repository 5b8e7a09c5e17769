//! Shared by `tests/providers_aws.rs` and `integration/e2e_aws.rs`:
//! a moto server (`python3 -m moto.server`) with IAM authentication enforced, seeded through
//! boto3, and `imds_fake.py`, the IMDSv2 stand-in. Both die with the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

pub const REGION: &str = "us-east-1";
/// Actions moto lets through before it starts authenticating: exactly the admin bootstrap of
/// `SEED` (create_user, put_user_policy, create_access_key).
pub const NO_AUTH_ACTIONS: u32 = 3;
use crate::FAKES_DIR;

/// Seeds moto (argv[1] = endpoint; stdin: JSON object of secret name -> SecretString) and
/// prints what the tests need as JSON. Values come on stdin, never in argv.
const SEED: &str = r#"
import base64, json, sys
import boto3
from botocore.config import Config

endpoint = sys.argv[1]
cfg = Config(retries={"max_attempts": 1})
def client(svc, key=None):
    kw = {}
    if key:
        kw = dict(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                  aws_session_token=key.get("SessionToken"))
    else:
        kw = dict(aws_access_key_id="AKIDBOOTSTRAP", aws_secret_access_key="bootstrap")
    return boto3.client(svc, endpoint_url=endpoint, region_name="us-east-1", config=cfg, **kw)

def policy(actions):
    return json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})

# The three unauthenticated actions.
iam = client("iam")
admin_arn = iam.create_user(UserName="admin")["User"]["Arn"]
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy("*"))
admin = iam.create_access_key(UserName="admin")["AccessKey"]

# From here on moto checks every signature and policy.
iam = client("iam", admin)
out = {"admin": {"id": admin["AccessKeyId"], "secret": admin["SecretAccessKey"]}}
users = {
    "reader": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "getonly": ["secretsmanager:GetSecretValue"],
    "nopriv": ["secretsmanager:ListSecrets"],
}
for user, actions in users.items():
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy(actions))
    k = iam.create_access_key(UserName=user)["AccessKey"]
    out[user] = {"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}

# A role for the instance-role (IMDS) test, assumed by admin: temporary credentials with a
# session token that moto checks.
trust = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}]})
role_arn = iam.create_role(RoleName="dso-instance-role", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
iam.put_role_policy(RoleName="dso-instance-role", PolicyName="p",
                    PolicyDocument=policy(["secretsmanager:GetSecretValue"]))
sts = client("sts", admin)
c = sts.assume_role(RoleArn=role_arn, RoleSessionName="dso-test")["Credentials"]
out["role"] = {"name": "dso-instance-role", "id": c["AccessKeyId"], "secret": c["SecretAccessKey"],
               "token": c["SessionToken"],
               "expiration": c["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}

sm = client("secretsmanager", admin)
for name, value in json.load(sys.stdin).items():
    sm.create_secret(Name=name, SecretString=value)
sm.create_secret(Name="bin/key", SecretBinary=b"\x00\x01binary\xff")
v1 = sm.create_secret(Name="rotating", SecretString="value-one")["VersionId"]
v2 = sm.put_secret_value(SecretId="rotating", SecretString="value-two")["VersionId"]
out["rotating"] = {"v1": v1, "v2": v2}
print(json.dumps(out))
"#;

// ---------------------------------------------------------------------------------------------
// Environment checks, moto and the IMDS fake.

/// True when python3 with moto, boto3 and flask is here. Otherwise: panic under `CI=true`,
/// else print why the test is skipped.
pub fn require_moto() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server, boto3, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let why = "python3 with moto[server] is needed (pip install -r tests/requirements.txt)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("\n\n*** CI=true and the AWS provider tests cannot run: {why} ***\n\n");
    }
    dso::test_support::skipped(why);
    false
}

#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

pub struct Moto {
    pub endpoint: String,
    /// The seed script's output: keys by user (`admin`, `reader`, `getonly`, `nopriv`), the
    /// assumed role's credentials (`role`), the version ids of `rotating`.
    pub seed: serde_json::Value,
}

impl Moto {
    pub fn key(&self, user: &str) -> Key {
        Key {
            id: self.seed[user]["id"]
                .as_str()
                .expect("seeded key id")
                .into(),
            secret: self.seed[user]["secret"]
                .as_str()
                .expect("seeded secret")
                .into(),
        }
    }
}

static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();
/// The SecretStrings seeded, set by the suite before the first `moto()` call.
static SECRETS: OnceLock<serde_json::Value> = OnceLock::new();
/// Children to kill when the test process exits.
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

extern "C" fn kill_children() {
    let mut children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The process's moto server, started and seeded on first use with `secrets` (name ->
/// SecretString; only the first caller's are used, so a suite passes the same every time).
pub fn moto(secrets: &serde_json::Value) -> &'static Moto {
    SECRETS.get_or_init(|| secrets.clone());
    match MOTO.get_or_init(start_moto) {
        Ok(m) => m,
        Err(e) => panic!("moto is not available: {e}"),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG`, so it
/// dies with the test process even if the exit handler does not run.
fn spawn_kept(mut cmd: Command) -> Result<u32, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id();
                CHILDREN
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(child);
                let _ = tx.send(Ok(pid));
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        }
    });
    rx.recv().map_err(|_| "spawner thread died".to_string())?
}

fn start_moto() -> Result<Moto, String> {
    // SAFETY: `kill_children` is an `extern "C" fn()` that does not unwind.
    if unsafe { libc::atexit(kill_children) } != 0 {
        return Err("atexit failed".into());
    }
    let port = free_port();
    let log = std::env::temp_dir().join(format!("dso-moto-{}.log", std::process::id()));
    let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let logf2 = logf.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "moto.server",
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ])
    .env("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_ACTIONS.to_string())
    // The request recorder (started by the tests that read it) writes here, not into the cwd.
    .env(
        "MOTO_RECORDER_FILEPATH",
        std::env::temp_dir().join(format!("dso-moto-rec-{}.jsonl", std::process::id())),
    )
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_SESSION_TOKEN")
    .stdin(Stdio::null())
    .stdout(logf)
    .stderr(logf2);
    spawn_kept(cmd)?;
    if !wait_for_port(port, Duration::from_secs(60)) {
        return Err(format!(
            "moto_server did not listen on {port} within 60 s; log: {}",
            log.display()
        ));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let secrets = SECRETS
        .get()
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let mut child = Command::new("python3")
        .args(["-c", SEED, &endpoint])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running the seed script: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(secrets.to_string().as_bytes())
        .map_err(|e| format!("writing to the seed script: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for the seed script: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "seeding moto failed: {}\n(moto log: {})",
            String::from_utf8_lossy(&out.stderr),
            log.display()
        ));
    }
    let seed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("seed output: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(Moto { endpoint, seed })
}

/// A running `imds_fake.py`, killed on drop. Its config file can be rewritten while it runs.
pub struct Imds {
    child: Child,
    pub port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Imds {
    pub fn start(config: &serde_json::Value) -> Imds {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("imds.json");
        std::fs::write(&path, config.to_string()).expect("write imds config");
        let mut child = Command::new("python3")
            .arg(Path::new(FAKES_DIR).join("imds_fake.py"))
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start imds_fake.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("imds_fake.py prints its port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from imds_fake.py: {line:?}"));
        Imds {
            child,
            port,
            config: path,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn rewrite(&self, config: &serde_json::Value) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, config.to_string()).expect("write imds config");
        std::fs::rename(&tmp, &self.config).expect("rename imds config");
    }

    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_get(self.port, "/_fake/stats", &[]);
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("stats JSON")
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 request (to check the fake itself without dso's client).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_request(port, "GET", path, headers)
}

pub fn role_imds_config(m: &Moto, expiration: &str) -> serde_json::Value {
    let r = &m.seed["role"];
    serde_json::json!({
        "role": r["name"],
        "region": REGION,
        "access_key_id": r["id"],
        "secret_access_key": r["secret"],
        "token": r["token"],
        "expiration": expiration,
    })
}

/// RFC 3339 UTC without fractions, as IMDS writes `Expiration`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let s = dso::audit::format_rfc3339(secs, 0);
    // "...:SS.000Z" -> "...:SSZ"
    format!("{}Z", &s[..19])
}
