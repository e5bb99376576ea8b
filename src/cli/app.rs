//! `--app` and app file arguments: which file, and loading it the way the
//! server's registry does.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};

use crate::config::{Config, read_sidecar};
use crate::openmix::DataSnapshot;

/// Resolves `--app`: a name in the apps directory or a path to a file.
fn app_path(app: &str, config: &Config) -> anyhow::Result<(String, PathBuf)> {
    let path = if app.ends_with(".js") || app.contains('/') {
        PathBuf::from(app)
    } else {
        config.apps_dir.join(format!("{app}.js"))
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("{}: not an app file name", path.display()))?
        .to_string();
    if !path.is_file() {
        bail!("{}: no such app file", path.display());
    }
    Ok((name, path))
}

/// Loads one app (a name or a file) the way the registry does, with its
/// sidecar.
pub fn load_one(
    app: &str,
    config: &Config,
    data: &Arc<DataSnapshot>,
) -> anyhow::Result<crate::engine::apps::LoadedApp> {
    let (name, path) = app_path(app, config)?;
    let source = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let sidecar = read_sidecar(&path)?;
    crate::engine::apps::load_app(&name, &path, &source, sidecar.as_deref(), config, data, 1)
        .map_err(|f| anyhow!("{f}"))
}
