//! DNSSEC for the zones served: their keys ([`keys`]) in BIND's key
//! files ([`files`]) in each zone's key directory ([`keydir`]), reloaded
//! when those files change ([`watch`]), signatures made online and cached
//! ([`sign`]), and denial of existence made on the fly ([`nsec`]).
//!
//! Every answer of a signed zone is signed as it is sent, app answers
//! included: the records an app picks are not known before the query, so
//! there is no signed zone file to serve. The cost stays low because a
//! signature depends only on the RRset, the key and the validity window
//! (aligned, as PowerDNS does, so the same RRset signs the same way for
//! days): it is made once and then comes from a bounded cache.
//!
//! The DNS front end ([`crate::dns`]) asks this module for signatures; this
//! module knows nothing of transports or apps.

pub mod files;
pub mod keydir;
pub mod keys;
pub mod nsec;
pub mod sign;
pub mod watch;
