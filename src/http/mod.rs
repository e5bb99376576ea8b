//! The HTTP front ends on hyper 1: the public decision endpoint
//! ([`decision`]) and the operations listener ([`ops`]).
//!
//! Both share the accept loop here: a connection limit (a semaphore; past
//! it a client gets a short 503 and the connection is closed), a header
//! read timeout for slow clients, HTTP/1.1 and h2c on one port, and
//! graceful shutdown. Every error a client can cause is a 4xx with a JSON
//! `{"error": "..."}` body, built by [`json_error`].

pub mod auth;
pub mod decision;
pub mod inventory;
pub mod ops;
pub mod reports;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
}

/// Serves `listener` until `shutdown`, calling `handle(request, peer)` for
/// every request.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // h2 connections that go quiet are closed by keep-alive pings.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: a short, well-formed refusal, then close.
            tokio::spawn(async move {
                let mut stream = stream;
                let body = br#"{"error":"too many connections"}"#;
                let head = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let header_timeout = limits.header_timeout;
        let service = service_fn(move |req| {
            let handle = handle.clone();
            async move { Ok::<_, Infallible>(handle(req, peer).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timeout starts only once it reads HTTP/1
            // headers; before that (choosing HTTP/1 or h2) it would wait
            // forever. A client must send its first bytes in time.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!(%peer, "HTTP client sent nothing in time; closing");
                    drop(permit);
                    return;
                }
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
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
