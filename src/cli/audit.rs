//! `dso audit verify [PATH...]`: checks the hash chain of the audit file(s) (see
//! [`crate::audit::chain`]). Exit 0 intact, 1 broken (the first bad line named), 2 usage.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::audit::chain;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check the audit trail's hash chain: exit 0 when intact, 1 naming the first bad line
    #[command(
        long_about = "Check the audit trail's hash chain.\n\n\
            Every line carries a sequence number and the SHA-256 of the line before it; a deleted, \
            edited, reordered or inserted line breaks the chain, and the first bad line is named. \
            Give rotated files oldest first, the live file last: each must continue the one before \
            it, and the live file is checked against the chain head kept next to it. Without PATH: \
            audit.path of dso.yaml (default /var/log/dso/audit.log).",
        after_help = "Examples:\n  dso audit verify\n  dso audit verify /var/log/dso/audit.log.2 /var/log/dso/audit.log.1 /var/log/dso/audit.log\n\nExit status: 0 intact, 1 broken or unreadable, 2 usage error."
    )]
    Verify {
        /// Audit files, oldest first [default: audit.path of dso.yaml]
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

pub(super) fn run(config_path: &Path, cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify { paths } => {
            let paths = if paths.is_empty() {
                // A missing dso.yaml means the default path.
                let cfg = crate::config::Config::load(config_path).ok();
                vec![
                    cfg.and_then(|c| c.audit.path)
                        .unwrap_or_else(|| PathBuf::from(crate::audit::DEFAULT_AUDIT_PATH)),
                ]
            } else {
                paths
            };
            match chain::verify_files(&paths) {
                Ok(files) => {
                    for (path, intact) in files {
                        let from = match &intact.continues {
                            Some(c) => format!(", continuing seq {} {}", c.seq, &c.hash[..12]),
                            None => String::new(),
                        };
                        match &intact.last {
                            Some(last) => println!(
                                "{}: intact, {} lines, seq {}-{}{from}",
                                path.display(),
                                intact.lines,
                                intact.first_seq,
                                last.seq
                            ),
                            None => println!("{}: intact (empty)", path.display()),
                        }
                    }
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("dso: {e}");
                    Ok(1)
                }
            }
        }
    }
}
