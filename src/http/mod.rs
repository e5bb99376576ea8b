//! The HTTP front ends on hyper 1: the public decision endpoint
//! ([`decision`]) and the operations listener ([`ops`]).
//!
//! Both share the accept loop here: a connection limit (a semaphore; past
//! it a client gets a short 503 and the connection is closed, except for a
//! small reserve that still answers the listener's reserved paths), a
//! bound per client network ([`crate::net::clients`]), a header read timeout for
//! slow clients, an idle timeout for every protocol, HTTP/1.1 and h2c on
//! one port, and graceful shutdown. Every error a client can cause is a 4xx with a JSON
//! `{"error": "..."}` body, built by [`json_error`].

pub mod apps;
pub mod auth;
pub mod body;
pub mod decision;
pub mod decision_log;
pub mod explain;
pub mod health;
pub mod inventory;
pub mod ops;
pub mod pprof;
pub mod reports;
pub mod shadow;
pub mod stats;
pub mod vars;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counters, Listener};
use crate::net::clients::{ClientSlots, PerClient};

/// A response with a fully buffered body.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON error: `{"error": message}`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A plain-text response.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Raises a flag while an accept loop runs and lowers it when the loop's
/// task ends, by return or by panic: `/healthcheck` reads it.
pub struct ServingFlag(Arc<std::sync::atomic::AtomicBool>);

impl ServingFlag {
    /// Raises `flag` until the returned guard is dropped.
    pub fn raise(flag: Arc<std::sync::atomic::AtomicBool>) -> ServingFlag {
        flag.store(true, std::sync::atomic::Ordering::Release);
        ServingFlag(flag)
    }
}

impl Drop for ServingFlag {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to receive request headers.
    pub header_timeout: Duration,
    /// Time a connection may stay open with no request in flight, whatever
    /// its protocol (HTTP/1.1 keep-alive, h2 and h2c, which keep-alive
    /// pings alone would keep open); a tenth of it once more than half of
    /// `max_connections` are open.
    pub idle_timeout: Duration,
    /// What one client network may hold.
    pub per_client: PerClient,
    /// Time a request may take from its headers to its response, body
    /// included (a body trickled byte by byte holds its connection no
    /// longer); profiles, which take the seconds they are asked for, are
    /// exempt.
    pub request_timeout: Duration,
}

/// Connections past `max_connections` that are still served, for the paths
/// a listener reserves (the operations listener's `/healthcheck` and
/// `/metrics`), so a load balancer and a scraper see a full node as healthy
/// while it is held busy.
const RESERVE: usize = 16;

/// When a connection last finished a request, and how many it has in
/// flight: what its idle timer reads.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the connection opened.
    last: AtomicU64,
    opened: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// How long the connection has been idle (zero while a request runs).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last.load(Ordering::Acquire)),
        )
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A short, well-formed refusal on a raw stream, then close.
async fn refuse(mut stream: tokio::net::TcpStream, error: &str) {
    let body = serde_json::json!({ "error": error }).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves `listener` until `shutdown`, calling `handle(request, peer)` for
/// every request. `reserved` lists the paths still answered on a reserve
/// connection when every regular one is taken. Every response is counted
/// in `counters` under `name`, the ones this loop sends itself included.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    reserved: &'static [&'static str],
    shutdown: CancellationToken,
    (counters, name): (Arc<Counters>, Listener),
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(if reserved.is_empty() {
        0
    } else {
        RESERVE
    }));
    let clients = ClientSlots::new(limits.per_client);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // h2 connections whose peer vanished are closed by keep-alive pings;
    // ones whose peer only answers pings, by the idle timer below.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    // A reserve connection answers one request and closes.
    let mut reserve_builder = builder.clone();
    reserve_builder.http1().keep_alive(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(client) = clients.take(peer.ip()) else {
            tracing::debug!(%peer, "HTTP client network holds its most connections; refused");
            tokio::spawn(refuse(stream, "too many connections from your network"));
            continue;
        };
        // A regular slot serves every path; a reserve slot only the
        // reserved paths, one request, then it closes.
        let (permit, reserve_only) = match permits.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    tokio::spawn(refuse(stream, "too many connections"));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            opened: Instant::now(),
        });
        let handle = handle.clone();
        let tracked = activity.clone();
        let counters = counters.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let handle = handle.clone();
            let counters = counters.clone();
            let in_flight = InFlight::start(&tracked);
            let path = req.uri().path();
            let allowed = !reserve_only || reserved.contains(&path);
            let timed = !path.starts_with("/debug/pprof/");
            async move {
                let _in_flight = in_flight;
                let response = if !allowed {
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "too many connections")
                } else if !timed {
                    handle(req, peer).await
                } else {
                    match tokio::time::timeout(limits.request_timeout, handle(req, peer)).await {
                        Ok(r) => r,
                        Err(_) => json_error(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request took longer than {} ms (a body must arrive in time)",
                                limits.request_timeout.as_millis()
                            ),
                        ),
                    }
                };
                counters.http_response(name, response.status().as_u16());
                Ok::<_, Infallible>(response)
            }
        });
        let builder = if reserve_only {
            reserve_builder.clone()
        } else {
            builder.clone()
        };
        let shutdown = shutdown.clone();
        let permits = permits.clone();
        connections.spawn(async move {
            let _client = client;
            let _permit = permit;
            // hyper's header timeout starts only once it reads HTTP/1
            // headers; before that (choosing HTTP/1 or h2) it would wait
            // forever. A client must send its first bytes in time.
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!(%peer, "HTTP client sent nothing in time; closing");
                    return;
                }
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let busy =
                |permits: &Semaphore| permits.available_permits() < limits.max_connections / 2;
            let ended = loop {
                let idle = if busy(&permits) {
                    limits.idle_timeout / 10
                } else {
                    limits.idle_timeout
                };
                let wait = idle
                    .saturating_sub(activity.idle_for())
                    .max(Duration::from_millis(10));
                tokio::select! {
                    r = conn.as_mut() => break Some(r),
                    _ = shutdown.cancelled() => break None,
                    _ = tokio::time::sleep(wait) => {
                        if activity.idle_for() >= idle {
                            tracing::debug!(%peer, "HTTP connection idle; closing");
                            break None;
                        }
                    }
                }
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    // Finish what is in flight, then close; a peer that
                    // does not let go is dropped.
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Decoded query-string pairs of a request.
pub fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}
