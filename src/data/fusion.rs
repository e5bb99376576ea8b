//! Fusion feeds: a provider's data fetched from an HTTP(S) URL or read from
//! a file on an interval, passed to apps as the string received.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DataHub;
use super::settings::FusionFeed;

/// Fetches one feed body.
pub async fn fetch(client: &reqwest::Client, feed: &FusionFeed) -> Result<String, String> {
    let timeout = Duration::from_millis(feed.timeout_ms);
    if let Some(url) = &feed.url {
        let resp = client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: status {status}"));
        }
        resp.text().await.map_err(|e| format!("GET {url}: {e}"))
    } else if let Some(file) = &feed.file {
        match tokio::time::timeout(timeout, tokio::fs::read_to_string(file)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("{}: {e}", file.display())),
            Err(_) => Err(format!("{}: read timed out", file.display())),
        }
    } else {
        Err("feed has neither url nor file".into())
    }
}

/// Runs one feed until `stop`: fetch, publish on change, wait, repeat.
pub async fn run(
    hub: Arc<DataHub>,
    client: reqwest::Client,
    feed: FusionFeed,
    stop: CancellationToken,
) {
    let name = format!("fusion {}", feed.provider);
    hub.register_feed(&name);
    loop {
        match fetch(&client, &feed).await {
            Ok(body) => match hub.set_fusion(&feed.provider, body) {
                Ok(()) => hub.feed_result(&name, Ok(())),
                Err(e) => {
                    tracing::warn!(feed = %name, error = %e, "fusion value refused; keeping the last value");
                    hub.feed_result(&name, Err(e.to_string()));
                }
            },
            Err(e) => {
                tracing::warn!(feed = %name, error = %e, "fusion fetch failed; keeping the last value");
                hub.feed_result(&name, Err(e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(feed.interval_secs)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
