//! The one validation of a whole configuration, before it is served:
//! `switchyard check` runs all of it, `serve` the part that does not run
//! apps or reach stores before it starts, and SIGHUP that same part before
//! it swaps a new configuration in. None of them stops at the first
//! problem: each gets a list of [`Problem`]s, `FILE:LINE` like a compiler.
//!
//! It lives in `server` (a front end) because it reads every layer: the
//! configuration, GeoIP, the zones as the DNS front end builds them, the
//! app loader, the stores.
//!
//! Severities follow what serving does with each problem: [`Severity::Fatal`]
//! is what `serve` refuses to start on (and a reload refuses); an
//! [`Severity::Error`] is served degraded (an app that does not load
//! answers its fallback, a store that is down is retried), so `serve` logs
//! it and `check` fails on it; a [`Severity::Warning`] (a lint) fails
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigSource, Zone, lines};
use crate::engine::apps::{LoadedApp, app_name, load_app, sidecar_settings};
use crate::geo::{GeoDb, GeoKind, GeoPaths};
use crate::openmix::DataSnapshot;

/// How long `check` waits for a store to answer.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// How bad a problem is, by what serving does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `serve` refuses to start, a reload keeps the old configuration.
    Fatal,
    /// Served degraded: `serve` logs it, `check` fails.
    Error,
    /// Loads but may misbehave: reported, fails nothing.
    Warning,
    /// Nothing wrong, but worth knowing (what `serve` will make at first
    /// start): reported, fails nothing.
    Note,
}

impl Severity {
    /// `error` or `warning`, as printed (a fatal problem is an error that
    /// also stops `serve`).
    pub fn label(self) -> &'static str {
        match self {
            Severity::Fatal | Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One problem, pointing at a file and line when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file: the configuration, an app, a sidecar.
    pub file: String,
    /// The line in that file, when known.
    pub line: Option<u32>,
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong (one line).
    pub message: String,
}

impl Problem {
    fn new(
        file: impl Into<String>,
        line: Option<u32>,
        severity: Severity,
        message: String,
    ) -> Self {
        Problem {
            file: file.into(),
            line,
            severity,
            // One line per problem, whatever the error printed.
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// The problem as JSON: `file`, `line`, `severity`, `message`, and
    /// `refuses_serve`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "severity": self.severity.label(),
            "refuses_serve": self.severity == Severity::Fatal,
            "message": self.message,
        })
    }
}

impl std::fmt::Display for Problem {
    /// `FILE:LINE: error: message` (no `:LINE` when it is not known).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.severity.label(), self.message)
    }
}

/// The fatal problems of a configuration that is refused: one line each.
#[derive(Debug, thiserror::Error)]
pub struct Refused(pub Vec<Problem>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A checked configuration (when it parses) and its problems.
#[derive(Debug)]
pub struct Report {
    /// The configuration file (or `<built-in defaults>`).
    pub file: String,
    /// The configuration, when it parses and its sections check.
    pub config: Option<Config>,
    /// Every problem found, in the order checked.
    pub problems: Vec<Problem>,
}

impl Report {
    /// The configuration and its non-fatal problems, or every fatal
    /// problem: what `serve` and a reload go on with.
    pub fn ready(self) -> Result<(Config, Vec<Problem>), Refused> {
        let (fatal, rest): (Vec<Problem>, Vec<Problem>) = self
            .problems
            .into_iter()
            .partition(|p| p.severity == Severity::Fatal);
        match self.config {
            Some(config) if fatal.is_empty() => Ok((config, rest)),
            _ => Err(Refused(fatal)),
        }
    }
}

/// The configuration's file and text, for pointing at lines.
struct Text {
    file: String,
    text: String,
}

impl Text {
    fn of(config: &Config) -> Text {
        Text {
            file: config.source.clone(),
            text: config.source_text(),
        }
    }

    fn line(&self, key: &str) -> Option<u32> {
        lines::key_line(&self.text, key)
    }

    fn problem(&self, key: &str, severity: Severity, message: String) -> Problem {
        Problem::new(&self.file, self.line(key), severity, message)
    }
}

/// Loads the configuration `source` names (as far as it goes, so that a
/// bad static record does not hide a bad GeoIP path) and checks it with
/// the files it names: GeoIP databases (and their types) and the override table, the
/// static probes, every zone, the apps and data directories, the admin
/// token, each app's providers and sidecar. Neither runs apps nor reaches
/// stores ([`check_apps`], [`check_stores`]). `current` is the
/// configuration being served, on a reload: GeoIP files it already loaded
/// (the same paths) are not read again (their watcher reloads them).
pub fn check_config(source: &ConfigSource, current: Option<&Config>) -> Report {
    let partial = source.load_partial();
    let file = partial.error.file;
    let mut problems: Vec<Problem> = partial
        .error
        .problems
        .into_iter()
        .map(|p| Problem::new(&file, p.line, Severity::Fatal, p.message))
        .collect();
    // Without the parts that have problems, the rest is checked too.
    let Some(config) = partial.config else {
        return Report {
            file,
            config: None,
            problems,
        };
    };
    let text = Text::of(&config);
    if current.is_none_or(|c| c.geo_paths() != config.geo_paths()) {
        check_geo(&config.geo_paths(), source, &text, &mut problems);
    }
    if let Some(path) = &config.static_probes
        && let Err(e) = crate::data::probes::load_static(path)
    {
        problems.push(text.problem("data.probes", Severity::Fatal, format!("data.probes: {e}")));
    }
    for (i, zone) in config.zones.iter().enumerate() {
        if let Err(e) = crate::dns::check_zone(zone) {
            problems.push(text.problem(
                &format!("zone[{i}]"),
                Severity::Fatal,
                format!("zone[{i}] ({}): {e}", zone.name),
            ));
        }
        if zone.dnssec.is_some() {
            check_keys(&config, i, zone, &text, &mut problems);
        }
    }
    if !config.apps_dir.is_dir() {
        problems.push(text.problem(
            "server.apps",
            Severity::Fatal,
            crate::engine::apps::NoAppsDir(config.apps_dir.clone()).to_string(),
        ));
    }
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        problems.push(text.problem(
            "server.data_dir",
            Severity::Fatal,
            format!(
                "server.data_dir: {} is not a directory",
                config.data_dir.display()
            ),
        ));
    }
    if let Err(e) = super::startup::check_api_token(&config) {
        problems.push(text.problem("server.api_token", Severity::Fatal, e.to_string()));
    }
    check_app_settings(&config, &text, &mut problems);
    Report {
        file,
        config: Some(config),
        problems,
    }
}

/// A signed zone's keys: every key file of the zone in its key directory
/// loads (a bad one is fatal, named), and one key signs now; no key at all
/// is a note, as `serve` makes a CSK at first start.
fn check_keys(config: &Config, i: usize, zone: &Zone, text: &Text, out: &mut Vec<Problem>) {
    use crate::dnssec::keydir;
    let key = format!("zone[{i}]");
    let dir = keydir::key_dir(config, zone);
    let loaded = keydir::zone_name(&zone.name).and_then(|name| keydir::load_keys(&dir, &name));
    match loaded {
        Err(e) => out.push(text.problem(
            &key,
            Severity::Fatal,
            format!("{key} ({}): DNSSEC keys: {e}", zone.name),
        )),
        Ok(keys) if keys.is_empty() => out.push(text.problem(
            &key,
            Severity::Note,
            format!(
                "{key} ({}): no DNSSEC key in {}; serve generates a combined signing key (CSK) there at first start",
                zone.name,
                dir.display()
            ),
        )),
        Ok(keys) => {
            let now = keydir::unix_now();
            if !keys.iter().any(|k| k.key.timing.active(now)) {
                out.push(text.problem(
                    &key,
                    Severity::Error,
                    format!(
                        "{key} ({}): no DNSSEC key in {} is active now: answers of the zone cannot be signed",
                        zone.name,
                        dir.display()
                    ),
                ));
            }
        }
    }
}

/// Each configured GeoIP database loads and is of its key's type; the
/// override table loads. A path given on the command line points at no
/// line of the file.
fn check_geo(paths: &GeoPaths, source: &ConfigSource, text: &Text, out: &mut Vec<Problem>) {
    let over = &source.overrides;
    for (kind, path, overridden) in [
        (GeoKind::City, &paths.city, over.geo_city.is_some()),
        (GeoKind::Asn, &paths.asn, over.geo_asn.is_some()),
    ] {
        let Some(path) = path else { continue };
        let key = format!("geo.{kind}");
        let line = if overridden { None } else { text.line(&key) };
        match GeoDb::check_database(path) {
            Err(e) => out.push(Problem::new(
                &text.file,
                line,
                Severity::Fatal,
                e.to_string(),
            )),
            Ok(database_type) if !kind.fits(&database_type) => out.push(Problem::new(
                &text.file,
                line,
                Severity::Error,
                format!(
                    "{key}: {} is a {database_type} database, not a {kind} one: the fields it should give would stay empty",
                    path.display()
                ),
            )),
            Ok(_) => {}
        }
    }
    if let Some(path) = &paths.overrides
        && let Err(e) = GeoDb::check_overrides(path)
    {
        out.push(text.problem("geo.overrides", Severity::Fatal, e.to_string()));
    }
}

/// The app files of the apps directory, by name (as the registry names
/// them); none when the directory cannot be read (reported apart).
fn app_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| Some((app_name(&p)?, p)))
        .collect();
    files.sort();
    files
}

/// `[apps.NAME] providers` and each sidecar's: the sidecar parses and
/// checks, and every provider either names is configured.
fn check_app_settings(config: &Config, text: &Text, out: &mut Vec<Problem>) {
    let known = |p: &str| config.providers.iter().any(|(alias, _)| alias == p);
    for (name, settings) in &config.apps {
        for p in settings.providers.iter().filter(|p| !known(p)) {
            let key = format!("apps.{name}.providers");
            out.push(text.problem(
                &key,
                Severity::Error,
                format!("{key}: provider '{p}' is not configured (no [providers.{p}])"),
            ));
        }
    }
    for (_, path) in app_files(&config.apps_dir) {
        let side = path.with_extension("toml");
        let file = side.display().to_string();
        let sidecar = match crate::config::read_sidecar(&path) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(e) => {
                out.push(Problem::new(
                    &file,
                    None,
                    Severity::Error,
                    format!("cannot read: {}", e.source),
                ));
                continue;
            }
        };
        match sidecar_settings(&sidecar, &side, config) {
            Err(e) => out.push(Problem::new(&file, e.line, Severity::Error, e.message)),
            Ok(settings) => {
                for p in settings.providers.iter().filter(|p| !known(p)) {
                    out.push(Problem::new(
                        &file,
                        lines::key_line(&sidecar, "providers"),
                        Severity::Error,
                        format!(
                            "providers: provider '{p}' is not configured in {} (no [providers.{p}])",
                            config.source
                        ),
                    ));
                }
            }
        }
    }
}

/// Loads every app of the apps directory as the registry does (compile,
/// top level, `init`, under the load budget): a failure with its file and
/// line; a provider it requires that is not configured; the lint warnings
/// ([`lint`]). Returns the apps that loaded, for a summary.
pub fn check_apps(config: &Config, out: &mut Vec<Problem>) -> Vec<LoadedApp> {
    let data = Arc::new(DataSnapshot {
        providers: config.providers.clone(),
        ..DataSnapshot::default()
    });
    let known = |p: &str| config.providers.iter().any(|(alias, _)| alias == p);
    let mut loaded = Vec::new();
    for (name, path) in app_files(&config.apps_dir) {
        let file = path.display().to_string();
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                out.push(Problem::new(
                    &file,
                    None,
                    Severity::Error,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        // Sidecar problems are reported by `check_config`; load as the
        // registry would (with the configuration's settings when the
        // sidecar cannot be read).
        let sidecar = crate::config::read_sidecar(&path).ok().flatten();
        match load_app(&name, &path, &source, sidecar.as_deref(), config, &data, 1) {
            Err(f) if f.file != path => {} // the sidecar's, reported already
            Err(f) => out.push(Problem::new(&file, f.line, Severity::Error, f.message)),
            Ok(app) => {
                for p in app.meta.providers.iter().filter(|p| !known(p)) {
                    let line = source
                        .lines()
                        .position(|l| {
                            l.contains(&format!("'{p}'")) || l.contains(&format!("\"{p}\""))
                        })
                        .map(|i| i as u32 + 1);
                    out.push(Problem::new(
                        &file,
                        line,
                        Severity::Error,
                        format!(
                            "requires provider '{p}', which is not configured in {}",
                            config.source
                        ),
                    ));
                }
                for (line, message) in lint(&source) {
                    out.push(Problem::new(&file, Some(line), Severity::Warning, message));
                }
                loaded.push(app);
            }
        }
    }
    loaded
}

/// Warnings about forms that load but misbehave on Openmix:
/// `request.query_type()` (it is a string property, not a method).
pub fn lint(source: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for (i, line) in (1u32..).zip(source.lines()) {
        if line.contains("query_type()") {
            out.push((
                i,
                "request.query_type is a string property; calling it as query_type() throws a TypeError".to_string(),
            ));
        }
    }
    out
}

/// Connects to the database the stores would open (PostgreSQL at
/// `leaderboard.postgres` or `POSTGRES`, else the SQLite file in the data
/// directory) and asks it one query, within [`STORE_TIMEOUT`]; creates
/// nothing.
pub async fn check_stores(config: &Config, out: &mut Vec<Problem>) {
    let text = Text::of(config);
    let url = config.leaderboard.postgres.as_deref();
    let key = if url.is_some() {
        "leaderboard.postgres"
    } else {
        "server.data_dir"
    };
    let failed =
        match tokio::time::timeout(STORE_TIMEOUT, crate::db::probe(&config.data_dir, url)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", STORE_TIMEOUT.as_secs()),
        };
    out.push(text.problem(
        key,
        Severity::Error,
        format!("{key}: the store is not reachable: {failed}"),
    ));
}
