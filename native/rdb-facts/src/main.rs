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

use std::cell::RefCell;
use std::cmp::Ordering;
use std::io::{self, BufReader, Write};
use std::process::ExitCode;
use std::rc::Rc;

use rdb::{RdbDecoder, RdbValue};
use rdb_facts::{
    canonical, json_map, key_hash, CountUndecoded, Crc64Reader, Facts, CHECKSUM_LEN, CRC64,
};
use sha2::{Digest, Sha256};

/// A decoded key: its kind, name, expiry, and what feeds its canonical value to the hash.
type Keyed = (
    &'static str,
    Vec<u8>,
    Option<u64>,
    Box<dyn FnOnce(&mut Sha256)>,
);

fn run(bucket_ms: u64, captured_ms: u64) -> Result<String, String> {
    let crc = Rc::new(RefCell::new((
        CRC64.digest(),
        Vec::with_capacity(2 * CHECKSUM_LEN),
    )));
    let input = BufReader::with_capacity(
        1 << 20,
        Crc64Reader {
            inner: io::stdin().lock(),
            state: Rc::clone(&crc),
        },
    );
    let filter = CountUndecoded::default();
    let undecoded_keys = Rc::clone(&filter.undecoded);
    let undecoded_kinds = Rc::clone(&filter.kinds);
    let decoder =
        RdbDecoder::new(input, filter).map_err(|e| format!("not an RDB file we can read: {e}"))?;
    let version = decoder.version();
    let mut facts = Facts::default();
    let mut expired = 0u64;
    let mut db = 0u32;
    let mut checksum: Option<Vec<u8>> = None;
    for item in decoder {
        let item = item.map_err(|e| format!("malformed RDB: {e}"))?;
        let (kind, key, expiry, hash): Keyed = match item {
            RdbValue::SelectDb(n) => {
                db = n;
                continue;
            }
            RdbValue::Checksum(bytes) => {
                checksum = Some(bytes);
                continue;
            }
            RdbValue::ResizeDb { .. } | RdbValue::AuxField { .. } => continue,
            RdbValue::String { key, value, expiry } => (
                "string",
                key,
                expiry,
                Box::new(move |h: &mut Sha256| h.update(&value)),
            ),
            RdbValue::List {
                key,
                values,
                expiry,
            } => (
                "list",
                key,
                expiry,
                Box::new(move |h: &mut Sha256| canonical::list(h, &values)),
            ),
            RdbValue::Set {
                key,
                mut members,
                expiry,
            } => (
                "set",
                key,
                expiry,
                Box::new(move |h: &mut Sha256| canonical::set(h, &mut members)),
            ),
            RdbValue::Hash {
                key,
                values,
                expiry,
            } => {
                let mut pairs: Vec<_> = values.into_iter().collect();
                (
                    "hash",
                    key,
                    expiry,
                    Box::new(move |h: &mut Sha256| canonical::hash(h, &mut pairs)),
                )
            }
            RdbValue::SortedSet {
                key,
                mut values,
                expiry,
            } => {
                // ZRANGE order: by score, then by member bytes. Not total_cmp: Redis ranks -0 and 0
                // as equal scores (then by member); a sorted set never holds NaN.
                values.sort_unstable_by(|a, b| {
                    a.0.partial_cmp(&b.0)
                        .unwrap_or(Ordering::Equal)
                        .then_with(|| a.1.cmp(&b.1))
                });
                (
                    "zset",
                    key,
                    expiry,
                    Box::new(move |h: &mut Sha256| {
                        canonical::zset(h, values.iter().map(|(s, m)| (m, *s)))
                    }),
                )
            }
        };
        if expiry.is_some_and(|at| at <= captured_ms) {
            expired += 1;
            continue;
        }
        let digest = key_hash(db, &key, kind, hash);
        facts.add(db, kind, digest, expiry, bucket_ms);
    }
    match checksum {
        None => return Err("the RDB ended before its end marker".into()),
        Some(stored) if version >= 5 => {
            // RDB 5+ ends with the CRC64 of everything before it; 0 means written with rdbchecksum no.
            let stored: [u8; CHECKSUM_LEN] = stored[..]
                .try_into()
                .map_err(|_| format!("the RDB's checksum is {} bytes, not 8", stored.len()))?;
            let computed = crc.borrow().0.clone().finalize();
            let stored = u64::from_le_bytes(stored);
            if stored != 0 && stored != computed {
                return Err(format!("the RDB's checksum does not match its content (stored {stored:016x}, computed {computed:016x})"));
            }
        }
        Some(_) => {}
    }
    Ok(format!(
        "{{\"rdb_version\":{version},{},\"expired\":{expired},\"undecoded\":{},\"undecoded_kinds\":{}}}\n",
        facts.json_fields(),
        json_map(&undecoded_keys.borrow()),
        json_map(&undecoded_kinds.borrow())
    ))
}

fn main() -> ExitCode {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
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
