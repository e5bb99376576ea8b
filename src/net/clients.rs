//! Connections per client network, for the listeners that hold connections
//! open (DNS over TCP, both HTTP listeners).
//!
//! Without a per-client bound, one client that opens connections and keeps
//! them open (idle keep-alives, slowloris headers, h2 connections that only
//! answer pings, DNS length prefixes sent just before the idle timeout) takes
//! every slot and everyone else waits or is refused. Clients are counted by
//! network (an IPv4 /24 and an IPv6 /56 by default, as RRL counts them), since
//! one attacker usually holds a whole block.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// How clients are grouped and how many connections each group may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerClient {
    /// Most open connections of one client network.
    pub max: usize,
    /// Prefix length an IPv4 client is counted by.
    pub ipv4_prefix: u8,
    /// Prefix length an IPv6 client is counted by.
    pub ipv6_prefix: u8,
}

impl Default for PerClient {
    fn default() -> Self {
        PerClient {
            max: 64,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }
}

impl PerClient {
    /// The network `ip` is counted in: its address with the bits past the
    /// prefix cleared (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn network(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        masked(ip, prefix)
    }
}

/// Mask `addr` to its first `prefix` bits.
pub fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// The open connections of each client network of one listener.
#[derive(Debug, Default)]
pub struct ClientSlots {
    limit: PerClient,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among its network's; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    network: IpAddr,
}

impl ClientSlots {
    /// Slots bounded by `limit`.
    pub fn new(limit: PerClient) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, unless its network already holds
    /// its most. The map holds only networks with open connections, so it
    /// is bounded by the listener's connection limit.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let network = self.limit.network(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(network).or_insert(0);
        if *n >= self.limit.max {
            if *n == 0 {
                open.remove(&network);
            }
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            network,
        })
    }

    /// Open connections of the network `ip` is in.
    pub fn open(&self, ip: IpAddr) -> usize {
        let network = self.limit.network(ip);
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&network).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.network) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_group_addresses_by_prefix() {
        let p = PerClient::default();
        let net = |s: &str| p.network(s.parse().unwrap()).to_string();
        assert_eq!(net("198.51.100.77"), "198.51.100.0");
        assert_eq!(net("::ffff:198.51.100.77"), "198.51.100.0");
        assert_eq!(net("2001:db8:1:2ff:1::1"), "2001:db8:1:200::");
        let exact = PerClient {
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            ..p
        };
        assert_eq!(
            exact.network("127.0.0.2".parse().unwrap()).to_string(),
            "127.0.0.2"
        );
    }

    #[test]
    fn a_network_holds_at_most_its_share_and_gets_slots_back() {
        let slots = ClientSlots::new(PerClient {
            max: 2,
            ..PerClient::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let one = slots.take(a).expect("first");
        let two = slots.take(b).expect("second, same /24");
        assert!(slots.take(a).is_none(), "a third from the same /24");
        assert!(
            slots.take(other).is_some(),
            "another network is not limited"
        );
        drop(one);
        assert_eq!(slots.open(a), 1);
        let _three = slots.take(a).expect("a slot given back is free again");
        drop(two);
        assert_eq!(slots.open(b), 1);
        assert_eq!(
            slots.open.lock().unwrap().len(),
            1,
            "only open networks are kept"
        );
    }
}
