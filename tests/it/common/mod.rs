//! The test harness every suite shares: the server start-up, an HTTP
//! client with one reply type, a DNS client, the shipped apps and waiting.

pub mod apps;
pub mod dnsclient;
pub mod http;
pub mod pg;
pub mod promtool;
pub mod server;
pub mod unbound;
pub mod wait;

pub use server::{GEO_OVERRIDES_OFF, GEO_OVERRIDES_ON, Options, Server, TEST_TOKEN_LINE};
