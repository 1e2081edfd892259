//! redis-load: writes the keys of an RDB snapshot into an empty Redis server, then reads the
//! whole server back into content facts.
//!
//!     redis-load  < job (one JSON line)  > result.json
//!
//! It does the copy and read-back of `auction_backup_pipelines/redis/restore.py` and exists
//! because there every key costs three passes of Python's RESP packing and parsing (DUMP from a
//! scratch server loaded with the snapshot, RESTORE into the target, read back for the digest):
//! 6-11x the time of `redis-cli --pipe` feeding the same RESTORE commands. Here the snapshot is
//! read by the `rdb` crate (as rdb-facts reads it), no scratch server is started, and the
//! commands stream to the target over one pipelined connection (redis-rs), the next batch on
//! the wire while the server works through the previous one.
//!
//! Commands: keys without TTL that hold strings go in `MSETNX` batches (one command for many
//! keys: far less server work than a RESTORE each); every other key is `RESTORE key <expiry>
//! <payload> ABSTTL`, its payload serialized here in the RDB value encoding Redis has always
//! loaded (plain list, set, hash, ZSET_2), stamped with the snapshot's RDB version and CRC64,
//! as DUMP payloads are. Without REPLACE and with MSETNX, a key that appears in the target
//! meanwhile stops the load (exit 3) instead of being overwritten.
//!
//! The read-back then SCANs every db of the server and computes the facts exactly as
//! `facts.collect_facts` does (PEXPIRETIME and GET per key, typed reads for the others), for the
//! caller to compare with the backup's manifest.
//!
//! The job: `host`, `port`, `username`, `password` (on stdin: never in argv or the environment),
//! `rdb` (the path of the verified local copy), `bucket_ms`, `timeout_s`. Output: one JSON
//! object on stdout (exit 0); or one line on stderr: exit 3 when a key of the backup already
//! existed in the target, exit 2 for anything else. Keys it cannot serialize (streams, module
//! values, hashes with field TTLs) stop it before it connects: the caller takes the slow path.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::Duration;

use rdb::{RdbDecoder, RdbValue};
use rdb_facts::{json_map, key_hash, lp, CountUndecoded, Facts, CRC64};
use redis::{
    Cmd, Connection, ConnectionAddr, ConnectionLike, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use serde::Deserialize;
use sha2::Digest;

const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;
const SCAN_COUNT: usize = 1000;
// RDB value types of the payloads we write: the plain encodings every Redis version loads.
const TYPE_STRING: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_HASH: u8 = 4;
const TYPE_ZSET_2: u8 = 5;

#[derive(Deserialize)]
struct Job {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    rdb: String,
    bucket_ms: u64,
    timeout_s: f64,
}

enum Failure {
    Busy(String),
    Other(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.to_string())
    }
}

/// What a reply must be: OK, or MSETNX's 1 (0: one of its keys existed).
#[derive(Clone, Copy)]
enum Expect {
    Ok,
    AllSet,
}

/// Commands packed for one round, with the reply each must get.
#[derive(Default)]
struct Batch {
    packed: Vec<u8>,
    expect: Vec<Expect>,
    keys: u64,
}

/// Redis's length encoding (rdbSaveLen).
fn put_len(out: &mut Vec<u8>, n: usize) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u32::MAX as usize {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len());
    out.extend_from_slice(s);
}

/// A DUMP-format payload: type, value, the 2-byte RDB version, CRC64 of all that.
fn payload(version: u16, kind: u8, value: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![kind];
    value(&mut out);
    out.extend_from_slice(&version.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the snapshot and packs its keys into batches, in a thread of its own so that the next
/// batch is ready while the server works through the current one.
struct Packer {
    version: u16,
    batch: Batch,
    mset: Cmd,
    mset_keys: usize,
}

impl Packer {
    fn restore(
        &mut self,
        key: &[u8],
        expiry: Option<u64>,
        kind: u8,
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let body = payload(self.version, kind, value);
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(key)
            .arg(expiry.unwrap_or(0))
            .arg(body)
            .arg("ABSTTL");
        cmd.write_packed_command(&mut self.batch.packed);
        self.batch.expect.push(Expect::Ok);
        self.batch.keys += 1;
    }

    fn end_mset(&mut self) {
        if self.mset_keys > 0 {
            self.mset.write_packed_command(&mut self.batch.packed);
            self.batch.expect.push(Expect::AllSet);
            self.batch.keys += self.mset_keys as u64;
            self.mset = redis::cmd("MSETNX");
            self.mset_keys = 0;
        }
    }

    fn full(&self) -> bool {
        self.batch.expect.len() + self.mset_keys >= BATCH_KEYS
            || self.batch.packed.len() >= BATCH_BYTES
    }

    fn take(&mut self) -> Batch {
        self.end_mset();
        std::mem::take(&mut self.batch)
    }
}

/// Packs the keys of the RDB at `path` into batches for `out`; an Err ends the stream.
fn pack(path: &str, out: SyncSender<Result<Batch, String>>) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = out.send(Err(format!("cannot open {path}: {e}")));
            return;
        }
    };
    let filter = CountUndecoded::default();
    let undecoded = Rc::clone(&filter.kinds);
    let decoder = match RdbDecoder::new(BufReader::with_capacity(1 << 20, file), filter) {
        Ok(d) => d,
        Err(e) => {
            let _ = out.send(Err(format!("not an RDB file we can read: {e}")));
            return;
        }
    };
    let version = decoder.version() as u16;
    let mut p = Packer {
        version,
        batch: Batch::default(),
        mset: redis::cmd("MSETNX"),
        mset_keys: 0,
    };
    for item in decoder {
        if !undecoded.borrow().is_empty() {
            // The caller sends only snapshots whose every key rdb-facts decoded; this is the guard.
            let _ = out.send(Err(format!(
                "the snapshot holds keys this helper cannot write ({}); the target holds part of the backup",
                json_map(&undecoded.borrow())
            )));
            return;
        }
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                let _ = out.send(Err(format!("malformed RDB: {e}")));
                return;
            }
        };
        match item {
            RdbValue::SelectDb(db) => {
                let mut batch = p.take();
                redis::cmd("SELECT")
                    .arg(db)
                    .write_packed_command(&mut batch.packed);
                batch.expect.push(Expect::Ok);
                if out.send(Ok(batch)).is_err() {
                    return;
                }
                continue;
            }
            RdbValue::ResizeDb { .. } | RdbValue::AuxField { .. } | RdbValue::Checksum(_) => {
                continue
            }
            RdbValue::String {
                key,
                value,
                expiry: None,
            } => {
                p.mset.arg(key).arg(value);
                p.mset_keys += 1;
            }
            RdbValue::String { key, value, expiry } => {
                p.restore(&key, expiry, TYPE_STRING, |o| put_str(o, &value))
            }
            RdbValue::List {
                key,
                values,
                expiry,
            } => p.restore(&key, expiry, TYPE_LIST, |o| {
                put_len(o, values.len());
                values.iter().for_each(|v| put_str(o, v));
            }),
            RdbValue::Set {
                key,
                members,
                expiry,
            } => p.restore(&key, expiry, TYPE_SET, |o| {
                put_len(o, members.len());
                members.iter().for_each(|m| put_str(o, m));
            }),
            RdbValue::Hash {
                key,
                values,
                expiry,
            } => p.restore(&key, expiry, TYPE_HASH, |o| {
                put_len(o, values.len());
                values.iter().for_each(|(f, v)| {
                    put_str(o, f);
                    put_str(o, v);
                });
            }),
            RdbValue::SortedSet {
                key,
                values,
                expiry,
            } => p.restore(&key, expiry, TYPE_ZSET_2, |o| {
                put_len(o, values.len());
                values.iter().for_each(|(score, m)| {
                    put_str(o, m);
                    o.extend_from_slice(&score.to_le_bytes());
                });
            }),
        }
        if p.full() && out.send(Ok(p.take())).is_err() {
            return;
        }
    }
    let last = p.take();
    if !last.expect.is_empty() {
        let _ = out.send(Ok(last));
    }
}

fn check(reply: Value, expect: Expect) -> Result<(), Failure> {
    match (reply, expect) {
        (Value::Okay, Expect::Ok) | (Value::Int(1), Expect::AllSet) => Ok(()),
        (Value::Int(_), Expect::AllSet) => Err(Failure::Busy(
            "MSETNX found one of its keys already set".into(),
        )),
        (Value::ServerError(e), _) if e.code() == "BUSYKEY" => Err(Failure::Busy(format!("{e}"))),
        (Value::ServerError(e), _) => {
            Err(Failure::Other(format!("the target refused a write: {e}")))
        }
        (other, _) => Err(Failure::Other(format!(
            "unexpected reply to a write: {other:?}"
        ))),
    }
}

/// Sends each batch as soon as it is packed and the previous one's replies are being waited
/// for, so the server always has the next commands in its socket buffer. Returns keys written.
fn load(conn: &mut Connection, batches: Receiver<Result<Batch, String>>) -> Result<u64, Failure> {
    let mut in_flight: Option<Batch> = None;
    let mut keys = 0;
    loop {
        let next = batches.recv().ok().transpose().map_err(Failure::Other)?;
        if let Some(b) = &next {
            conn.send_packed_command(&b.packed)?;
        }
        if let Some(done) = in_flight.take() {
            for expect in done.expect {
                check(conn.recv_response()?, expect)?;
            }
            keys += done.keys;
        }
        match next {
            Some(b) => in_flight = Some(b),
            None => return Ok(keys),
        }
    }
}

fn items(v: Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(a) => a
            .into_iter()
            .filter_map(|x| {
                if let Value::BulkString(b) = x {
                    Some(b)
                } else {
                    None
                }
            })
            .collect(),
        _ => vec![],
    }
}

fn kind_name(v: &Value) -> &'static str {
    let name: &[u8] = match v {
        Value::SimpleString(s) => s.as_bytes(),
        Value::Okay => b"OK",
        _ => b"",
    };
    match name {
        b"string" => "string",
        b"hash" => "hash",
        b"list" => "list",
        b"set" => "set",
        b"zset" => "zset",
        b"stream" => "stream",
        b"none" => "none",
        _ => "other",
    }
}

fn run_pipeline(conn: &mut Connection, cmds: &[Cmd]) -> Result<Vec<Value>, Failure> {
    let mut packed = Vec::new();
    cmds.iter()
        .for_each(|c| c.write_packed_command(&mut packed));
    Ok(conn.req_packed_commands(&packed, 0, cmds.len())?)
}

/// A key read back, for the hashing thread: its kind, expiry and value as the server replied.
struct ReadKey {
    db: u32,
    kind: &'static str,
    key: Vec<u8>,
    expire_at: Option<u64>,
    value: Value,
}

/// Adds one key read back to `facts`, hashed exactly as `facts.canonical_value` + `key_hash` do.
fn add_read(facts: &mut Facts, r: ReadKey, bucket_ms: u64) {
    let ReadKey {
        db,
        kind,
        key,
        expire_at,
        value,
    } = r;
    let digest = match kind {
        "string" => match &value {
            Value::BulkString(v) => key_hash(db, &key, kind, |h| h.update(v)),
            _ => return, // gone since the scan
        },
        "hash" | "list" | "set" | "zset" => {
            let mut parts = items(value);
            if parts.is_empty() {
                return; // deleted since the scan (Redis removes empty collections)
            }
            key_hash(db, &key, kind, |h| match kind {
                "hash" => {
                    let mut pairs: Vec<_> = parts.chunks(2).collect();
                    pairs.sort_unstable();
                    pairs.iter().flat_map(|p| p.iter()).for_each(|x| lp(h, x));
                }
                "set" => {
                    parts.sort_unstable();
                    parts.iter().for_each(|x| lp(h, x));
                }
                "zset" => parts.chunks(2).for_each(|p| {
                    lp(h, &p[0]);
                    let score: f64 = String::from_utf8_lossy(&p[1]).parse().unwrap_or(f64::NAN);
                    h.update(score.to_be_bytes());
                }),
                _ => parts.iter().for_each(|x| lp(h, x)),
            })
        }
        // Kinds a snapshot it loaded cannot hold: counted, so the comparison names them.
        _ => 0,
    };
    facts.add(db, kind, digest, expire_at, bucket_ms);
}

fn scan_reply(v: Value) -> Result<(u64, Vec<Vec<u8>>), Failure> {
    if let Value::ServerError(e) = &v {
        return Err(Failure::Other(format!("SCAN failed: {e}")));
    }
    Ok(redis::from_redis_value(v)?)
}

/// A batch of reads on the wire: whether a SCAN leads it, and the keys whose reads follow.
struct Sent {
    scan: bool,
    keys: Vec<Vec<u8>>,
}

fn scan_cmd(cursor: u64) -> Cmd {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .clone()
}

/// Sends `SCAN cursor` (if any), then PEXPIRETIME for each key and one MGET of them all (a
/// value per key, nil for keys of other types): a third fewer commands than a GET each.
fn send_reads(conn: &mut Connection, cursor: Option<u64>, keys: &[Vec<u8>]) -> Result<(), Failure> {
    let mut packed = Vec::new();
    if let Some(c) = cursor {
        scan_cmd(c).write_packed_command(&mut packed);
    }
    keys.iter().for_each(|k| {
        redis::cmd("PEXPIRETIME")
            .arg(k)
            .write_packed_command(&mut packed)
    });
    if !keys.is_empty() {
        redis::cmd("MGET")
            .arg(keys)
            .write_packed_command(&mut packed);
    }
    Ok(conn.send_packed_command(&packed)?)
}

/// Every key of db `db`, read as `facts.collect_facts` reads them, to the hashing thread.
///
/// Each batch on the wire is the SCAN for the next keys and the reads of the current ones;
/// as soon as a SCAN's reply is in, the next batch is sent, before the current reads'
/// replies are taken, so the server always has work queued, and the hashing runs in another
/// thread. Keys of other types than string are read on a second connection (`typed`), as
/// the first one has replies in flight.
fn read_db(
    conn: &mut Connection,
    typed: &mut Connection,
    db: u32,
    out: &SyncSender<ReadKey>,
) -> Result<(), Failure> {
    redis::cmd("SELECT").arg(db).exec(conn)?;
    redis::cmd("SELECT").arg(db).exec(typed)?;
    let seen_hasher = RandomState::new();
    let mut seen: HashSet<u64> = HashSet::new(); // 8 bytes a key; SCAN may repeat keys while a table resizes
    let gone = |_| Failure::Other("the hashing thread stopped".into());
    send_reads(conn, Some(0), &[])?;
    let mut in_flight = VecDeque::from([Sent {
        scan: true,
        keys: vec![],
    }]);
    while let Some(sent) = in_flight.pop_front() {
        if sent.scan {
            let (cursor, mut keys) = scan_reply(conn.recv_response()?)?;
            keys.retain(|k| seen.insert(seen_hasher.hash_one(k)));
            if cursor != 0 || !keys.is_empty() {
                send_reads(conn, (cursor != 0).then_some(cursor), &keys)?;
                in_flight.push_back(Sent {
                    scan: cursor != 0,
                    keys,
                });
            }
        }
        if sent.keys.is_empty() {
            continue;
        }
        let expires = (0..sent.keys.len())
            .map(|_| conn.recv_response())
            .collect::<Result<Vec<_>, _>>()?;
        let values = match conn.recv_response()? {
            Value::Array(values) if values.len() == sent.keys.len() => values,
            other => {
                return Err(Failure::Other(format!(
                    "unexpected reply to MGET: {other:?}"
                )))
            }
        };
        let mut others = vec![];
        for ((key, expire), value) in sent.keys.into_iter().zip(expires).zip(values) {
            let expire_at = match expire {
                Value::Int(-2) => continue, // gone since the scan
                Value::Int(n) if n >= 0 => Some(n as u64),
                Value::Int(_) => None,
                other => {
                    return Err(Failure::Other(format!(
                        "unexpected reply to PEXPIRETIME: {other:?}"
                    )))
                }
            };
            match value {
                Value::Nil => others.push((key, expire_at)), // another type, or gone since
                value => out
                    .send(ReadKey {
                        db,
                        kind: "string",
                        key,
                        expire_at,
                        value,
                    })
                    .map_err(gone)?,
            }
        }
        if !others.is_empty() {
            read_typed(typed, db, others, out)?;
        }
    }
    Ok(())
}

/// The keys MGET found no string for: TYPE, then the read that fits each.
fn read_typed(
    conn: &mut Connection,
    db: u32,
    others: Vec<(Vec<u8>, Option<u64>)>,
    out: &SyncSender<ReadKey>,
) -> Result<(), Failure> {
    let gone = |_| Failure::Other("the hashing thread stopped".into());
    let types: Vec<Cmd> = others
        .iter()
        .map(|(k, _)| redis::cmd("TYPE").arg(k).clone())
        .collect();
    let kinds: Vec<&'static str> = run_pipeline(conn, &types)?.iter().map(kind_name).collect();
    let reads: Vec<Cmd> = others
        .iter()
        .zip(&kinds)
        .map(|((k, _), kind)| match *kind {
            "hash" => redis::cmd("HGETALL").arg(k).clone(),
            "list" => redis::cmd("LRANGE").arg(k).arg(0).arg(-1).clone(),
            "set" => redis::cmd("SMEMBERS").arg(k).clone(),
            "zset" => redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "string" => redis::cmd("GET").arg(k).clone(), // set since the MGET
            _ => redis::cmd("EXISTS").arg(k).clone(),
        })
        .collect();
    let values = run_pipeline(conn, &reads)?;
    for (((key, expire_at), kind), value) in others.into_iter().zip(kinds).zip(values) {
        if let Value::ServerError(e) = &value {
            return Err(Failure::Other(format!(
                "reading back {}: {e}",
                String::from_utf8_lossy(&key)
            )));
        }
        if kind != "none" {
            out.send(ReadKey {
                db,
                kind,
                key,
                expire_at,
                value,
            })
            .map_err(gone)?;
        }
    }
    Ok(())
}

/// The dbs holding keys, from INFO keyspace (`db3:keys=...`).
fn dbs_with_keys(conn: &mut Connection) -> Result<Vec<u32>, Failure> {
    let info: String = redis::cmd("INFO").arg("keyspace").query(conn)?;
    Ok(info
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect())
}

fn run() -> Result<String, Failure> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let job: Job =
        serde_json::from_str(&line).map_err(|e| format!("the job on stdin is not valid: {e}"))?;
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(user) = job.username.as_deref().filter(|u| !u.is_empty()) {
        settings = settings.set_username(user);
    }
    if let Some(password) = job.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(job.host.clone(), job.port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let timeout = Duration::from_secs_f64(job.timeout_s.max(1.0));
    let client = redis::Client::open(info)?;
    let connect = || -> Result<Connection, Failure> {
        let conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    };
    let mut conn = connect()?;

    let (tx, rx) = sync_channel(2);
    let path = job.rdb.clone();
    let packer = thread::spawn(move || pack(&path, tx));
    let loaded = load(&mut conn, rx);
    packer
        .join()
        .map_err(|_| "the RDB reader panicked".to_string())?;
    let keys_written = loaded?;

    let bucket_ms = job.bucket_ms.max(1);
    let (tx, rx) = sync_channel::<ReadKey>(4 * SCAN_COUNT);
    let hasher = thread::spawn(move || {
        let mut facts = Facts::default();
        rx.into_iter()
            .for_each(|r| add_read(&mut facts, r, bucket_ms));
        facts
    });
    let read = connect().and_then(|mut typed| {
        dbs_with_keys(&mut conn)?
            .into_iter()
            .try_for_each(|db| read_db(&mut conn, &mut typed, db, &tx))
    });
    drop(tx);
    let facts = hasher
        .join()
        .map_err(|_| "the hashing thread panicked".to_string())?;
    read?;
    Ok(format!(
        "{{\"keys_written\":{keys_written},{}}}",
        facts.json_fields()
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(Failure::Busy(message)) => {
            eprintln!("{message}");
            ExitCode::from(3)
        }
        Err(Failure::Other(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
