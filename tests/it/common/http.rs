//! A blocking HTTP/1.1 client for the operations and decision listeners:
//! one request on a fresh connection, the raw reply in one [`Reply`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The admin token every test config sets (see [`super::TEST_TOKEN_LINE`]).
pub const TOKEN: &str = "change-me";

/// What came back: status 0 when no status line did (refused, reset or
/// timed out), so pollers can retry and assertions name the failure.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The `WWW-Authenticate` header, if any.
    pub fn challenge(&self) -> Option<String> {
        self.header("www-authenticate")
    }

    /// A 401 whose challenge says `invalid_token` (RFC 6750 §3.1).
    #[track_caller]
    pub fn assert_invalid_token(&self, what: &str) {
        assert_eq!(self.status, 401, "{what}: {}", self.body);
        let c = self.challenge().unwrap_or_default();
        assert!(
            c.starts_with("Bearer realm=\"switchyard\"") && c.contains("error=\"invalid_token\""),
            "{what}: {c:?}"
        );
    }

    /// The body as JSON; panics (with the reply) when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}\n{}",
                self.status, self.head, self.body
            )
        })
    }

    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts a 2xx status; the body as JSON.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "status {}: {}",
            self.status,
            self.body
        );
        self.json()
    }

    /// Asserts `{"error": ...}` with `status`; returns the message.
    #[track_caller]
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}\n{}", self.head, self.body);
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string: {}", self.body))
            .to_string()
    }
}

/// One request, built up and then sent with [`Request::send`].
pub struct Request<'a> {
    addr: SocketAddr,
    method: &'a str,
    path: &'a str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl<'a> Request<'a> {
    /// `method path` to `addr`, with no body and a 30 s read timeout.
    pub fn new(addr: SocketAddr, method: &'a str, path: &'a str) -> Self {
        Request {
            addr,
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds headers, in order.
    pub fn headers(self, list: &[(&str, &str)]) -> Self {
        list.iter().fold(self, |r, (k, v)| r.header(k, v))
    }

    /// Adds `Authorization: Bearer <token>` when a token is given.
    pub fn token(self, token: Option<&str>) -> Self {
        match token {
            Some(t) => self.header("Authorization", &format!("Bearer {t}")),
            None => self,
        }
    }

    /// A body, sent as it is (with no `Content-Type`).
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// A JSON body (with its `Content-Type`).
    pub fn json(self, body: &[u8]) -> Self {
        self.header("Content-Type", "application/json").body(body)
    }

    /// How long to wait to connect and for each read.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Sends the request on a fresh connection and reads the whole reply.
    pub fn send(self) -> Reply {
        self.try_send().expect("connect")
    }

    /// As [`Request::send`]; an error when no connection is made.
    pub fn try_send(self) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.addr
        );
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&self.body);
        // A server that refuses an oversized body may close before it is
        // all sent; its reply is still there to read.
        let _ = s.write_all(&bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Ok(parse(&String::from_utf8_lossy(&out)))
    }
}

fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `method path` with an optional bearer token and a JSON body (its
/// `Content-Type` sent even when empty).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Reply {
    Request::new(addr, method, path)
        .token(token)
        .json(body)
        .send()
}

/// GET `path` with no headers of its own.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    Request::new(addr, "GET", path).send()
}

/// GET on the operations address; (status, JSON body or Null). Retries
/// for 5 s while nothing answers: the operations socket belongs to the
/// supervisor, so it accepts during a restart before a serving process
/// answers.
pub fn http_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = Request::new(addr, "GET", path)
            .timeout(Duration::from_secs(3))
            .try_send();
        if let Ok(r) = reply.as_ref()
            && r.status != 0
        {
            return (r.status, r.json_or_null());
        }
        assert!(Instant::now() <= deadline, "GET {path}: no reply");
        std::thread::sleep(Duration::from_millis(50));
    }
}
