//! Configuration: a serde mirror of `switchyard.toml`, then checks.
//!
//! Two stages, as ripgrep does with its flags: [`RawConfig`] is what the TOML
//! says, [`Config`] is validated and ready (addresses parsed, zones checked,
//! fallbacks classified). Every error names the file and the key. With no
//! file, the built-in defaults are `examples/switchyard.toml`, compiled in.
//!
//! Each section has its file (`server`, `zones`, `geo`, `budget`, `apps`,
//! `providers`, `feeds`, `leaderboard`, `reports`, `rrl`, `cookies`, `log`) with
//! its raw and checked forms; [`Config::parse`] runs them in order. The
//! environment variables that win over the file are read once, in `env`;
//! `source` knows the file and the command-line overrides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::data::settings::{FusionFeed, Leaderboard, SonarCheck};
use crate::openmix::{Budget, ProviderInfo};

mod apps;
mod budget;
mod cookies;
mod env;
mod feeds;
mod geo;
mod leaderboard;
pub mod lines;
mod log;
mod providers;
mod reports;
mod rrl;
mod server;
mod source;
mod zones;

pub use apps::{
    AppSettings, AppSettingsError, RawAppSettings, SidecarError, StringOrList, read_sidecar,
};
pub use cookies::{Cookies, SecretError, parse_secret};
pub use log::LogConfig;
pub use reports::{ReportsConfig, hostname};
pub use rrl::{RRL_MAX_DEBT, Rrl};
pub use server::TokenSetting;
pub use source::{ConfigSource, Overrides};
pub use zones::{Dnssec, DnssecAlgorithm, Soa, StaticRecord, Zone, fqdn};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../examples/switchyard.toml");

/// What [`Config::source`] says when no file is given.
const BUILT_IN: &str = "<built-in defaults>";

/// Why a configuration is refused: every problem its sections have (a
/// file that does not parse has one), naming the file and key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file (or `<built-in defaults>`).
    pub file: String,
    /// What is wrong, one entry per problem, in the order of the sections.
    pub problems: Vec<KeyProblem>,
}

/// A configuration checked as far as it goes: what `switchyard check`
/// reads, to check the files and apps a configuration names despite its
/// problems. A section with a problem stops the configuration (`None`),
/// but for the parts that can be left out: a zone or static record,
/// `[apps.NAME]` settings, a feed.
#[derive(Debug)]
pub struct Partial {
    /// The configuration, without the parts that have problems.
    pub config: Option<Config>,
    /// Every problem (none: the configuration is whole).
    pub error: ConfigError,
}

impl Partial {
    /// The configuration when it has no problem, else every problem.
    pub fn into_result(self) -> Result<Config, ConfigError> {
        match self.config {
            Some(config) if self.error.problems.is_empty() => Ok(config),
            _ => Err(self.error),
        }
    }
}

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyProblem {
    /// The line of the key (or of the TOML error), when known.
    pub line: Option<u32>,
    /// What is wrong, starting with the key.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    /// One line per problem: `FILE: key: what`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", self.file, p.message)?;
        }
        Ok(())
    }
}

/// `switchyard.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    geo: geo::RawGeo,
    #[serde(default)]
    budget: budget::RawBudget,
    #[serde(default, rename = "zone")]
    zones: Vec<zones::RawZone>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderInfo>,
    #[serde(default)]
    apps: BTreeMap<String, RawAppSettings>,
    #[serde(default)]
    data: feeds::RawData,
    #[serde(default)]
    fusion: Vec<FusionFeed>,
    #[serde(default)]
    sonar: Vec<SonarCheck>,
    #[serde(default)]
    leaderboard: leaderboard::RawLeaderboard,
    #[serde(default)]
    reports: reports::RawReports,
    #[serde(default)]
    rrl: rrl::RawRrl,
    #[serde(default)]
    cookies: cookies::RawCookies,
    #[serde(default)]
    log: log::RawLog,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub source: String,
    /// DNS listen addresses (UDP and TCP each).
    pub dns: Vec<SocketAddr>,
    /// Public HTTP decision endpoint.
    pub http: SocketAddr,
    /// Operations and `/api/*`.
    pub admin: SocketAddr,
    /// Apps directory.
    pub apps_dir: PathBuf,
    /// Data directory (SQLite, quarantine slots).
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest UDP response payload offered.
    pub max_udp_payload: u16,
    /// The admin bearer token of `/api/*` (the API is off without one).
    /// `None` before `serve` resolves an unset one ([`TokenSetting::Unset`])
    /// to the generated token in `data_dir/api_token`.
    pub api_token: Option<String>,
    /// How the file set `server.api_token`.
    pub api_token_setting: TokenSetting,
    /// Every `GET /api/*` needs a bearer token too
    /// (`server.admin_reads_need_token`, default off).
    pub admin_reads_need_token: bool,
    /// Most open HTTP connections per listener.
    pub max_connections: usize,
    /// What one client network may hold open on each listener that keeps
    /// connections (both HTTP listeners, DNS over TCP).
    pub per_client: crate::net::clients::PerClient,
    /// How long an HTTP connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How long one HTTP request may take, body included.
    pub request_timeout: Duration,
    /// Largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Address-space cap of the serving process, in bytes (the supervisor
    /// restarts it when a runaway hits the cap).
    pub memory_limit: Option<u64>,
    /// How long a JS worker may stay in one decision before the watchdog
    /// answers its query from the fallback and retires the thread.
    pub hard_limit: Duration,
    /// Reuse decisions of apps proven stateless for requests that read the
    /// same values (`server.memoise`, default on; see `openmix::memo`).
    pub memoise: bool,
    /// GeoIP City database.
    pub geo_city: Option<PathBuf>,
    /// GeoIP ASN database.
    pub geo_asn: Option<PathBuf>,
    /// Code override table.
    pub geo_overrides: Option<PathBuf>,
    /// Default budgets.
    pub budget: Budget,
    /// Zones served.
    pub zones: Vec<Zone>,
    /// Configured providers, in name order.
    pub providers: Vec<(String, ProviderInfo)>,
    /// The same providers as the inventory reads them (host, labels,
    /// location, state, load), checked.
    pub inventory_providers: Vec<crate::inventory::model::Provider>,
    /// `[apps.NAME]` settings (a sidecar file overrides them).
    pub apps: BTreeMap<String, RawAppSettings>,
    /// Static probe values (JSON file in the Openmix `getProbe` shape).
    pub static_probes: Option<PathBuf>,
    /// Age after which a feed without a fresh value is reported stale.
    pub stale_after: Duration,
    /// Fusion feeds.
    pub fusion: Vec<FusionFeed>,
    /// Sonar checks.
    pub sonar: Vec<SonarCheck>,
    /// The leaderboard stats store and probe refresher.
    pub leaderboard: Leaderboard,
    /// Decision reports and the fleet.
    pub reports: ReportsConfig,
    /// Response rate limiting.
    pub rrl: Rrl,
    /// DNS Cookies.
    pub cookies: Cookies,
    /// The decision log.
    pub log: LogConfig,
}

impl Config {
    /// Loads `path`, or the built-in defaults when `path` is `None`, and
    /// applies the command-line overrides.
    pub fn load(path: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
        Self::load_partial(path, over).into_result()
    }

    /// [`Config::load`], going as far as it can ([`Partial`]).
    pub fn load_partial(path: Option<&Path>, over: &Overrides) -> Partial {
        match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => Self::parse_partial(&text, &p.display().to_string(), over),
                Err(e) => Partial {
                    config: None,
                    error: ConfigError {
                        file: p.display().to_string(),
                        problems: vec![KeyProblem {
                            line: None,
                            message: format!("cannot read: {e}"),
                        }],
                    },
                },
            },
            None => Self::parse_partial(DEFAULT_CONFIG, BUILT_IN, over),
        }
    }

    /// Parses and checks configuration text; `source` names it in errors.
    /// Every section is checked, so that the error lists each problem, not
    /// only the first (a file that does not parse as TOML has one).
    pub fn parse(text: &str, source: &str, over: &Overrides) -> Result<Config, ConfigError> {
        Self::parse_partial(text, source, over).into_result()
    }

    /// [`Config::parse`], going as far as it can ([`Partial`]).
    /// The environment variables that win over the file are read here, once.
    pub fn parse_partial(text: &str, source: &str, over: &Overrides) -> Partial {
        let refuse = |problems| ConfigError {
            file: source.to_string(),
            problems,
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let e: toml::de::Error = e;
                return Partial {
                    config: None,
                    error: refuse(vec![KeyProblem {
                        line: e.span().map(|s| lines::line_at(text, s.start)),
                        message: e.message().trim().to_string(),
                    }]),
                };
            }
        };
        let mut errors: Vec<String> = Vec::new();
        fn keep<T>(errors: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
            r.map_err(|e| errors.push(e)).ok()
        }
        let env = env::Env::read();
        let server = keep(&mut errors, server::check(&raw.server, over));
        let budget = keep(&mut errors, budget::check(&raw.budget));
        let (zones, zone_errors) = zones::check(raw.zones, over.zone.as_deref());
        errors.extend(zone_errors);
        if let Some(budget) = budget {
            for (name, settings) in &raw.apps {
                keep(
                    &mut errors,
                    settings
                        .check(budget, &format!("apps.{name}"))
                        .map_err(|e| e.to_string()),
                );
            }
        }
        let providers = keep(&mut errors, providers::check(&raw.providers));
        keep(&mut errors, feeds::check_fusion(&raw.fusion));
        keep(&mut errors, feeds::check_sonar(&raw.sonar));
        let leaderboard = keep(&mut errors, leaderboard::check(raw.leaderboard, &env));
        let reports = keep(&mut errors, reports::check(raw.reports, &env));
        let per_client = keep(&mut errors, server::per_client(&raw.server));
        let rrl = keep(&mut errors, rrl::check(raw.rrl));
        let cookies = keep(&mut errors, cookies::check(raw.cookies));
        let log = keep(&mut errors, log::check(raw.log));
        let geo = geo::check(raw.geo, over);
        let data = feeds::check_data(raw.data);
        let problems = errors
            .into_iter()
            .map(|message| KeyProblem {
                line: lines::message_key(&message).and_then(|k| lines::key_line(text, k)),
                message,
            })
            .collect();
        let error = refuse(problems);
        let (
            Some(server),
            Some(budget),
            Some(providers),
            Some(leaderboard),
            Some(reports),
            Some(per_client),
            Some(rrl),
            Some(cookies),
            Some(log),
        ) = (
            server,
            budget,
            providers,
            leaderboard,
            reports,
            per_client,
            rrl,
            cookies,
            log,
        )
        else {
            return Partial {
                config: None,
                error,
            };
        };
        let config = Config {
            source: source.to_string(),
            dns: server.dns,
            http: server.http,
            admin: server.admin,
            apps_dir: server.apps_dir,
            data_dir: server.data_dir,
            trusted_proxies: server.trusted_proxies,
            max_udp_payload: server.max_udp_payload,
            api_token: server.api_token,
            api_token_setting: server.api_token_setting,
            admin_reads_need_token: server.admin_reads_need_token,
            max_connections: server.max_connections,
            per_client,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
            max_body_bytes: server.max_body_bytes,
            header_timeout: server.header_timeout,
            memory_limit: server.memory_limit,
            hard_limit: server.hard_limit,
            memoise: server.memoise,
            geo_city: geo.city,
            geo_asn: geo.asn,
            geo_overrides: geo.overrides,
            budget,
            zones,
            providers: providers.list,
            inventory_providers: providers.inventory,
            apps: raw.apps,
            static_probes: data.static_probes,
            stale_after: data.stale_after,
            fusion: raw.fusion,
            sonar: raw.sonar,
            leaderboard,
            reports,
            rrl,
            cookies,
            log,
        };
        Partial {
            config: Some(config),
            error,
        }
    }

    /// The text this configuration was read from, read again (empty when
    /// the file is gone): where its problems point at lines.
    pub fn source_text(&self) -> String {
        if self.source == BUILT_IN {
            DEFAULT_CONFIG.to_string()
        } else {
            std::fs::read_to_string(&self.source).unwrap_or_default()
        }
    }

    /// Settings for app `name` from `[apps.NAME]` (defaults when absent).
    pub fn app_settings(&self, name: &str) -> AppSettings {
        self.apps
            .get(name)
            .and_then(|s| s.check(self.budget, name).ok())
            .unwrap_or_else(|| AppSettings {
                budget: self.budget,
                ..AppSettings::default()
            })
    }

    /// The default TTL of the first zone (used by `decide`).
    pub fn default_ttl(&self) -> u32 {
        self.zones.first().map_or(20, |z| z.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.zones[0].name, "switchyard.test.");
        assert_eq!(c.dns, vec!["127.0.0.1:5353".parse().unwrap()]);
    }

    #[test]
    fn every_problem_is_listed_with_its_line_and_the_rest_still_checks() {
        let text = "[server]\nhttp = 'nope'\n[[zone]]\nname = 'a.test'\nrecords = [\n  { name = 'w', type = 'A', value = '1.2.3' },\n  { name = 'v', type = 'A', value = '192.0.2.1' },\n  { name = 'x', type = 'SRV', value = 'y' },\n]\n";
        let e = Config::parse(text, "x.toml", &Overrides::default()).unwrap_err();
        let lines: Vec<(Option<u32>, &str)> = e
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (Some(2), "server.http: 'nope' is not an IP:port address"),
                (
                    Some(6),
                    "zone[0].records[0].value: '1.2.3' is not an IPv4 address"
                ),
                (
                    Some(8),
                    "zone[0].records[2].type: 'SRV' is not one of A, AAAA, CNAME, TXT, MX"
                ),
            ]
        );
        // Without the server error the configuration is there, minus the bad
        // records, for the rest of its checks.
        let text = text.replacen("http = 'nope'", "", 1);
        let partial = Config::parse_partial(&text, "x.toml", &Overrides::default());
        assert_eq!(partial.error.problems.len(), 2);
        let config = partial.config.expect("a configuration");
        assert_eq!(config.zones[0].records.len(), 1);
        assert_eq!(config.zones[0].records[0].value, "192.0.2.1");
    }

    #[test]
    fn dnssec_is_a_switch_or_a_table() {
        let parse = |t: &str| Config::parse(t, "d.toml", &Overrides::default());
        let c = parse("[[zone]]\nname = 'a.test'\ndnssec = true\n").unwrap();
        assert_eq!(c.zones[0].dnssec, Some(Dnssec::default()));
        let c = parse("[[zone]]\nname = 'a.test'\ndnssec = false\n").unwrap();
        assert_eq!(c.zones[0].dnssec, None);
        let c = parse(
            "[[zone]]\nname = 'a.test'\n[zone.dnssec]\nalgorithm = 'ED25519'\nkeys = '/k'\nsignature_validity_days = 21\nrefresh_days = 3\n",
        )
        .unwrap();
        let d = c.zones[0].dnssec.clone().unwrap();
        assert_eq!(d.algorithm, DnssecAlgorithm::Ed25519);
        assert_eq!(d.keys.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!((d.signature_validity_days, d.refresh_days), (21, 3));
        for (bad, says) in [
            ("algorithm = 'rsasha1'", "zone[0].dnssec.algorithm"),
            ("refresh_days = 0", "zone[0].dnssec.refresh_days"),
            (
                "signature_validity_days = 10\nrefresh_days = 7",
                "at least twice refresh_days",
            ),
        ] {
            let e = parse(&format!(
                "[[zone]]\nname = 'a.test'\n[zone.dnssec]\n{bad}\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_key() {
        let e = Config::parse("[server]\nhttp = 'nope'\n", "x.toml", &Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("x.toml: server.http"), "{e}");
        let e = Config::parse(
            "[[zone]]\nname='a.test'\n[[zone.records]]\nname='w'\ntype='A'\nvalue='1.2.3'\n",
            "y.toml",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("zone[0].records[0].value"), "{e}");
        let e = Config::parse("bogus = 1\n", "z.toml", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse(
            "[providers.cdn_x]\ncname = 'not a host!'\n",
            "p.toml",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("p.toml: providers.cdn_x.cname"),
            "{e}"
        );
    }
}
