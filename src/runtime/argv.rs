//! runc's command line, read the way runc reads it: global flags, then the subcommand (the
//! first positional), then its flags and the container id. Nothing is reordered; dso's own
//! global flags (`--dso-config`, `--dso-delegate`) are the only thing removed.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// runc global flags that take a value (urfave/cli accepts `--f v`, `--f=v`, `-f v`, `-f=v`).
const GLOBAL_VALUE_FLAGS: &[&str] = &["log", "log-format", "root", "criu", "rootless"];
/// `create`/`run` flags that take a value.
const CREATE_VALUE_FLAGS: &[&str] = &[
    "bundle",
    "b",
    "console-socket",
    "pid-file",
    "preserve-fds",
    "pidfd-socket",
];
/// Flags only `run` has; dropped when a `run` is turned into `create` + `start`.
pub const RUN_ONLY_FLAGS: &[&str] = &["detach", "d", "keep", "no-subreaper"];
/// dso's own global flags, removed before the delegate sees argv.
const DSO_CONFIG_FLAG: &str = "dso-config";
const DSO_DELEGATE_FLAG: &str = "dso-delegate";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// argv without argv[0] and without dso's flags: exactly what the delegate gets.
    pub args: Vec<OsString>,
    pub dso_config: Option<PathBuf>,
    pub delegate: Option<OsString>,
    /// Index in `args` of the subcommand.
    pub command_index: Option<usize>,
    pub command: Option<String>,
    pub root: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub log_format: Option<String>,
    pub debug: bool,
    pub bundle: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub keep: bool,
    /// Index in `args` of the container id.
    pub id_index: Option<usize>,
    pub container_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgvError {
    #[error("flag --{0} needs a value")]
    MissingValue(String),
}

/// Splits `-x`, `--x`, `-x=v`, `--x=v` into (`x`, Some(`v`)). `None` for a positional or `-`/`--`.
fn flag_parts(arg: &OsStr) -> Option<(&str, Option<&OsStr>)> {
    let bytes = arg.as_bytes();
    let body = bytes
        .strip_prefix(b"--")
        .or_else(|| bytes.strip_prefix(b"-"))?;
    if body.is_empty() {
        return None;
    }
    let (name, value) = match body.iter().position(|&b| b == b'=') {
        Some(i) => (&body[..i], Some(OsStr::from_bytes(&body[i + 1..]))),
        None => (body, None),
    };
    Some((std::str::from_utf8(name).ok()?, value))
}

fn is_true(value: Option<&OsStr>) -> bool {
    value.is_none_or(|v| v.as_bytes() != b"false")
}

impl Invocation {
    /// Parses argv (without argv[0]).
    pub fn parse<I: IntoIterator<Item = OsString>>(argv: I) -> Result<Invocation, ArgvError> {
        let raw: Vec<OsString> = argv.into_iter().collect();
        let mut inv = Invocation::default();
        let mut i = 0;

        // Global section: until the first positional.
        while i < raw.len() {
            let arg = &raw[i];
            let Some((name, inline)) = flag_parts(arg) else {
                break;
            };
            if name == DSO_CONFIG_FLAG || name == DSO_DELEGATE_FLAG {
                let value = match inline {
                    Some(v) => v.to_os_string(),
                    None => {
                        i += 1;
                        raw.get(i)
                            .cloned()
                            .ok_or_else(|| ArgvError::MissingValue(name.to_string()))?
                    }
                };
                if name == DSO_CONFIG_FLAG {
                    inv.dso_config = Some(PathBuf::from(value));
                } else {
                    inv.delegate = Some(value);
                }
                i += 1;
                continue;
            }
            inv.args.push(arg.clone());
            if GLOBAL_VALUE_FLAGS.contains(&name) {
                let value = match inline {
                    Some(v) => Some(v.to_os_string()),
                    None => {
                        i += 1;
                        let v = raw.get(i).cloned();
                        if let Some(v) = &v {
                            inv.args.push(v.clone());
                        }
                        v
                    }
                };
                match name {
                    "log" => inv.log = value.map(PathBuf::from),
                    "log-format" => inv.log_format = value.map(|v| v.to_string_lossy().into()),
                    "root" => inv.root = value.map(PathBuf::from),
                    _ => {}
                }
            } else if name == "debug" {
                inv.debug = is_true(inline);
            }
            i += 1;
        }

        // Subcommand and everything after it: copied unchanged. (`i` is past the end when the
        // last argument is a global flag whose value is missing: runc reports that.)
        let rest_start = inv.args.len();
        inv.args
            .extend(raw.get(i..).unwrap_or_default().iter().cloned());
        let Some(cmd) = inv.args.get(rest_start) else {
            return Ok(inv);
        };
        inv.command_index = Some(rest_start);
        inv.command = Some(cmd.to_string_lossy().into_owned());
        if !matches!(inv.command.as_deref(), Some("create" | "run")) {
            return Ok(inv);
        }

        let mut j = rest_start + 1;
        while j < inv.args.len() {
            let arg = &inv.args[j];
            if arg.as_bytes() == b"--" {
                j += 1;
                break;
            }
            let Some((name, inline)) = flag_parts(arg) else {
                break;
            };
            if CREATE_VALUE_FLAGS.contains(&name) {
                let value = match inline {
                    Some(v) => v.to_os_string(),
                    None => {
                        j += 1;
                        inv.args
                            .get(j)
                            .cloned()
                            .ok_or_else(|| ArgvError::MissingValue(name.to_string()))?
                    }
                };
                match name {
                    "bundle" | "b" => inv.bundle = Some(PathBuf::from(value)),
                    "pid-file" => inv.pid_file = Some(PathBuf::from(value)),
                    "console-socket" => inv.console_socket = Some(PathBuf::from(value)),
                    _ => {}
                }
            } else if name == "detach" || name == "d" {
                inv.detach = is_true(inline);
            } else if name == "keep" {
                inv.keep = is_true(inline);
            }
            j += 1;
        }
        if let Some(id) = inv.args.get(j) {
            inv.id_index = Some(j);
            inv.container_id = Some(id.to_string_lossy().into_owned());
        }
        Ok(inv)
    }

    /// True for `create` and `run`, the only subcommands dso may change.
    pub fn is_create_or_run(&self) -> bool {
        matches!(self.command.as_deref(), Some("create" | "run"))
    }

    /// The bundle directory: `--bundle`, else the current directory (as runc does).
    pub fn bundle_dir(&self) -> std::io::Result<PathBuf> {
        match &self.bundle {
            Some(b) => Ok(b.clone()),
            None => std::env::current_dir(),
        }
    }

    /// The global flags (everything before the subcommand), for follow-up calls such as
    /// `runc delete --force` and `runc state` that must use the same `--root` and log.
    pub fn global_args(&self) -> &[OsString] {
        &self.args[..self.command_index.unwrap_or(self.args.len())]
    }

    /// argv for `create` from a `run`: subcommand replaced, run-only flags removed.
    pub fn run_as_create_args(&self) -> Vec<OsString> {
        let Some(ci) = self.command_index else {
            return self.args.clone();
        };
        let end = self.id_index.unwrap_or(self.args.len());
        let mut out: Vec<OsString> = self.args[..ci].to_vec();
        out.push("create".into());
        let mut j = ci + 1;
        while j < end {
            let arg = &self.args[j];
            match flag_parts(arg) {
                Some((n, _)) if RUN_ONLY_FLAGS.contains(&n) => {}
                // A flag's value is kept whatever it looks like (`--pid-file --keep`).
                Some((n, None)) if CREATE_VALUE_FLAGS.contains(&n) && j + 1 < end => {
                    out.push(arg.clone());
                    out.push(self.args[j + 1].clone());
                    j += 1;
                }
                _ => out.push(arg.clone()),
            }
            j += 1;
        }
        out.extend(self.args[end..].iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Invocation::parse(args.iter().map(OsString::from)).unwrap()
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn argv_table() {
        struct Case {
            argv: &'static [&'static str],
            command: Option<&'static str>,
            bundle: Option<&'static str>,
            id: Option<&'static str>,
            create: bool,
        }
        let cases = [
            Case {
                argv: &[
                    "--root",
                    "/r",
                    "--log",
                    "/l",
                    "--log-format",
                    "json",
                    "create",
                    "--bundle",
                    "/b",
                    "--pid-file",
                    "/p",
                    "c1",
                ],
                command: Some("create"),
                bundle: Some("/b"),
                id: Some("c1"),
                create: true,
            },
            Case {
                argv: &["create", "-b", "/x", "c2"],
                command: Some("create"),
                bundle: Some("/x"),
                id: Some("c2"),
                create: true,
            },
            Case {
                argv: &["create", "--bundle=/y", "c3"],
                command: Some("create"),
                bundle: Some("/y"),
                id: Some("c3"),
                create: true,
            },
            Case {
                argv: &["create", "-bundle", "/z", "c4"],
                command: Some("create"),
                bundle: Some("/z"),
                id: Some("c4"),
                create: true,
            },
            Case {
                argv: &["create", "-b=/w", "c5"],
                command: Some("create"),
                bundle: Some("/w"),
                id: Some("c5"),
                create: true,
            },
            Case {
                argv: &["create", "c6"],
                command: Some("create"),
                bundle: None,
                id: Some("c6"),
                create: true,
            },
            Case {
                argv: &["run", "-d", "--bundle", "/b", "c7"],
                command: Some("run"),
                bundle: Some("/b"),
                id: Some("c7"),
                create: true,
            },
            // `delete create`: the container is called "create"; it is not a create.
            Case {
                argv: &["delete", "create"],
                command: Some("delete"),
                bundle: None,
                id: None,
                create: false,
            },
            Case {
                argv: &["--root", "create", "delete", "x"],
                command: Some("delete"),
                bundle: None,
                id: None,
                create: false,
            },
            Case {
                argv: &["--debug", "--systemd-cgroup", "start", "c8"],
                command: Some("start"),
                bundle: None,
                id: None,
                create: false,
            },
            Case {
                argv: &["--version"],
                command: None,
                bundle: None,
                id: None,
                create: false,
            },
            Case {
                argv: &[],
                command: None,
                bundle: None,
                id: None,
                create: false,
            },
        ];
        for c in cases {
            let inv = parse(c.argv);
            assert_eq!(inv.command.as_deref(), c.command, "{:?}", c.argv);
            assert_eq!(inv.bundle, c.bundle.map(PathBuf::from), "{:?}", c.argv);
            assert_eq!(inv.container_id.as_deref(), c.id, "{:?}", c.argv);
            assert_eq!(inv.is_create_or_run(), c.create, "{:?}", c.argv);
            // runc's own args are never changed.
            assert_eq!(inv.args, os(c.argv), "{:?}", c.argv);
        }
    }

    #[test]
    fn globals_are_read() {
        let inv = parse(&[
            "--root",
            "/run/r",
            "--log=/l.json",
            "--log-format",
            "json",
            "--debug",
            "create",
            "--pid-file=/p",
            "--console-socket",
            "/s",
            "id",
        ]);
        assert_eq!(inv.root, Some("/run/r".into()));
        assert_eq!(inv.log, Some("/l.json".into()));
        assert_eq!(inv.log_format.as_deref(), Some("json"));
        assert!(inv.debug);
        assert_eq!(inv.pid_file, Some("/p".into()));
        assert_eq!(inv.console_socket, Some("/s".into()));
        assert_eq!(
            inv.global_args(),
            os(&[
                "--root",
                "/run/r",
                "--log=/l.json",
                "--log-format",
                "json",
                "--debug"
            ])
        );
    }

    #[test]
    fn dso_flags_are_stripped_in_both_forms() {
        let inv = parse(&["--dso-config", "/etc/x.yaml", "--root", "/r", "delete", "c"]);
        assert_eq!(inv.dso_config, Some("/etc/x.yaml".into()));
        assert_eq!(inv.args, os(&["--root", "/r", "delete", "c"]));

        let inv = parse(&[
            "--dso-config=/etc/y.yaml",
            "--dso-delegate=/usr/bin/crun",
            "create",
            "c",
        ]);
        assert_eq!(inv.dso_config, Some("/etc/y.yaml".into()));
        assert_eq!(inv.delegate, Some("/usr/bin/crun".into()));
        assert_eq!(inv.args, os(&["create", "c"]));

        assert_eq!(
            Invocation::parse(os(&["--dso-config"])).unwrap_err(),
            ArgvError::MissingValue("dso-config".into())
        );
        // After the subcommand, a "--dso-config" is somebody else's argument: untouched.
        let inv = parse(&["exec", "c", "--dso-config", "x"]);
        assert_eq!(inv.args, os(&["exec", "c", "--dso-config", "x"]));
    }

    #[test]
    fn non_utf8_args_pass_unchanged() {
        let weird = OsString::from(std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        let inv = Invocation::parse(vec![OsString::from("exec"), weird.clone()]).unwrap();
        assert_eq!(inv.args[1], weird);
    }

    #[test]
    fn run_becomes_create() {
        let inv = parse(&[
            "--root",
            "/r",
            "run",
            "-d",
            "--keep",
            "--bundle",
            "/b",
            "--detach=true",
            "c1",
        ]);
        assert!(inv.detach);
        assert!(inv.keep);
        assert_eq!(
            inv.run_as_create_args(),
            os(&["--root", "/r", "create", "--bundle", "/b", "c1"])
        );
    }

    /// Found by fuzzing: a flag value that looks like a run-only flag (`--bundle --keep`) was
    /// dropped with the flags, and the create read the next argument as the bundle.
    #[test]
    fn run_becomes_create_keeping_flag_values() {
        let inv = parse(&["run", "-d", "--bundle", "--keep", "--pid-file", "-d", "c1"]);
        assert_eq!(inv.bundle, Some("--keep".into()));
        assert_eq!(
            inv.run_as_create_args(),
            os(&["create", "--bundle", "--keep", "--pid-file", "-d", "c1"])
        );
    }

    #[test]
    fn missing_flag_value_is_an_error() {
        assert!(Invocation::parse(os(&["create", "--bundle"])).is_err());
    }

    /// Found by fuzzing: a value-taking global flag as the last argument ran the index past
    /// the end and panicked. runc gets the argv unchanged and reports the missing value.
    #[test]
    fn global_flag_without_value_at_the_end() {
        for argv in [&["--rootless"][..], &["--debug", "--root"], &["--log"]] {
            let inv = parse(argv);
            assert_eq!(inv.args, os(argv));
            assert_eq!(inv.command, None);
        }
    }
}
