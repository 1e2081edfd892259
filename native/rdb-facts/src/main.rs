//! rdb-facts: the content facts of a Redis RDB snapshot, read from stdin as it streams in.
//!
//!     rdb-facts <bucket-ms> <captured-at-ms>  < dump.rdb  > facts.json
//!
//! It computes exactly what `auction_backup_pipelines.redis.facts.collect_facts` computes on a
//! live server (the same per-key hash, counts and expiry buckets), so a restore read back
//! through Redis compares with it. It exists because that digest in Python costs ~10 µs a
//! key after loading the snapshot into a scratch server; here it runs while the snapshot is
//! still being transferred. The `rdb` crate does the parsing; only the digest is ours.
//!
//! Keys the crate does not decode (streams, module values), or decodes differently from what
//! Redis serves (hashes with per-field TTLs, whose expired fields it keeps), are counted per
//! db in `undecoded` and per kind (`stream`, `module`, `hash_field_ttl`) in `undecoded_kinds`:
//! the caller computes those on a scratch server instead, and says which kind sent it there. Keys whose expiry
//! is at or before `captured-at-ms` are left out, as a server loading the file would drop them.
//! The RDB's trailing CRC64 is checked, as Redis checks it when it loads the file.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::process::ExitCode;
use std::rc::Rc;

use crc::{Crc, Digest as CrcDigest, Table, CRC_64_REDIS};
use rdb::filter::Filter;
use rdb::{RdbDecoder, RdbValue};
use sha2::{Digest, Sha256};

const STREAM_TYPES: [u8; 4] = [15, 19, 21, 26];
const MODULE_TYPES: [u8; 2] = [6, 7];
const FIELD_TTL_HASH_TYPES: [u8; 4] = [22, 23, 24, 25]; // Redis 7.4+
const CHECKSUM_LEN: usize = 8;

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Passes bytes through while taking Redis's CRC64 of all but the last 8 (the checksum itself).
struct Crc64Reader<R> {
    inner: R,
    state: Rc<RefCell<(CrcDigest<'static, u64, Table<16>>, Vec<u8>)>>, // digest, the last <= 8 bytes seen
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
fn undecoded_kind(enc_type: u8) -> Option<&'static str> {
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
/// per db and per kind, so the caller can say which keys sent it to a scratch server.
#[derive(Default)]
struct CountUndecoded {
    db: Cell<u32>,
    undecoded: Rc<RefCell<BTreeMap<u32, u64>>>,
    kinds: Rc<RefCell<BTreeMap<&'static str, u64>>>,
}

impl Filter for CountUndecoded {
    fn matches_db(&self, db: u32) -> bool {
        self.db.set(db);
        true
    }
    fn matches_type(&self, enc_type: u8) -> bool {
        if let Some(kind) = undecoded_kind(enc_type) {
            *self.undecoded.borrow_mut().entry(self.db.get()).or_default() += 1;
            *self.kinds.borrow_mut().entry(kind).or_default() += 1;
            return false;
        }
        true
    }
}

#[derive(Default)]
struct Facts {
    counts: BTreeMap<(u32, &'static str, bool), u64>,
    persistent_digest: u64,
    buckets: BTreeMap<u64, (u64, u64, u128)>, // start ms -> (keys, digest, sum of expiry ms)
    expired: u64,
}

impl Facts {
    fn add(&mut self, db: u32, kind: &'static str, digest: u64, expiry: Option<u64>, bucket_ms: u64) {
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
}

/// Length-prefixed parts, as `_lp` in Python: 8-byte big-endian length, then the bytes.
fn lp(h: &mut Sha256, part: &[u8]) {
    h.update((part.len() as u64).to_be_bytes());
    h.update(part);
}

/// First 64 bits of sha256(db, len(key), key, type, canonical value), as `key_hash` in Python.
fn key_hash(db: u32, key: &[u8], kind: &str, canonical: impl FnOnce(&mut Sha256)) -> u64 {
    let mut h = Sha256::new();
    h.update(format!("{db}\n{}\n", key.len()).as_bytes());
    h.update(key);
    h.update(kind.as_bytes());
    h.update(b"\n");
    canonical(&mut h);
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

fn hex(n: u64) -> String {
    format!("\"{n:016x}\"")
}

fn run(bucket_ms: u64, captured_ms: u64) -> Result<String, String> {
    let crc = Rc::new(RefCell::new((CRC64.digest(), Vec::with_capacity(2 * CHECKSUM_LEN))));
    let input = BufReader::with_capacity(1 << 20, Crc64Reader { inner: io::stdin().lock(), state: Rc::clone(&crc) });
    let filter = CountUndecoded::default();
    let undecoded_keys = Rc::clone(&filter.undecoded);
    let undecoded_kinds = Rc::clone(&filter.kinds);
    let decoder = RdbDecoder::new(input, filter).map_err(|e| format!("not an RDB file we can read: {e}"))?;
    let version = decoder.version();
    let mut facts = Facts::default();
    let mut db = 0u32;
    let mut checksum: Option<Vec<u8>> = None;
    for item in decoder {
        let item = item.map_err(|e| format!("malformed RDB: {e}"))?;
        let (kind, key, expiry, hash): (&'static str, Vec<u8>, Option<u64>, Box<dyn FnOnce(&mut Sha256)>) = match item {
            RdbValue::SelectDb(n) => {
                db = n;
                continue;
            }
            RdbValue::Checksum(bytes) => {
                checksum = Some(bytes);
                continue;
            }
            RdbValue::ResizeDb { .. } | RdbValue::AuxField { .. } => continue,
            RdbValue::String { key, value, expiry } => ("string", key, expiry, Box::new(move |h: &mut Sha256| h.update(&value))),
            RdbValue::List { key, values, expiry } => ("list", key, expiry, Box::new(move |h: &mut Sha256| values.iter().for_each(|v| lp(h, v)))),
            RdbValue::Set { key, mut members, expiry } => {
                members.sort_unstable();
                ("set", key, expiry, Box::new(move |h: &mut Sha256| members.iter().for_each(|m| lp(h, m))))
            }
            RdbValue::Hash { key, values, expiry } => {
                let mut pairs: Vec<_> = values.into_iter().collect();
                pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                ("hash", key, expiry, Box::new(move |h: &mut Sha256| pairs.iter().for_each(|(f, v)| { lp(h, f); lp(h, v) })))
            }
            RdbValue::SortedSet { key, mut values, expiry } => {
                // ZRANGE order: by score, then by member bytes. Not total_cmp: Redis ranks -0 and 0
                // as equal scores (then by member); a sorted set never holds NaN.
                values.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal).then_with(|| a.1.cmp(&b.1)));
                ("zset", key, expiry, Box::new(move |h: &mut Sha256| values.iter().for_each(|(s, m)| {
                    lp(h, m);
                    h.update(s.to_be_bytes());
                })))
            }
        };
        if expiry.is_some_and(|at| at <= captured_ms) {
            facts.expired += 1;
            continue;
        }
        let digest = key_hash(db, &key, kind, hash);
        facts.add(db, kind, digest, expiry, bucket_ms);
    }
    match checksum {
        None => return Err("the RDB ended before its end marker".into()),
        Some(stored) if version >= 5 => {
            // RDB 5+ ends with the CRC64 of everything before it; 0 means written with rdbchecksum no.
            let stored: [u8; CHECKSUM_LEN] =
                stored[..].try_into().map_err(|_| format!("the RDB's checksum is {} bytes, not 8", stored.len()))?;
            let computed = crc.borrow().0.clone().finalize();
            let stored = u64::from_le_bytes(stored);
            if stored != 0 && stored != computed {
                return Err(format!("the RDB's checksum does not match its content (stored {stored:016x}, computed {computed:016x})"));
            }
        }
        Some(_) => {}
    }
    let counts: Vec<String> = facts.counts.iter().map(|((db, k, v), n)| format!("[{db},\"{k}\",{v},{n}]")).collect();
    let buckets: Vec<String> = facts.buckets.iter().map(|(s, (n, d, e))| format!("[{s},{n},{},{e}]", hex(*d))).collect();
    let undecoded: Vec<String> = undecoded_keys.borrow().iter().map(|(db, n)| format!("\"{db}\":{n}")).collect();
    let kinds: Vec<String> = undecoded_kinds.borrow().iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
    Ok(format!(
        "{{\"rdb_version\":{version},\"counts\":[{}],\"persistent_digest\":{},\"buckets\":[{}],\"expired\":{},\"undecoded\":{{{}}},\"undecoded_kinds\":{{{}}}}}\n",
        counts.join(","), hex(facts.persistent_digest), buckets.join(","), facts.expired, undecoded.join(","), kinds.join(",")
    ))
}

fn main() -> ExitCode {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [bucket_ms, captured_ms] = args[..] else {
        eprintln!("usage: rdb-facts <bucket-ms> <captured-at-ms> < dump.rdb");
        return ExitCode::from(2);
    };
    match run(bucket_ms.max(1), captured_ms) {
        Ok(json) => {
            io::stdout().write_all(json.as_bytes()).expect("stdout");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Drain stdin so the writer on the other end of the pipe sees no broken pipe.
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            eprintln!("rdb-facts: {e}");
            ExitCode::from(1)
        }
    }
}
