//! The shipped apps (apps/*.js and their TOML sidecars), as tests copy
//! them into a server's apps directory.

use std::path::Path;

/// The shipped app files: (file name, contents), sidecars included.
pub fn shipped() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("shipped apps") {
        let p = e.expect("entry").path();
        if !matches!(p.extension().and_then(|x| x.to_str()), Some("js" | "toml")) {
            continue;
        }
        let file = p.file_name().expect("name").to_string_lossy().to_string();
        out.push((file, std::fs::read_to_string(&p).expect("read app")));
    }
    out
}

/// The shipped apps with a generous decision budget (`budget_ms` in each
/// sidecar), so a loaded build on a busy machine answers from the app,
/// not from its fallback. Everything else in the sidecars (ttl, fallback,
/// providers) is unchanged.
pub fn shipped_with_budget() -> Vec<(String, String)> {
    let mut out = shipped();
    for (file, text) in &mut out {
        if file.ends_with(".toml") && !text.contains("budget_ms") {
            text.push_str("\nbudget_ms = 2000\n");
        }
    }
    out
}
