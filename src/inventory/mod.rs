//! The provider inventory and live traffic shaping (`shared/seeds/004_*`:
//! Backplane's backends, endpoints, routes, `Query`, `Route`, `Shape`,
//! `GenToken`, mapped onto Switchyard).
//!
//! - [`model`]: providers, routes, and the checks every change passes.
//! - [`selector`]: label selectors (`tier=edge,region!=eu`).
//! - [`store`]: the storage seam (implemented by `crate::db`).
//! - [`tokens`]: issued bearer tokens, stored hashed.
//!
//! [`Inventory`] ties them together: providers come from the config
//! (`[providers.<id>]`) with the fields changed through the API laid over
//! them; every change is checked, committed in one transaction, then read
//! back whole and published into the data snapshot, so the next decision
//! sees all of it or none. Nodes sharing a PostgreSQL database republish
//! when its inventory version moves: woken by LISTEN/NOTIFY as the change
//! commits, and polling it every [`POLL_INTERVAL`] in case a notification
//! was lost.

pub mod model;
pub mod selector;
pub mod store;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::data::{DataHub, InventoryPart};
use model::{Provider, Route, Source};
use selector::Selector;
use store::{Change, CommitError, Committed, InventoryStore, LoadError, Stored, TokenRow};

/// How often a node checks the store for changes made elsewhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A route with the providers its selector matches now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRoute {
    /// The stored route.
    pub route: Route,
    /// Matching provider ids, sorted.
    pub providers: Vec<String>,
}

/// The inventory as published: one consistent version.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The store version it was read at.
    pub version: i64,
    /// Every provider, config and API, sorted by id.
    pub providers: Vec<Provider>,
    /// Endpoint → its routes, by id.
    pub routes: BTreeMap<String, Vec<LiveRoute>>,
    /// Endpoint → when its first route was made (unix seconds).
    pub endpoints: BTreeMap<String, f64>,
    /// Issued tokens.
    pub tokens: Vec<TokenRow>,
    /// Their hashes → the fingerprint of the admin token that issued
    /// them, for the bearer check.
    token_hashes: HashMap<String, String>,
}

impl View {
    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }
}

/// Builds the view from the config's providers and what the store holds.
pub fn build_view(config: &[Provider], stored: &Stored) -> View {
    let mut providers: BTreeMap<String, Provider> =
        config.iter().map(|p| (p.id.clone(), p.clone())).collect();
    for (id, fields) in &stored.providers {
        providers
            .entry(id.clone())
            .or_insert_with(|| Provider::bare(id, Source::Api))
            .apply(fields);
    }
    let providers: Vec<Provider> = providers.into_values().collect();
    let mut routes: BTreeMap<String, Vec<LiveRoute>> = BTreeMap::new();
    for (endpoint, route) in &stored.routes {
        let matched = match Selector::parse(&route.selector) {
            Ok(sel) => providers
                .iter()
                .filter(|p| sel.matches(&p.labels))
                .map(|p| p.id.clone())
                .collect(),
            Err(e) => {
                tracing::warn!(endpoint, route = %route.id, error = %e, "stored selector is invalid; the route matches nothing");
                Vec::new()
            }
        };
        routes.entry(endpoint.clone()).or_default().push(LiveRoute {
            route: route.clone(),
            providers: matched,
        });
    }
    View {
        version: stored.version,
        providers,
        routes,
        endpoints: stored.endpoints.iter().cloned().collect(),
        token_hashes: stored
            .tokens
            .iter()
            .map(|t| (t.hash.clone(), t.admin.clone()))
            .collect(),
        tokens: stored.tokens.clone(),
    }
}

/// What apps see of a view (see [`InventoryPart`]).
pub fn snapshot_part(view: &View) -> InventoryPart {
    let mut part = InventoryPart::default();
    for p in &view.providers {
        part.providers
            .push((p.id.clone(), Value::Object(p.fields_json()).to_string()));
        if !p.state.is_up() {
            part.unavailable.insert(p.id.clone());
        }
        if let (Some(lat), Some(lon)) = (p.location.latitude, p.location.longitude) {
            part.locations.insert(p.id.clone(), (lat, lon));
        }
    }
    for (endpoint, routes) in &view.routes {
        let mut routed: Vec<String> = routes.iter().flat_map(|r| r.providers.clone()).collect();
        routed.sort();
        routed.dedup();
        part.routed.insert(endpoint.clone(), routed);
        part.weights.insert(
            endpoint.clone(),
            routes
                .iter()
                .map(|r| {
                    let v = json!({
                        "weight": r.route.weight,
                        "strategy": r.route.strategy,
                        "providers": r.providers,
                    });
                    (r.route.id.clone(), v.to_string())
                })
                .collect(),
        );
    }
    part
}

/// What a bearer token is among the issued ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Issued with the admin token in use, and not revoked.
    Valid,
    /// Issued with an admin token that has since been rotated away.
    Rotated,
    /// Never issued, or revoked.
    Unknown,
}

/// The inventory service: the store, the published view, the publisher.
pub struct Inventory {
    store: Arc<dyn InventoryStore>,
    hub: Arc<DataHub>,
    config: ArcSwap<Vec<Provider>>,
    stored: ArcSwap<Stored>,
    view: ArcSwap<View>,
    /// One reload-and-publish at a time, so an older read never replaces
    /// a newer one (held across the store read: an async mutex).
    publishing: tokio::sync::Mutex<()>,
}

impl Inventory {
    /// Loads the store and publishes the first view. Fails when the store
    /// cannot be read: a node must not serve without its API changes.
    pub async fn open(
        store: Arc<dyn InventoryStore>,
        hub: Arc<DataHub>,
        config: Vec<Provider>,
    ) -> Result<Arc<Inventory>, LoadError> {
        let stored = store.load().await?;
        let view = build_view(&config, &stored);
        hub.set_inventory(snapshot_part(&view));
        tracing::info!(
            version = view.version,
            providers = view.providers.len(),
            routes = view.routes.values().map(Vec::len).sum::<usize>(),
            backend = store.backend(),
            "inventory loaded"
        );
        Ok(Arc::new(Inventory {
            store,
            hub,
            config: ArcSwap::from_pointee(config),
            stored: ArcSwap::from_pointee(stored),
            view: ArcSwap::from_pointee(view),
            publishing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The published view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// The configured providers (for the API: config ones cannot be deleted).
    pub fn config_providers(&self) -> Arc<Vec<Provider>> {
        self.config.load_full()
    }

    /// Replaces the configured providers (SIGHUP) and republishes, in
    /// turn with store refreshes: one running beside it could otherwise
    /// publish a newer store read that this then replaces with the older
    /// one it holds.
    pub async fn set_config(&self, config: Vec<Provider>) {
        let _one = self.publishing.lock().await;
        self.config.store(Arc::new(config));
        self.publish(&self.stored.load_full());
    }

    /// Publishes `stored` over the configured providers; callers hold
    /// `publishing`.
    fn publish(&self, stored: &Stored) {
        let view = build_view(&self.config.load(), stored);
        self.hub.set_inventory(snapshot_part(&view));
        self.view.store(Arc::new(view));
    }

    /// Reads the store and publishes it if its version moved (or `force`).
    pub async fn refresh(&self, force: bool) -> Result<bool, LoadError> {
        let _one = self.publishing.lock().await;
        let stored = self.store.load().await?;
        let current = self.stored.load();
        if !force && stored.version == current.version {
            return Ok(false);
        }
        // Versions only grow: never go back to an older read.
        if stored.version < current.version {
            return Ok(false);
        }
        self.publish(&stored);
        self.stored.store(Arc::new(stored));
        Ok(true)
    }

    /// Commits a change and publishes the result before returning, so the
    /// caller's next decision already sees it.
    pub async fn commit(&self, change: Change) -> Result<Committed, CommitError> {
        let done = self.store.commit(&change).await?;
        if let Err(e) = self.refresh(false).await {
            // Committed: the poller will publish it once the store answers.
            tracing::warn!(error = %e, "inventory committed but not yet republished");
        }
        Ok(done)
    }

    /// What `secret` is among the issued tokens, given the fingerprint of
    /// the admin token in use ([`tokens::admin_fingerprint`]).
    pub fn check_token(&self, secret: &str, admin: &str) -> TokenCheck {
        match self.view.load().token_hashes.get(&tokens::hash(secret)) {
            None => TokenCheck::Unknown,
            Some(issuer) if issuer == admin => TokenCheck::Valid,
            Some(_) => TokenCheck::Rotated,
        }
    }

    /// Binds the tokens issued before tokens were bound to an admin token
    /// to the one in use (fingerprint `admin`), once, at start: they keep
    /// working through the upgrade and stop at the next rotation.
    pub async fn bind_unbound_tokens(&self, admin: &str) -> Result<(), CommitError> {
        let unbound = self
            .view
            .load()
            .tokens
            .iter()
            .filter(|t| t.admin.is_empty())
            .count();
        if unbound == 0 {
            return Ok(());
        }
        self.commit(Change::BindUnboundTokens {
            admin: admin.to_string(),
        })
        .await?;
        tracing::info!(
            tokens = unbound,
            "issued API tokens from before tokens were bound to the admin token are now bound to the current one; rotating it revokes them"
        );
        Ok(())
    }

    /// Until `stop`, republishes when the store's version moves (changes
    /// made through another node): at once when the store wakes it
    /// (PostgreSQL LISTEN/NOTIFY), and in any case within [`POLL_INTERVAL`],
    /// the safety net for lost notifications.
    pub async fn run_poller(self: Arc<Self>, stop: CancellationToken) {
        let wake = Arc::new(tokio::sync::Notify::new());
        {
            let (store, wake, stop) = (self.store.clone(), wake.clone(), stop.clone());
            tokio::spawn(async move { store.listen(wake, stop).await });
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = wake.notified() => {}
                _ = stop.cancelled() => return,
            }
            let seen = self.stored.load().version;
            match self.store.version().await {
                Ok(v) if v == seen => failing = false,
                Ok(v) => match self.refresh(false).await {
                    Ok(true) => {
                        failing = false;
                        tracing::info!(version = v, "inventory changed in the store; republished");
                    }
                    Ok(false) => failing = false,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "inventory reload failed; keeping the current view");
                        }
                        failing = true;
                    }
                },
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "inventory version check failed; keeping the current view");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// The configured providers of a config, checked (errors name the key).
pub fn config_providers(
    providers: &[(String, crate::openmix::ProviderInfo)],
) -> Result<Vec<Provider>, model::Invalid> {
    providers
        .iter()
        .map(|(id, info)| model::from_config(id, info))
        .collect()
}

/// Unavailable provider ids of a view (for tests and logs).
pub fn unavailable(view: &View) -> BTreeSet<String> {
    view.providers
        .iter()
        .filter(|p| !p.state.is_up())
        .map(|p| p.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openmix::DataSnapshot;

    fn provider(id: &str, labels: &[(&str, &str)]) -> Provider {
        let mut p = Provider::bare(id, Source::Config);
        p.host = Some(format!("{id}.example.net"));
        p.labels = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        p
    }

    fn stored() -> Stored {
        let fields = |v: Value| v.as_object().unwrap().clone();
        Stored {
            version: 4,
            providers: vec![
                ("a".into(), fields(json!({"state": "draining"}))),
                (
                    "x".into(),
                    fields(json!({"host": "192.0.2.1", "labels": {"tier": "edge"},
                                  "location": {"latitude": 1.0, "longitude": 2.0}})),
                ),
            ],
            endpoints: vec![("app".into(), 1.0)],
            routes: vec![(
                "app".into(),
                Route {
                    id: "route000".into(),
                    selector: "tier=edge".into(),
                    weight: 80,
                    strategy: "random".into(),
                    created_at: 1.0,
                },
            )],
            tokens: Vec::new(),
        }
    }

    #[test]
    fn view_lays_the_store_over_the_config() {
        let config = vec![
            provider("a", &[("tier", "edge")]),
            provider("b", &[("tier", "origin")]),
        ];
        let view = build_view(&config, &stored());
        let ids: Vec<&str> = view.providers.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "x"]);
        let a = view.provider("a").unwrap();
        assert_eq!(a.state, model::ProviderState::Draining);
        assert_eq!(
            a.host.as_deref(),
            Some("a.example.net"),
            "config fields stay"
        );
        assert_eq!(view.provider("x").unwrap().source, Source::Api);
        assert_eq!(view.routes["app"][0].providers, ["a", "x"]);
        assert_eq!(unavailable(&view), BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn unavailable_providers_read_as_avail_zero() {
        let config = vec![provider("a", &[("tier", "edge")]), provider("b", &[])];
        let view = build_view(&config, &stored());
        let mut first = DataSnapshot::default();
        first.probes.insert(
            "avail".into(),
            vec![("a".into(), Some(99.0)), ("b".into(), Some(98.0))],
        );
        first.sonar = vec![("a".into(), "{\"avail\":1}".into())];
        let snap = Arc::new(ArcSwap::from_pointee(first));
        let hub = DataHub::new(snap.clone(), Duration::from_secs(60));
        hub.set_sonar("a", true);
        hub.set_inventory(snapshot_part(&view));
        let s = snap.load();
        assert_eq!(
            s.probes["avail"],
            vec![("a".to_string(), Some(0.0)), ("b".to_string(), Some(98.0))]
        );
        assert!(
            s.sonar
                .contains(&("a".to_string(), "{\"avail\":0}".to_string()))
        );
        assert_eq!(s.location("x"), Some((1.0, 2.0)));
        let w: Value = serde_json::from_str(&s.weights["app"][0].1).unwrap();
        assert_eq!(
            w,
            json!({"weight": 80, "strategy": "random", "providers": ["a", "x"]})
        );
        let inv: Value =
            serde_json::from_str(&s.inventory.iter().find(|(k, _)| k == "a").unwrap().1).unwrap();
        assert_eq!(inv["state"], "draining");
        // Back up: the feeds' own values return.
        let mut up = stored();
        up.providers.remove(0);
        hub.set_inventory(snapshot_part(&build_view(&config, &up)));
        let s = snap.load();
        assert_eq!(s.probes["avail"][0], ("a".to_string(), Some(99.0)));
        assert!(
            s.sonar
                .contains(&("a".to_string(), "{\"avail\":1}".to_string()))
        );
    }
}
