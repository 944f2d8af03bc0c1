//! Where the store lives, as `--store` (or `MARQUEE_STORE`, or the config's
//! `store`) names it: `embedded` (the default: fjall in the data dir), or
//! `etcd://host:port,host:port,…[/prefix/]`, an etcd cluster shared by
//! several Marquee nodes, with the data dir as this node's cache.

use std::fmt;
use std::str::FromStr;

use super::etcd::DEFAULT_PREFIX;

/// Where the store's records live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreAddress {
    /// In the data dir (fjall), this process the only writer.
    #[default]
    Embedded,
    /// On an etcd cluster shared by several nodes.
    Etcd(EtcdAddress),
}

/// An etcd cluster and the key prefix Marquee's keys live under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAddress {
    /// `host:port` of each member (any of them will do; all are used).
    pub endpoints: Vec<String>,
    /// Starts and ends with `/`; nodes sharing one prefix share one store.
    pub prefix: String,
}

/// Why a `--store` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid store '{given}': {why} (expected 'embedded' or 'etcd://host:port,host:port[/prefix/]')"
)]
pub struct StoreAddressError {
    given: String,
    why: &'static str,
}

impl FromStr for StoreAddress {
    type Err = StoreAddressError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let refuse = |why| StoreAddressError {
            given: given.to_owned(),
            why,
        };
        let text = given.trim();
        if text.is_empty() || text == "embedded" || text == "fjall" {
            return Ok(StoreAddress::Embedded);
        }
        let Some(rest) = text.strip_prefix("etcd://") else {
            return Err(refuse("unknown kind of store"));
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, DEFAULT_PREFIX),
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(refuse("no etcd endpoints"));
        }
        if endpoints.iter().any(|h| !h.contains(':')) {
            return Err(refuse("every endpoint needs a port"));
        }
        let mut prefix = prefix.to_owned();
        if prefix == "/" {
            return Err(refuse("the key prefix must not be the whole key space"));
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(StoreAddress::Etcd(EtcdAddress { endpoints, prefix }))
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAddress::Embedded => f.write_str("embedded"),
            StoreAddress::Etcd(etcd) => {
                write!(f, "etcd://{}{}", etcd.endpoints.join(","), etcd.prefix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_addresses_parse_as_the_readme_writes_them() {
        assert_eq!("embedded".parse(), Ok(StoreAddress::Embedded));
        assert_eq!("".parse(), Ok(StoreAddress::Embedded));
        let three: StoreAddress = "etcd://127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579"
            .parse()
            .unwrap();
        assert_eq!(
            three,
            StoreAddress::Etcd(EtcdAddress {
                endpoints: vec![
                    "127.0.0.1:2379".into(),
                    "127.0.0.1:2479".into(),
                    "127.0.0.1:2579".into()
                ],
                prefix: DEFAULT_PREFIX.into(),
            })
        );
        let prefixed: StoreAddress = "etcd://[::1]:2379/venue-a".parse().unwrap();
        assert_eq!(prefixed.to_string(), "etcd://[::1]:2379/venue-a/");
        assert_eq!(prefixed.to_string().parse(), Ok(prefixed));
    }

    #[test]
    fn a_bad_store_address_says_what_is_wrong() {
        for bad in ["redis://x:1", "etcd://", "etcd://localhost", "etcd://h:1/"] {
            let e = bad.parse::<StoreAddress>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
