//! Reading a request body within a size limit: the one reader every
//! handler that takes a body uses, so each refuses an oversized body the
//! same way — a declared `Content-Length` over the limit before reading,
//! a chunked body as soon as it passes it — and never buffers more.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};

use super::{HttpResponse, json_error};

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Declared or sent larger than the limit (413).
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The client's stream failed while sending it (400).
    #[error("could not read the request body")]
    Unreadable,
    /// Not the JSON the endpoint takes (400).
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
}

impl BodyError {
    /// The status a client gets for this.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable | BodyError::NotJson(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON error reply.
    pub fn response(&self) -> HttpResponse {
        json_error(self.status(), self.to_string())
    }
}

/// Whether the request declares a body longer than `limit`.
pub fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads `body` whole, at most `limit` bytes.
pub async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared_too_large(headers, limit) {
        return Err(BodyError::TooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge(limit)),
        Err(e) => {
            tracing::debug!(error = %e, "request body read failed");
            Err(BodyError::Unreadable)
        }
    }
}

/// Reads a request's JSON body, at most `limit` bytes; the error is the
/// reply to send.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
pub async fn json(req: Request<Incoming>, limit: usize) -> Result<serde_json::Value, HttpResponse> {
    let (parts, body) = req.into_parts();
    let bytes = read(&parts.headers, body, limit)
        .await
        .map_err(|e| e.response())?;
    serde_json::from_slice(&bytes).map_err(|e| BodyError::NotJson(e).response())
}
