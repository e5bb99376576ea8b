//! Sonar: per-provider health checks (HTTP GET with an expected status, or a
//! TCP connect), with rise/fall thresholds so one failure does not flap.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::DataHub;
use super::settings::SonarCheck;

/// Why a health check found its provider down.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The GET failed (connection, TLS, timeout).
    #[error("GET {url}: {error}")]
    Request {
        /// The URL checked.
        url: String,
        /// Why.
        error: reqwest::Error,
    },
    /// The GET answered with another status than the one expected.
    #[error("GET {url}: status {status}, expected {expected}")]
    Status {
        /// The URL checked.
        url: String,
        /// The status received.
        status: u16,
        /// The status expected.
        expected: u16,
    },
    /// The TCP connect failed.
    #[error("connect {addr}: {error}")]
    Connect {
        /// The address checked.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The TCP connect did not finish within the timeout.
    #[error("connect {addr}: timed out")]
    ConnectTimeout {
        /// The address checked.
        addr: String,
    },
    /// The check names nothing to check.
    #[error("check has neither url nor tcp")]
    NoTarget,
}

/// Runs one check once: `Ok` when the provider answered as expected.
pub async fn probe(client: &reqwest::Client, check: &SonarCheck) -> Result<(), CheckError> {
    let timeout = Duration::from_millis(check.timeout_ms);
    if let Some(url) = &check.url {
        let resp = client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| CheckError::Request {
                url: url.clone(),
                error,
            })?;
        if resp.status().as_u16() != check.expect_status {
            return Err(CheckError::Status {
                url: url.clone(),
                status: resp.status().as_u16(),
                expected: check.expect_status,
            });
        }
        Ok(())
    } else if let Some(addr) = &check.tcp {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(CheckError::Connect {
                addr: addr.clone(),
                error,
            }),
            Err(_) => Err(CheckError::ConnectTimeout { addr: addr.clone() }),
        }
    } else {
        Err(CheckError::NoTarget)
    }
}

/// The rise/fall state machine of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    up: Option<bool>,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Verdict {
    /// No verdict yet: the first result decides, thresholds apply after.
    pub fn new(rise: u32, fall: u32) -> Verdict {
        Verdict {
            up: None,
            streak: 0,
            rise,
            fall,
        }
    }

    /// Feeds one result; returns the verdict.
    pub fn observe(&mut self, ok: bool) -> bool {
        match self.up {
            None => {
                self.up = Some(ok);
                self.streak = 0;
            }
            Some(up) if up == ok => self.streak = 0,
            Some(up) => {
                self.streak += 1;
                let needed = if up { self.fall } else { self.rise };
                if self.streak >= needed {
                    self.up = Some(ok);
                    self.streak = 0;
                }
            }
        }
        self.up.unwrap_or(ok)
    }
}

/// Runs one check until `stop`.
pub async fn run(
    hub: Arc<DataHub>,
    client: reqwest::Client,
    check: SonarCheck,
    stop: CancellationToken,
) {
    let feed = super::Feed::Sonar(check.provider.clone());
    hub.register_feed(&feed);
    let mut verdict = Verdict::new(check.rise, check.fall);
    loop {
        let result = probe(&client, &check).await;
        let up = verdict.observe(result.is_ok());
        hub.sonar_checked(&check.provider, result.is_ok(), up);
        // The check itself ran: the feed is fresh whatever it found.
        hub.feed_result(&feed, Ok(()));
        if let Err(e) = result {
            tracing::debug!(check = %feed, error = %e, up, "sonar check failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(check.interval_secs)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn rise_and_fall() {
        let mut v = Verdict::new(2, 3);
        assert!(v.observe(true));
        assert!(
            v.observe(false) && v.observe(false),
            "two failures are not enough with fall 3"
        );
        assert!(!v.observe(false), "the third failure marks it down");
        assert!(!v.observe(true), "one success is not enough with rise 2");
        assert!(v.observe(true));
        assert!(v.observe(false), "a single failure does not flap");
        assert!(v.observe(true));
    }
}
