//! What `rdb-facts` and `redis-load` share: Redis's CRC64, the kinds of keys the `rdb` crate
//! cannot decode as Redis serves them, and the content facts of a keyspace (counts, digest,
//! expiry buckets) computed exactly as `auction_backup_pipelines.redis.facts` computes them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::rc::Rc;

use crc::{Crc, Digest as CrcDigest, Table, CRC_64_REDIS};
use rdb::filter::Filter;
use sha2::{Digest, Sha256};

pub const STREAM_TYPES: [u8; 4] = [15, 19, 21, 26];
pub const MODULE_TYPES: [u8; 2] = [6, 7];
pub const FIELD_TTL_HASH_TYPES: [u8; 4] = [22, 23, 24, 25]; // Redis 7.4+
pub const CHECKSUM_LEN: usize = 8;

pub static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// A running CRC64 and the last <= 8 bytes seen (the checksum, once the stream ends).
pub type CrcState = Rc<RefCell<(CrcDigest<'static, u64, Table<16>>, Vec<u8>)>>;

/// Passes bytes through while taking Redis's CRC64 of all but the last 8 (the checksum itself).
pub struct Crc64Reader<R> {
    pub inner: R,
    pub state: CrcState,
}

impl<R: Read> Read for Crc64Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (digest, tail) = &mut *self.state.borrow_mut();
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > CHECKSUM_LEN {
            let done = tail.len() - CHECKSUM_LEN;
            digest.update(&tail[..done]);
            tail.drain(..done);
        }
        Ok(n)
    }
}

/// What kind of key the crate cannot decode as Redis serves it, by RDB type byte (None: decodable).
pub fn undecoded_kind(enc_type: u8) -> Option<&'static str> {
    if STREAM_TYPES.contains(&enc_type) {
        Some("stream")
    } else if MODULE_TYPES.contains(&enc_type) {
        Some("module")
    } else if FIELD_TTL_HASH_TYPES.contains(&enc_type) {
        Some("hash_field_ttl")
    } else {
        None
    }
}

/// Accepts every key but streams, module values and hashes with field TTLs, which it counts
/// per db and per kind, so the caller can say which keys it could not handle.
#[derive(Default)]
pub struct CountUndecoded {
    pub db: Cell<u32>,
    pub undecoded: Rc<RefCell<BTreeMap<u32, u64>>>,
    pub kinds: Rc<RefCell<BTreeMap<&'static str, u64>>>,
}

impl Filter for CountUndecoded {
    fn matches_db(&self, db: u32) -> bool {
        self.db.set(db);
        true
    }
    fn matches_type(&self, enc_type: u8) -> bool {
        if let Some(kind) = undecoded_kind(enc_type) {
            *self
                .undecoded
                .borrow_mut()
                .entry(self.db.get())
                .or_default() += 1;
            *self.kinds.borrow_mut().entry(kind).or_default() += 1;
            return false;
        }
        true
    }
}

/// Counts and digests of a keyspace, as `facts.Facts` in Python.
#[derive(Default)]
pub struct Facts {
    pub counts: BTreeMap<(u32, &'static str, bool), u64>,
    pub persistent_digest: u64,
    pub buckets: BTreeMap<u64, (u64, u64, u128)>, // start ms -> (keys, digest, sum of expiry ms)
}

impl Facts {
    pub fn add(
        &mut self,
        db: u32,
        kind: &'static str,
        digest: u64,
        expiry: Option<u64>,
        bucket_ms: u64,
    ) {
        *self.counts.entry((db, kind, expiry.is_some())).or_default() += 1;
        match expiry {
            None => self.persistent_digest = self.persistent_digest.wrapping_add(digest),
            Some(at) => {
                let b = self.buckets.entry(at / bucket_ms * bucket_ms).or_default();
                b.0 += 1;
                b.1 = b.1.wrapping_add(digest);
                b.2 += at as u128;
            }
        }
    }

    /// `"counts":[...],"persistent_digest":"...","buckets":[...]`, the fields
    /// `Facts.from_rdb_facts` reads.
    pub fn json_fields(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|((db, k, v), n)| format!("[{db},\"{k}\",{v},{n}]"))
            .collect();
        let buckets: Vec<String> = self
            .buckets
            .iter()
            .map(|(s, (n, d, e))| format!("[{s},{n},{},{e}]", hex(*d)))
            .collect();
        format!(
            "\"counts\":[{}],\"persistent_digest\":{},\"buckets\":[{}]",
            counts.join(","),
            hex(self.persistent_digest),
            buckets.join(",")
        )
    }
}

/// Length-prefixed parts, as `_lp` in Python: 8-byte big-endian length, then the bytes.
pub fn lp(h: &mut Sha256, part: &[u8]) {
    h.update((part.len() as u64).to_be_bytes());
    h.update(part);
}

/// First 64 bits of sha256(db, len(key), key, type, canonical value), as `key_hash` in Python.
pub fn key_hash(db: u32, key: &[u8], kind: &str, canonical: impl FnOnce(&mut Sha256)) -> u64 {
    let mut h = Sha256::new();
    h.update(format!("{db}\n{}\n", key.len()).as_bytes());
    h.update(key);
    h.update(kind.as_bytes());
    h.update(b"\n");
    canonical(&mut h);
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

/// The canonical values of `facts.canonical_value`, fed to a key's hash: the one definition
/// both rdb-facts (values decoded from an RDB) and redis-load (values read back) hash by.
pub mod canonical {
    use super::lp;
    use sha2::Sha256;

    /// A list: its elements in order.
    pub fn list<T: AsRef<[u8]>>(h: &mut Sha256, items: &[T]) {
        items.iter().for_each(|x| lp(h, x.as_ref()));
    }

    /// A set: its members sorted.
    pub fn set<T: AsRef<[u8]> + Ord>(h: &mut Sha256, members: &mut [T]) {
        members.sort_unstable();
        list(h, members);
    }

    /// A hash: its (field, value) pairs sorted by field.
    pub fn hash<F: AsRef<[u8]> + Ord, V: AsRef<[u8]>>(h: &mut Sha256, pairs: &mut [(F, V)]) {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        pairs.iter().for_each(|(f, v)| {
            lp(h, f.as_ref());
            lp(h, v.as_ref());
        });
    }

    /// A sorted set, in ZRANGE order: each member, then its score as a big-endian double.
    pub fn zset<M: AsRef<[u8]>>(h: &mut Sha256, ranked: impl Iterator<Item = (M, f64)>) {
        ranked.for_each(|(m, score)| {
            lp(h, m.as_ref());
            sha2::Digest::update(h, score.to_be_bytes());
        });
    }
}

pub fn hex(n: u64) -> String {
    format!("\"{n:016x}\"")
}

/// A JSON object's `{"k":n,...}` of a map, keys as strings.
pub fn json_map<K: std::fmt::Display, V: std::fmt::Display>(map: &BTreeMap<K, V>) -> String {
    let items: Vec<String> = map.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", items.join(","))
}
