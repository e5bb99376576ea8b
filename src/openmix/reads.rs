//! What a decision read, recorded by the host (host.rs) while it runs, for
//! the decision memo (memo.rs): the values that can differ between
//! requests, in the order the app read them.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use hashbrown::Equivalent;

/// Something an app read that can differ between requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReadKey {
    /// A `request` field, by its index in the Openmix API's list.
    Field(u8),
    /// `request.getProbe(name)`.
    Probe(Box<str>),
    /// `request.getHeader(name)`.
    Header(Box<str>),
    /// `request.getQueryString(name)`.
    Query(Box<str>),
}

/// The value read.
#[derive(Debug, Clone)]
pub enum ReadValue {
    /// A string field.
    Str(String),
    /// A numeric field (ASN).
    Num(u32),
    /// An address field (`ip_address`, `resolver_ip_address`); `None`
    /// reads as an empty string.
    Ip(Option<IpAddr>),
    /// Probe rows computed for this request (`proximity_dist`): alias and
    /// value bits (`None`: no value).
    Rows(Vec<(String, Option<u64>)>),
    /// A probe table of the data snapshot, by its address (0: none), and
    /// the providers the app declared (their identity: see [`declared_id`]),
    /// with which the rows are padded. Within one snapshot (and a memo holds
    /// one snapshot at a time) the same table padded the same way always
    /// gives the same rows, so comparing identities is exact, and a lookup
    /// needs no copy of the rows.
    Table(usize, u64),
    /// A header or query value, or its absence.
    Opt(Option<String>),
}

/// A read value, borrowed from the request or the snapshot: what a lookup
/// compares, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef<'a> {
    /// See [`ReadValue::Str`].
    Str(&'a str),
    /// See [`ReadValue::Num`].
    Num(u32),
    /// See [`ReadValue::Ip`].
    Ip(Option<IpAddr>),
    /// See [`ReadValue::Rows`].
    Rows(&'a [(String, Option<u64>)]),
    /// See [`ReadValue::Table`].
    Table(usize, u64),
    /// See [`ReadValue::Opt`].
    Opt(Option<&'a str>),
}

impl ReadValue {
    /// The borrowed form; equality and hashing go through it, so an owned
    /// and a borrowed value that are equal hash alike.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            ReadValue::Str(s) => ValueRef::Str(s),
            ReadValue::Num(n) => ValueRef::Num(*n),
            ReadValue::Ip(a) => ValueRef::Ip(*a),
            ReadValue::Rows(r) => ValueRef::Rows(r),
            ReadValue::Table(t, d) => ValueRef::Table(*t, *d),
            ReadValue::Opt(o) => ValueRef::Opt(o.as_deref()),
        }
    }
}

impl ValueRef<'_> {
    /// The owned form.
    pub fn into_owned(self) -> ReadValue {
        match self {
            ValueRef::Str(s) => ReadValue::Str(s.to_string()),
            ValueRef::Num(n) => ReadValue::Num(n),
            ValueRef::Ip(a) => ReadValue::Ip(a),
            ValueRef::Rows(r) => ReadValue::Rows(r.to_vec()),
            ValueRef::Table(t, d) => ReadValue::Table(t, d),
            ValueRef::Opt(o) => ReadValue::Opt(o.map(str::to_string)),
        }
    }
}

impl PartialEq for ReadValue {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for ReadValue {}

impl Hash for ReadValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<ReadValue> for ValueRef<'_> {
    fn equivalent(&self, key: &ReadValue) -> bool {
        *self == key.as_ref()
    }
}

/// What one decision read, in order.
#[derive(Debug, Clone, Default)]
pub struct ReadLog {
    /// Keys and values, in the order the app read them.
    pub reads: Vec<(ReadKey, ReadValue)>,
    /// The decision called `Math.random` or `console.log`: never stored.
    pub impure: bool,
}

/// The identity of a list of declared providers (FNV-1a of the names and
/// their separators): instances of one app version built at different
/// times may have declared different lists (an `init` that declares what
/// `config.getProviders()` lists), and `getProbe` pads its rows with them.
pub fn declared_id(declared: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in declared {
        for b in name.bytes().chain(std::iter::once(0xff)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Probe rows as a comparable value.
pub fn rows_value(rows: &[(String, Option<f64>)]) -> ReadValue {
    ReadValue::Rows(
        rows.iter()
            .map(|(a, v)| (a.clone(), v.map(f64::to_bits)))
            .collect(),
    )
}
