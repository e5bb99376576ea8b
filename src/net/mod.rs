//! What the listeners share below the protocols: the DNS sockets the
//! supervisor binds once ([`sockets`]) and the bound on connections one
//! client network may hold open ([`clients`]).

pub mod clients;
pub mod sockets;
