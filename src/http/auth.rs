//! Bearer tokens on the operations listener, as RFC 6750 says: a request
//! without a token, or with one that is malformed, unknown, revoked or
//! issued under a rotated admin token, gets `401` with a
//! `WWW-Authenticate: Bearer` challenge ("invalid_token" when a token was
//! sent, §3.1); only a valid token that lacks the right gets `403`
//! ("insufficient_scope"). The stats API's HMAC posts are not bearer
//! calls and keep their own rules (`http::stats`).

use hyper::body::Incoming;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};

use super::{HttpResponse, json_error};
use crate::inventory::{TokenCheck, tokens};
use crate::state::State;

/// The realm named in every challenge.
const REALM: &str = "switchyard";

/// Who a valid bearer token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The config's `api_token` (or the generated one).
    Admin,
    /// A token issued with `POST /api/tokens` under the admin token in use.
    Issued,
}

/// Checks the bearer token of an `/api/*` call: the admin `api_token`, or
/// an issued, unrevoked token issued with that admin token. With the token
/// API off (`api_token = ""`) no token can help: `403`.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
pub fn authorize(state: &State, req: &Request<Incoming>) -> Result<Caller, HttpResponse> {
    let config = state.config.load();
    let Some(admin) = config.api_token.as_deref() else {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "the token API is off: server.api_token is set to \"\"",
        ));
    };
    let Some(header) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Err(unauthorized(None, "missing bearer token"));
    };
    let value = header.to_str().unwrap_or("\u{fffd}").trim();
    let given = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        None if value.eq_ignore_ascii_case("bearer") => "",
        // Another scheme (Basic, ...) carries no bearer token at all.
        _ => return Err(unauthorized(None, "missing bearer token")),
    };
    if subtle_eq(given.as_bytes(), admin.as_bytes()) {
        return Ok(Caller::Admin);
    }
    match state
        .inventory
        .check_token(given, &tokens::admin_fingerprint(admin))
    {
        TokenCheck::Valid => Ok(Caller::Issued),
        TokenCheck::Rotated => Err(unauthorized(
            Some("issued under an admin token that has been rotated"),
            "invalid bearer token: it was issued under an admin api_token that has since been rotated",
        )),
        TokenCheck::Unknown if given.is_empty() || !given.bytes().all(is_b64token) => Err(
            unauthorized(Some("malformed token"), "malformed bearer token"),
        ),
        TokenCheck::Unknown => Err(unauthorized(
            Some("unknown or revoked token"),
            "invalid bearer token",
        )),
    }
}

/// With `[server] admin_reads_need_token`, a read (`GET`/`HEAD`) of
/// `/api/*` needs a valid bearer token too; `Some` is the refusal.
pub fn gate_read(state: &State, req: &Request<Incoming>, path: &str) -> Option<HttpResponse> {
    let reads_gated = state.config.load().admin_reads_need_token;
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
    if !(reads_gated && is_read && (path == "/api" || path.starts_with("/api/"))) {
        return None;
    }
    authorize(state, req).err()
}

/// `403` for a valid token without the right to do this (RFC 6750 §3.1:
/// "insufficient_scope").
pub fn forbidden(message: &str) -> HttpResponse {
    let mut r = json_error(StatusCode::FORBIDDEN, message);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="switchyard", error="insufficient_scope""#),
    );
    r
}

/// `401` with a Bearer challenge; `invalid` (the reason) when a token was
/// sent: RFC 6750 §3 leaves the error out when the request had none.
fn unauthorized(invalid: Option<&str>, message: &str) -> HttpResponse {
    let mut r = json_error(StatusCode::UNAUTHORIZED, message);
    let challenge = match invalid {
        None => format!("Bearer realm=\"{REALM}\""),
        Some(why) => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{why}\""
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// A character of RFC 6750's `b64token`: `ALPHA / DIGIT / "-" / "." /
/// "_" / "~" / "+" / "/"`, and `=` (which may only end it; not checked).
fn is_b64token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// Constant-time comparison (no early exit on the first differing byte).
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        let r = unauthorized(None, "missing bearer token");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="switchyard""#
        );
        let r = unauthorized(Some("unknown or revoked token"), "invalid bearer token");
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="switchyard", error="invalid_token", error_description="unknown or revoked token""#
        );
        assert_eq!(forbidden("no").status(), StatusCode::FORBIDDEN);
        assert!(is_b64token(b'~') && !is_b64token(b' ') && !is_b64token(b'"'));
        assert!(subtle_eq(b"abc", b"abc") && !subtle_eq(b"abc", b"abd") && !subtle_eq(b"a", b"ab"));
    }
}
