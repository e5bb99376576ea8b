//! Fusion feeds: a provider's data fetched from an HTTP(S) URL or read from
//! a file on an interval, passed to apps as the string received.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DataHub;
use super::settings::FusionFeed;

/// Why a feed body could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The GET or reading its body failed.
    #[error("GET {url}: {error}")]
    Request {
        /// The feed's URL.
        url: String,
        /// Why.
        error: reqwest::Error,
    },
    /// The GET answered with a status other than success.
    #[error("GET {url}: status {status}")]
    Status {
        /// The feed's URL.
        url: String,
        /// The status received.
        status: reqwest::StatusCode,
    },
    /// The feed's file cannot be read.
    #[error("{}: {error}", file.display())]
    Read {
        /// The feed's file.
        file: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Reading the feed's file did not finish within the timeout.
    #[error("{}: read timed out", file.display())]
    ReadTimeout {
        /// The feed's file.
        file: PathBuf,
    },
    /// The feed names nothing to fetch.
    #[error("feed has neither url nor file")]
    NoSource,
}

/// Fetches one feed body.
pub async fn fetch(client: &reqwest::Client, feed: &FusionFeed) -> Result<String, FetchError> {
    let timeout = Duration::from_millis(feed.timeout_ms);
    if let Some(url) = &feed.url {
        let failed = |error| FetchError::Request {
            url: url.clone(),
            error,
        };
        let resp = client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(failed)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status,
            });
        }
        resp.text().await.map_err(failed)
    } else if let Some(file) = &feed.file {
        match tokio::time::timeout(timeout, tokio::fs::read_to_string(file)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(error)) => Err(FetchError::Read {
                file: file.clone(),
                error,
            }),
            Err(_) => Err(FetchError::ReadTimeout { file: file.clone() }),
        }
    } else {
        Err(FetchError::NoSource)
    }
}

/// Runs one feed until `stop`: fetch, publish on change, wait, repeat.
pub async fn run(
    hub: Arc<DataHub>,
    client: reqwest::Client,
    feed: FusionFeed,
    stop: CancellationToken,
) {
    let name = super::Feed::Fusion(feed.provider.clone());
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
                hub.feed_result(&name, Err(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(feed.interval_secs)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
