//! For the test suites only: how a test that cannot run here says so. It prints `SKIPPED:` and,
//! when `DSO_SKIP_LOG` names a file (scripts/test.sh sets it), appends `suite<TAB>test<TAB>why`
//! to it, so that the run's summary counts skips by suite: a skipped test still reports "ok" to
//! the test harness, and without this a skip could hide in a green run.

use std::io::Write;

/// The environment variable naming the skip log.
pub const SKIP_LOG_ENV: &str = "DSO_SKIP_LOG";

/// Records that the current test is skipped, and why (the caller then returns).
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|v| !v.is_empty()) else {
        return;
    };
    // The test binary is `<suite>-<hash>`; libtest names each test's thread after the test.
    let suite = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{suite}\t{test}\t{}\n", why.replace(['\t', '\n'], " "));
    // One write with O_APPEND: lines from tests running in parallel do not interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
