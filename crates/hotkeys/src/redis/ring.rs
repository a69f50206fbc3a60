//! Client-side key placement over a list of cache nodes, compatible with existing clients.
//!
//! Three rings are reproduced bit for bit, so that this pipeline writes a key to the node
//! where the site's other clients will read it:
//!
//! - [`RingAlgorithm::PeclMemcache`]: PHP's PECL memcache extension with
//!   `hash_strategy=consistent` and `hash_function=crc32`;
//! - [`RingAlgorithm::Flexihash`]: the PHP Flexihash library with its CRC-32 hasher;
//! - [`RingAlgorithm::Ketama`]: twemproxy's `distribution: ketama`, hashing keys with
//!   [`KetamaHash::Fnv1a64`] or [`KetamaHash::Crc32a`].
//!
//! The three do not agree with one another. Every one is checked against placements read
//! off the real programs (`tests/data/consistent-hashing.tsv`). Nodes all have weight 1,
//! the only weight a node URL can express. This module does no I/O.

use md5::{Digest, Md5};

pub use crate::config::{KetamaHash, RingAlgorithm};

/// Why a ring cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("a ring needs at least one node")]
    NoNodes,
    #[error("node `{0}`: expected host:port or a redis:// URL")]
    BadNode(String),
}

/// The address of a node as the rings hash it: `host` and `port` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// Reads `host:port`, or the host and port of a `redis://` / `rediss://` URL (a missing
    /// port is Redis's 6379; credentials, database and query are not part of the name).
    pub fn parse(node: &str) -> Result<NodeAddr, RingError> {
        let bad = || RingError::BadNode(crate::config::secret::NodeUrl::new(node).to_string());
        let (rest, default_port) = match node.split_once("://") {
            Some((_, rest)) => (rest, Some(6379)),
            None => (node, None),
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        // A bracketed IPv6 host keeps its brackets: clients hash the text they were given.
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
            _ => (hostport, default_port.ok_or_else(bad)?),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(NodeAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A built ring: maps a key to the index of a node in the list it was built from.
#[derive(Debug, Clone)]
pub struct Ring {
    nodes: usize,
    placement: Placement,
}

#[derive(Debug, Clone)]
enum Placement {
    /// PECL memcache looks keys up in a 1024-bucket table, not on the continuum itself.
    Buckets(Box<[u16; PECL_BUCKETS]>),
    /// Flexihash: first position strictly greater than the key's hash.
    Above(Vec<(u32, u16)>),
    /// Ketama: first point greater than or equal to the key's hash.
    AtOrAbove(Vec<(u32, u16)>, KetamaHash),
}

const PECL_POINTS: u32 = 160;
const PECL_BUCKETS: usize = 1024;
const FLEXIHASH_REPLICAS: u32 = 64;
const KETAMA_POINTS: u32 = 160;

impl Ring {
    /// Builds the ring of `algorithm` over `nodes` (each `host:port` or a Redis URL), in the
    /// order given: the order matters to PECL memcache and Flexihash when points collide.
    pub fn new(
        algorithm: RingAlgorithm,
        ketama_hash: KetamaHash,
        nodes: &[impl AsRef<str>],
    ) -> Result<Ring, RingError> {
        let addrs = nodes
            .iter()
            .map(|n| NodeAddr::parse(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ring::from_addrs(algorithm, ketama_hash, &addrs)
    }

    /// Builds the ring over parsed addresses.
    pub fn from_addrs(
        algorithm: RingAlgorithm,
        ketama_hash: KetamaHash,
        nodes: &[NodeAddr],
    ) -> Result<Ring, RingError> {
        if nodes.is_empty() {
            return Err(RingError::NoNodes);
        }
        // Node indices are stored as u16 to keep the PECL table at 2 KiB.
        if nodes.len() > usize::from(u16::MAX) {
            return Err(RingError::BadNode(format!("{} nodes", nodes.len())));
        }
        let placement = match algorithm {
            RingAlgorithm::PeclMemcache => Placement::Buckets(pecl_buckets(nodes)),
            RingAlgorithm::Flexihash => Placement::Above(flexihash_positions(nodes)),
            RingAlgorithm::Ketama => Placement::AtOrAbove(ketama_points(nodes), ketama_hash),
        };
        Ok(Ring {
            nodes: nodes.len(),
            placement,
        })
    }

    /// Number of nodes the ring spreads keys over.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Whether the ring has no node (never true for a built ring).
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// Index, in the node list the ring was built from, of the node that holds `key`.
    pub fn node_for(&self, key: &[u8]) -> usize {
        match &self.placement {
            // PECL memcache skips the lookup altogether with a single server.
            Placement::Buckets(_) if self.nodes == 1 => 0,
            Placement::Buckets(buckets) => {
                usize::from(buckets[pecl_key_hash(key) as usize % PECL_BUCKETS])
            }
            Placement::Above(positions) => {
                let h = crc32(key);
                let i = positions.partition_point(|&(p, _)| p <= h);
                usize::from(positions.get(i).unwrap_or(&positions[0]).1)
            }
            Placement::AtOrAbove(points, hash) => {
                let h = match hash {
                    KetamaHash::Fnv1a64 => fnv1a_64_as_twemproxy(key),
                    KetamaHash::Crc32a => crc32(key),
                };
                let i = points.partition_point(|&(p, _)| p < h);
                usize::from(points.get(i).unwrap_or(&points[0]).1)
            }
        }
    }
}

/// CRC-32 (IEEE), the value of PHP's `crc32()` and twemproxy's `crc32a`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// twemproxy's `fnv1a_64`, which is computed in 32-bit arithmetic: the 64-bit offset basis
/// and prime truncated to their low 32 bits. Key bytes go through C's signed `char`, so a
/// byte >= 0x80 is sign-extended before the xor, as on x86 builds.
fn fnv1a_64_as_twemproxy(key: &[u8]) -> u32 {
    let mut hash: u32 = 0x8422_2325;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(0x1b3);
    }
    hash
}

/// PECL memcache replaces control characters and spaces in keys by `_` before hashing.
fn pecl_key_hash(key: &[u8]) -> u32 {
    if key.iter().all(|&b| b > b' ') {
        return crc32(key);
    }
    let cleaned: Vec<u8> = key
        .iter()
        .map(|&b| if b > b' ' { b } else { b'_' })
        .collect();
    crc32(&cleaned)
}

fn pecl_buckets(nodes: &[NodeAddr]) -> Box<[u16; PECL_BUCKETS]> {
    let mut points: Vec<(u32, u16)> = Vec::with_capacity(nodes.len() * PECL_POINTS as usize);
    for (index, node) in nodes.iter().enumerate() {
        for i in 0..PECL_POINTS {
            let name = format!("{}:{}-{}", node.host, node.port, i);
            points.push((crc32(name.as_bytes()), index as u16));
        }
    }
    // qsort in the extension is not stable; equal points are too rare to matter.
    points.sort_by_key(|&(p, _)| p);
    let step = 0xffff_ffff_u32 / PECL_BUCKETS as u32;
    let mut buckets = Box::new([0u16; PECL_BUCKETS]);
    for (b, slot) in buckets.iter_mut().enumerate() {
        let at = step.wrapping_mul(b as u32);
        let i = points.partition_point(|&(p, _)| p < at);
        *slot = points.get(i).unwrap_or(&points[0]).1;
    }
    buckets
}

fn flexihash_positions(nodes: &[NodeAddr]) -> Vec<(u32, u16)> {
    // A PHP array keyed by position: a later target overwrites an earlier one.
    let mut by_position = std::collections::BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        for i in 0..FLEXIHASH_REPLICAS {
            let name = format!("{}:{}{}", node.host, node.port, i);
            by_position.insert(crc32(name.as_bytes()), index as u16);
        }
    }
    by_position.into_iter().collect()
}

fn ketama_points(nodes: &[NodeAddr]) -> Vec<(u32, u16)> {
    let mut points = Vec::with_capacity(nodes.len() * KETAMA_POINTS as usize);
    for (index, node) in nodes.iter().enumerate() {
        let name = if node.port == 11211 {
            node.host.clone()
        } else {
            format!("{}:{}", node.host, node.port)
        };
        for k in 0..KETAMA_POINTS / 4 {
            let digest = Md5::digest(format!("{name}-{k}").as_bytes());
            for chunk in digest.chunks_exact(4) {
                let point = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                points.push((point, index as u16));
            }
        }
    }
    points.sort_by_key(|&(p, _)| p);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_NODES: [&str; 3] = ["127.0.0.1:21211", "127.0.0.1:21212", "127.0.0.1:21213"];

    /// The shared vectors, copied from `shared/vectors/consistent-hashing.tsv` (the
    /// project's cross-team test data, outside this repository) so the test does not
    /// depend on a path beside the clone.
    fn vectors() -> Vec<Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/consistent-hashing.tsv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        assert_eq!(
            header,
            [
                "key",
                "pecl_memcache_consistent_crc32",
                "flexihash_crc32",
                "twemproxy_ketama_fnv1a_64",
                "twemproxy_ketama_crc32a"
            ]
        );
        lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    fn check_column(algorithm: RingAlgorithm, hash: KetamaHash, column: usize) {
        let ring = Ring::new(algorithm, hash, &VECTOR_NODES).unwrap();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for row in vectors() {
            let expected = &row[column];
            // `-`: the program could not store that key (a space breaks its protocol).
            if expected == "-" {
                continue;
            }
            checked += 1;
            let got = VECTOR_NODES[ring.node_for(row[0].as_bytes())];
            if got != expected {
                wrong.push(format!("{}: expected {expected}, got {got}", row[0]));
            }
        }
        assert!(checked >= 155, "only {checked} rows checked");
        assert!(wrong.is_empty(), "{} mismatches: {wrong:#?}", wrong.len());
    }

    #[test]
    fn crc32_matches_the_documented_spot_checks() {
        assert_eq!(crc32(b"127.0.0.1:21211-0"), 0xb26c854d);
        assert_eq!(crc32(b"127.0.0.1:212110"), 0xbde27976);
    }

    #[test]
    fn pecl_memcache_reproduces_every_vector() {
        check_column(RingAlgorithm::PeclMemcache, KetamaHash::Fnv1a64, 1);
    }

    #[test]
    fn flexihash_reproduces_every_vector() {
        check_column(RingAlgorithm::Flexihash, KetamaHash::Fnv1a64, 2);
    }

    #[test]
    fn ketama_fnv1a_64_reproduces_every_vector() {
        check_column(RingAlgorithm::Ketama, KetamaHash::Fnv1a64, 3);
    }

    #[test]
    fn ketama_crc32a_reproduces_every_vector() {
        check_column(RingAlgorithm::Ketama, KetamaHash::Crc32a, 4);
    }

    #[test]
    fn pecl_memcache_hashes_spaces_as_underscores() {
        let ring = Ring::new(
            RingAlgorithm::PeclMemcache,
            KetamaHash::Fnv1a64,
            &VECTOR_NODES,
        )
        .unwrap();
        assert_eq!(ring.node_for(b"hello world"), ring.node_for(b"hello_world"));
    }

    #[test]
    fn a_single_node_takes_every_key() {
        for algorithm in [
            RingAlgorithm::PeclMemcache,
            RingAlgorithm::Flexihash,
            RingAlgorithm::Ketama,
        ] {
            let ring = Ring::new(algorithm, KetamaHash::Fnv1a64, &["127.0.0.1:6379"]).unwrap();
            for key in ["a", "product:1", "zzz"] {
                assert_eq!(ring.node_for(key.as_bytes()), 0);
            }
        }
    }

    #[test]
    fn every_node_of_a_ring_gets_some_keys() {
        let nodes = [
            "10.0.0.1:6379",
            "10.0.0.2:6379",
            "10.0.0.3:6379",
            "10.0.0.4:6379",
        ];
        for algorithm in [
            RingAlgorithm::PeclMemcache,
            RingAlgorithm::Flexihash,
            RingAlgorithm::Ketama,
        ] {
            let ring = Ring::new(algorithm, KetamaHash::Fnv1a64, &nodes).unwrap();
            let mut counts = [0usize; 4];
            for i in 0..4000 {
                counts[ring.node_for(format!("product:{i}").as_bytes())] += 1;
            }
            assert!(counts.iter().all(|&c| c > 400), "{algorithm:?}: {counts:?}");
        }
    }

    #[test]
    fn node_addresses_are_read_from_urls_and_host_port() {
        let cases = [
            ("127.0.0.1:6380", "127.0.0.1", 6380),
            ("redis://127.0.0.1:6379", "127.0.0.1", 6379),
            ("redis://cache-a", "cache-a", 6379),
            ("rediss://user:pw@cache-b:7000/2", "cache-b", 7000),
            ("redis://[::1]:6379/0", "[::1]", 6379),
        ];
        for (text, host, port) in cases {
            let addr = NodeAddr::parse(text).unwrap();
            assert_eq!((addr.host.as_str(), addr.port), (host, port), "{text}");
        }
        for bad in ["", "cache-a", "redis://:6379", "host:port"] {
            assert!(NodeAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_node_list_is_refused() {
        let none: [&str; 0] = [];
        assert!(matches!(
            Ring::new(RingAlgorithm::Ketama, KetamaHash::Crc32a, &none),
            Err(RingError::NoNodes)
        ));
    }
}
