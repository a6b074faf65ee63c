//! The addresses a cluster reaches AWS from.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Configured egress CIDRs, each for every cluster or for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressCidrs {
    entries: Vec<(Option<String>, IpNet)>,
}

/// An egress entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid egress CIDR {entry:?}: expected an address or CIDR such as 203.0.113.0/24, \
     optionally after a cluster name and '=' (prod=203.0.113.0/24)"
)]
pub struct EgressError {
    pub entry: String,
}

impl EgressCidrs {
    /// Parses a comma-separated list of entries. An entry is a CIDR or a bare
    /// address, for every cluster, or `<cluster>=<CIDR>` for one cluster.
    pub fn parse(text: &str) -> Result<EgressCidrs, EgressError> {
        let mut entries = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = || EgressError {
                entry: entry.to_owned(),
            };
            let (cluster, cidr) = match entry.split_once('=') {
                Some((cluster, cidr)) if !cluster.trim().is_empty() => {
                    (Some(cluster.trim().to_owned()), cidr.trim())
                }
                Some(_) => return Err(error()),
                None => (None, entry),
            };
            let network = match cidr.parse::<IpNet>() {
                Ok(network) => network.trunc(),
                Err(_) => IpNet::from(cidr.parse::<IpAddr>().map_err(|_| error())?),
            };
            entries.push((cluster, network));
        }
        Ok(EgressCidrs { entries })
    }

    /// The CIDRs that apply to `cluster`.
    pub fn for_cluster<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a IpNet> + 'a {
        self.entries
            .iter()
            .filter(move |(only, _)| only.as_deref().is_none_or(|only| only == cluster))
            .map(|(_, network)| network)
    }

    /// Whether `address` is in a CIDR that applies to `cluster`.
    pub fn contains(&self, cluster: &str, address: IpAddr) -> bool {
        self.for_cluster(cluster)
            .any(|network| network.contains(&address))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let egress =
            EgressCidrs::parse("203.0.113.0/24, prod=198.51.100.7, 2001:db8::/32").unwrap();
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(egress.contains("prod", address("203.0.113.9")));
        assert!(egress.contains("prod", address("198.51.100.7")));
        assert!(!egress.contains("staging", address("198.51.100.7")));
        assert!(egress.contains("staging", address("2001:db8::1")));
        assert!(!egress.contains("prod", address("192.0.2.1")));
    }

    #[test]
    fn empty_list_is_empty() {
        assert!(EgressCidrs::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn host_bits_ignored() {
        let egress = EgressCidrs::parse("203.0.113.77/24").unwrap();
        assert!(egress.contains("any", "203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn bad_entry_named() {
        let error = EgressCidrs::parse("203.0.113.0/24,prod=nat-gateway").unwrap_err();
        assert_eq!(error.entry, "prod=nat-gateway");
        assert!(
            error
                .to_string()
                .starts_with("invalid egress CIDR \"prod=nat-gateway\"")
        );
        assert!(EgressCidrs::parse("=203.0.113.0/24").is_err());
        assert!(EgressCidrs::parse("203.0.113.0/33").is_err());
    }
}
