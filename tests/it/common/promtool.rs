//! `promtool check metrics` on a `/metrics` page: the Prometheus naming
//! guide's lint, run by the suites that scrape a live server.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `promtool` on the PATH. Without it the check cannot run: on CI (`CI`
/// set; `.ci/run` sets it and installs Debian's `prometheus`, which ships
/// promtool) that fails the test, elsewhere it is skipped, loudly.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed (Debian package `prometheus`): CI must check /metrics with it"
        );
        eprintln!(
            "\n*** SKIPPED: promtool is not installed (apt-get install prometheus); /metrics was NOT checked ***\n"
        );
    }
    found
}

/// Asserts that `promtool check metrics` finds nothing to say about `text`.
pub fn check_metrics(text: &str) {
    let Some(promtool) = promtool() else {
        return;
    };
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = check.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "promtool check metrics ({}): {said}\n--- /metrics:\n{text}",
        out.status
    );
}
