//! Wake-ups between nodes sharing one PostgreSQL database (LISTEN/NOTIFY).
//!
//! A writer calls [`notify()`] inside its transaction: PostgreSQL delivers
//! the notification at commit, and never for a rolled-back one. Every node
//! runs [`listen`] on the channel and reads the store at once instead of at
//! its next poll. A notification is a shortcut, not the record: those sent
//! while a listener is disconnected are lost, so readers keep polling, and
//! a (re)connected listener wakes its reader once to catch up.
//!
//! The payload names the writer's schema, so nodes of different schemas of
//! one database (parallel tests) do not wake each other.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Wait before reconnecting a listener that failed.
const RETRY: Duration = Duration::from_secs(1);

/// Queues a notification on `channel` for when the transaction on `conn`
/// commits; `detail` travels with the writer's schema.
pub async fn notify(conn: &mut PgConnection, channel: &str, detail: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, json_build_array(current_schema(), $2::text)::text)")
        .bind(channel)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

/// Listens on `channel` until `stop`, calling `wake(Some(detail))` for each
/// notification from this pool's schema and `wake(None)` whenever the
/// listener has (re)connected, as notifications may have been missed.
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    stop: CancellationToken,
    mut wake: impl FnMut(Option<&str>) + Send,
) {
    let mut failing = false;
    loop {
        let attempt = async {
            let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(&pool)
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>((schema, listener))
        };
        let (schema, mut listener) = tokio::select! {
            r = attempt => match r {
                Ok(l) => l,
                Err(e) => {
                    if !failing {
                        tracing::warn!(channel, error = %e, "cannot listen for changes; polling only until it can");
                    }
                    failing = true;
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        };
        if failing {
            tracing::info!(channel, "listening for changes again");
        }
        wake(None);
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.cancelled() => return,
            };
            match next {
                Ok(Some(n)) => {
                    if let Ok((from, detail)) =
                        serde_json::from_str::<(String, String)>(n.payload())
                        && from == schema
                    {
                        wake(Some(&detail));
                    }
                }
                // Lost and reconnected: whatever was sent meanwhile is gone.
                Ok(None) => wake(None),
                Err(e) => {
                    tracing::warn!(channel, error = %e, "listening for changes failed; reconnecting");
                    failing = true;
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.cancelled() => return,
        }
    }
}
