//! redis-load: writes the keys of an RDB snapshot into an empty Redis server and reads each one
//! back into content facts as it goes.
//!
//!     redis-load  < job (one JSON line)  > result.json
//!
//! It does the copy and read-back of `auction_backup_pipelines/redis/restore.py` and exists
//! because there every key costs three passes of Python's RESP packing and parsing (DUMP from a
//! scratch server loaded with the snapshot, RESTORE into the target, read back for the digest):
//! 6-11x the time of `redis-cli --pipe` feeding the same RESTORE commands. Here the snapshot is
//! read by the `rdb` crate (as rdb-facts reads it), no scratch server is started, and the
//! commands stream to the target over one pipelined connection (redis-rs): the next batch is
//! on the wire while the server works through the previous one, the reading and packing of the
//! snapshot runs in a thread of its own, and so does the hashing of what was read back.
//!
//! Writes: keys without TTL that hold strings go in `MSETNX` batches (one command for many keys:
//! far less server work than a RESTORE each); every other key is `RESTORE key <expiry> <payload>
//! ABSTTL`, its payload serialized here in the RDB value encoding Redis has always loaded (plain
//! list, set, hash, ZSET_2), stamped with an RDB version and a CRC64, as DUMP payloads
//! are. Without REPLACE and with MSETNX, a key that appears in the target meanwhile stops the
//! load (exit 3) instead of being overwritten; with the job's `replace` (a restore with
//! `--force`), RESTORE ... REPLACE and MSET overwrite keys of the same name and keep the others.
//!
//! Read-back: each batch ends with the reads of its own keys (PEXPIRETIME each, one MGET for the
//! strings, HGETALL / LRANGE / SMEMBERS / ZRANGE for the others), which the server runs right
//! after the batch's writes on the same connection; they are hashed exactly as
//! `facts.collect_facts` hashes them, for the caller to compare with the manifest. A SCAN of the
//! server afterwards would cost the server a third more work and find nothing more: instead,
//! INFO keyspace at the end gives, per db, the keys the server holds beside the keys read back
//! (and those whose TTL has run out since): into an empty server they must be the same, so a key
//! someone else added, or one of ours deleted, shows there (the caller judges it).
//!
//! The job: `host`, `port`, `username`, `password` (on stdin: never in argv or the environment),
//! `tls` (the REDIS_TLS* files, or none), `rdb` (the path of the verified local copy),
//! `bucket_ms`, `timeout_s`, `replace`. Output: one JSON
//! object on stdout (exit 0); or one line on stderr: exit 3 when a key of the backup already
//! existed in the target, 4 when it could not connect (nothing written), 2 for anything else. The caller sends only snapshots whose every
//! key rdb-facts decoded; one with streams, module values or hashes with field TTLs stops it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::Duration;

use rdb::{RdbDecoder, RdbValue};
use rdb_facts::{canonical, json_map, key_hash, CountUndecoded, Facts, CRC64};
use redis::{
    ClientTlsConfig, Cmd, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates, Value,
};
use serde::Deserialize;
use sha2::Digest;

const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;
// RDB value types of the payloads we write: the plain encodings every Redis version loads.
// They are stamped RDB 9 (Redis 5), the oldest version that knows them all (ZSET_2 came with
// RDB 8), so that a target older than the server the snapshot came from still takes them:
// RESTORE refuses only payloads newer than itself.
const PAYLOAD_RDB_VERSION: u16 = 9;
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
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    tls: Option<Tls>,
}

/// REDIS_TLS: the server's certificate and host name are verified (against `ca_file`, else the
/// system's CAs); `cert_file` and `key_file` are a client certificate for servers that ask.
#[derive(Deserialize)]
struct Tls {
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
}

fn read_pem(setting: &str, path: &str) -> Result<Option<Vec<u8>>, Failure> {
    if path.is_empty() {
        return Ok(None);
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| Failure::Other(format!("{setting} {path}: {e}")))
}

/// A client for the job's server: TLS (verified) when the job has `tls`, else plain TCP.
fn client(job: &Job, settings: RedisConnectionInfo) -> Result<redis::Client, Failure> {
    let Some(tls) = &job.tls else {
        let info = ConnectionAddr::Tcp(job.host.clone(), job.port).into_connection_info()?;
        return Ok(redis::Client::open(info.set_redis_settings(settings))?);
    };
    let addr = ConnectionAddr::TcpTls {
        host: job.host.clone(),
        port: job.port,
        insecure: false,
        tls_params: None,
    };
    let client_tls = match (
        read_pem("REDIS_TLS_CERT_FILE", &tls.cert_file)?,
        read_pem("REDIS_TLS_KEY_FILE", &tls.key_file)?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    let certificates = TlsCertificates {
        client_tls,
        root_cert: read_pem("REDIS_TLS_CA_FILE", &tls.ca_file)?,
    };
    Ok(redis::Client::build_with_tls(
        addr.into_connection_info()?.set_redis_settings(settings),
        certificates,
    )?)
}

enum Failure {
    Busy(String),
    NotConnected(String), // before the first write: nothing changed
    Other(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.to_string())
    }
}

/// What the reply to each command of a batch must be, in order.
enum Reply {
    Ok,                  // SELECT, RESTORE
    AllSet,              // MSETNX: 1 (0: one of its keys existed); MSET: OK
    Expiry(usize),       // PEXPIRETIME of the batch's key i
    Strings(Vec<usize>), // MGET of the batch's string keys
    Value(usize),        // the typed read of key i
}

/// Commands packed for one round: a db's writes, then the reads of the same keys.
#[derive(Default)]
struct Batch {
    db: u32,
    packed: Vec<u8>,
    replies: Vec<Reply>,
    keys: Vec<(Vec<u8>, &'static str)>, // written in this batch, with their kind
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
fn payload(kind: u8, value: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![kind];
    value(&mut out);
    out.extend_from_slice(&PAYLOAD_RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Packs the snapshot's keys into batches (in the packing thread).
struct Packer {
    batch: Batch,
    mset: Cmd,
    mset_keys: usize,
    mset_bytes: usize, // the keys' and values' bytes in `mset`, not yet in `batch.packed`
    replace: bool,
}

impl Packer {
    /// MSETNX, or with `replace` MSET (which also clears a replaced key's TTL, as RESTORE REPLACE does).
    fn new_mset(&self) -> Cmd {
        redis::cmd(if self.replace { "MSET" } else { "MSETNX" })
    }

    fn restore(
        &mut self,
        key: Vec<u8>,
        kind: &'static str,
        expiry: Option<u64>,
        rdb_type: u8,
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let body = payload(rdb_type, value);
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(&key)
            .arg(expiry.unwrap_or(0))
            .arg(body)
            .arg("ABSTTL");
        if self.replace {
            cmd.arg("REPLACE");
        }
        cmd.write_packed_command(&mut self.batch.packed);
        self.batch.replies.push(Reply::Ok);
        self.batch.keys.push((key, kind));
    }

    fn mset(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.mset_bytes += key.len() + value.len();
        self.mset.arg(&key).arg(value);
        self.mset_keys += 1;
        self.batch.keys.push((key, "string"));
    }

    /// A batch holds at most BATCH_KEYS keys and about BATCH_BYTES of commands: large values
    /// make small batches, so memory and the server's query buffer stay bounded.
    fn full(&self) -> bool {
        self.batch.keys.len() >= BATCH_KEYS
            || self.batch.packed.len() + self.mset_bytes >= BATCH_BYTES
    }

    /// The batch so far, its reads appended; the next one starts in the same db.
    fn take(&mut self) -> Batch {
        if self.mset_keys > 0 {
            let fresh = self.new_mset();
            let mset = std::mem::replace(&mut self.mset, fresh);
            mset.write_packed_command(&mut self.batch.packed);
            self.batch.replies.push(if self.replace {
                Reply::Ok
            } else {
                Reply::AllSet
            });
            self.mset_keys = 0;
            self.mset_bytes = 0;
        }
        let db = self.batch.db;
        let mut b = std::mem::replace(
            &mut self.batch,
            Batch {
                db,
                ..Batch::default()
            },
        );
        let mut strings = redis::cmd("MGET");
        let mut string_keys = vec![];
        for (i, (key, _)) in b.keys.iter().enumerate() {
            redis::cmd("PEXPIRETIME")
                .arg(key)
                .write_packed_command(&mut b.packed);
            b.replies.push(Reply::Expiry(i));
        }
        for (i, (key, kind)) in b.keys.iter().enumerate() {
            let read = match *kind {
                "string" => {
                    strings.arg(key);
                    string_keys.push(i);
                    continue;
                }
                "hash" => redis::cmd("HGETALL").arg(key).clone(),
                "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(key).clone(),
                _ => redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .clone(),
            };
            read.write_packed_command(&mut b.packed);
            b.replies.push(Reply::Value(i));
        }
        if !string_keys.is_empty() {
            strings.write_packed_command(&mut b.packed);
            b.replies.push(Reply::Strings(string_keys));
        }
        b
    }
}

/// Packs the keys of the RDB at `path` into batches for `out`; an Err ends the stream.
fn pack(path: &str, replace: bool, out: SyncSender<Result<Batch, String>>) {
    let fail = |message: String| {
        let _ = out.send(Err(message));
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open {path}: {e}")),
    };
    let filter = CountUndecoded::default();
    let undecoded = Rc::clone(&filter.kinds);
    let decoder = match RdbDecoder::new(BufReader::with_capacity(1 << 20, file), filter) {
        Ok(d) => d,
        Err(e) => return fail(format!("not an RDB file we can read: {e}")),
    };
    let mut p = Packer {
        batch: Batch::default(),
        mset: redis::cmd("MSETNX"),
        mset_keys: 0,
        mset_bytes: 0,
        replace,
    };
    p.mset = p.new_mset();
    for item in decoder {
        if !undecoded.borrow().is_empty() {
            return fail(format!(
                "the snapshot holds keys this helper cannot write ({}); the target holds part of the backup",
                json_map(&undecoded.borrow())
            ));
        }
        let item = match item {
            Ok(item) => item,
            Err(e) => return fail(format!("malformed RDB: {e}")),
        };
        match item {
            RdbValue::SelectDb(db) => {
                let batch = p.take();
                if !batch.replies.is_empty() && out.send(Ok(batch)).is_err() {
                    return;
                }
                p.batch.db = db;
                redis::cmd("SELECT")
                    .arg(db)
                    .write_packed_command(&mut p.batch.packed);
                p.batch.replies.push(Reply::Ok);
                continue;
            }
            RdbValue::ResizeDb { .. } | RdbValue::AuxField { .. } | RdbValue::Checksum(_) => {
                continue
            }
            RdbValue::String {
                key,
                value,
                expiry: None,
            } => p.mset(key, value),
            RdbValue::String { key, value, expiry } => {
                p.restore(key, "string", expiry, TYPE_STRING, |o| put_str(o, &value))
            }
            RdbValue::List {
                key,
                values,
                expiry,
            } => p.restore(key, "list", expiry, TYPE_LIST, |o| {
                put_len(o, values.len());
                values.iter().for_each(|v| put_str(o, v));
            }),
            RdbValue::Set {
                key,
                members,
                expiry,
            } => p.restore(key, "set", expiry, TYPE_SET, |o| {
                put_len(o, members.len());
                members.iter().for_each(|m| put_str(o, m));
            }),
            RdbValue::Hash {
                key,
                values,
                expiry,
            } => p.restore(key, "hash", expiry, TYPE_HASH, |o| {
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
            } => p.restore(key, "zset", expiry, TYPE_ZSET_2, |o| {
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
    if !last.replies.is_empty() {
        let _ = out.send(Ok(last));
    }
}

/// A key read back, for the hashing thread: its kind, expiry and value as the server replied.
struct ReadKey {
    db: u32,
    kind: &'static str,
    key: Vec<u8>,
    expire_at: Option<u64>,
    value: Value,
}

/// Per db: the keys read back, and the expiry times of those with a TTL (ms -> keys).
#[derive(Default)]
struct Found {
    keys: u64,
    expiring: BTreeMap<u64, u64>,
}

fn write_refused(reply: Value, all_set: bool) -> Result<(), Failure> {
    match reply {
        Value::Okay if !all_set => Ok(()),
        Value::Int(1) if all_set => Ok(()),
        Value::Int(_) if all_set => Err(Failure::Busy(
            "MSETNX found one of its keys already set".into(),
        )),
        Value::ServerError(e) if e.code() == "BUSYKEY" => Err(Failure::Busy(format!("{e}"))),
        Value::ServerError(e) => Err(Failure::Other(format!("the target refused a write: {e}"))),
        other => Err(Failure::Other(format!(
            "unexpected reply to a write: {other:?}"
        ))),
    }
}

/// Takes the replies of one batch: checks its writes, passes its reads to the hashing thread.
fn receive(conn: &mut Connection, batch: Batch, out: &SyncSender<ReadKey>) -> Result<(), Failure> {
    let Batch {
        db, replies, keys, ..
    } = batch;
    let (mut keys, kinds): (Vec<Option<Vec<u8>>>, Vec<&'static str>) =
        keys.into_iter().map(|(k, kind)| (Some(k), kind)).unzip();
    let mut expiry: Vec<Option<Option<u64>>> = vec![None; keys.len()]; // None: gone
    let gone = |_| Failure::Other("the hashing thread stopped".into());
    let mut send = |i: usize, kind: &'static str, value: Value, expiry: &[Option<Option<u64>>]| {
        match (expiry[i], keys[i].take()) {
            (Some(expire_at), Some(key)) => out
                .send(ReadKey {
                    db,
                    kind,
                    key,
                    expire_at,
                    value,
                })
                .map_err(gone),
            _ => Ok(()), // gone (its TTL ran out, or it was deleted) before it was read
        }
    };
    for reply in replies {
        let value = conn.recv_response()?;
        match reply {
            Reply::Ok => write_refused(value, false)?,
            Reply::AllSet => write_refused(value, true)?,
            Reply::Expiry(i) => {
                expiry[i] = match value {
                    Value::Int(-2) => None,
                    Value::Int(n) => Some((n >= 0).then_some(n as u64)),
                    other => {
                        return Err(Failure::Other(format!(
                            "unexpected reply to PEXPIRETIME: {other:?}"
                        )))
                    }
                }
            }
            Reply::Strings(which) => match value {
                Value::Array(values) if values.len() == which.len() => {
                    for (i, v) in which.into_iter().zip(values) {
                        send(i, "string", v, &expiry)?;
                    }
                }
                other => {
                    return Err(Failure::Other(format!(
                        "unexpected reply to MGET: {other:?}"
                    )))
                }
            },
            Reply::Value(i) => match value {
                Value::ServerError(e) => {
                    let key = String::from_utf8_lossy(keys[i].as_deref().unwrap_or_default())
                        .into_owned();
                    return Err(Failure::Other(format!(
                        "reading back {key} after writing it: {e}"
                    )));
                }
                v => send(i, kinds[i], v, &expiry)?,
            },
        }
    }
    Ok(())
}

/// Sends each batch as soon as it is packed, then takes the replies of the one before: the
/// server always has the next commands in its socket buffer. Returns the keys written.
fn load(
    conn: &mut Connection,
    batches: Receiver<Result<Batch, String>>,
    out: &SyncSender<ReadKey>,
) -> Result<u64, Failure> {
    let mut in_flight: Option<Batch> = None;
    let mut written = 0;
    loop {
        let next = batches.recv().ok().transpose().map_err(Failure::Other)?;
        if let Some(b) = &next {
            conn.send_packed_command(&b.packed)?;
        }
        if let Some(done) = in_flight.take() {
            written += done.keys.len() as u64;
            receive(conn, done, out)?;
        }
        match next {
            Some(b) => in_flight = Some(b),
            None => return Ok(written),
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

/// Adds one key read back to `facts` (and `found`), hashed exactly as `facts.canonical_value`
/// and `key_hash` do; a key whose read found nothing was gone by then.
fn add_read(facts: &mut Facts, found: &mut BTreeMap<u32, Found>, r: ReadKey, bucket_ms: u64) {
    let ReadKey {
        db,
        kind,
        key,
        expire_at,
        value,
    } = r;
    let digest = if kind == "string" {
        match &value {
            Value::BulkString(v) => key_hash(db, &key, kind, |h| h.update(v)),
            _ => return,
        }
    } else {
        let mut parts = items(value);
        if parts.is_empty() {
            return; // Redis removes empty collections: the key is gone
        }
        key_hash(db, &key, kind, |h| match kind {
            "hash" => canonical::hash(
                h,
                &mut parts.chunks(2).map(|p| (&p[0], &p[1])).collect::<Vec<_>>(),
            ),
            "set" => canonical::set(h, &mut parts),
            "zset" => canonical::zset(
                h,
                parts.chunks(2).map(|p| {
                    (
                        &p[0],
                        String::from_utf8_lossy(&p[1]).parse().unwrap_or(f64::NAN),
                    )
                }),
            ),
            _ => canonical::list(h, &parts),
        })
    };
    facts.add(db, kind, digest, expire_at, bucket_ms);
    let f = found.entry(db).or_default();
    f.keys += 1;
    if let Some(at) = expire_at {
        *f.expiring.entry(at).or_default() += 1;
    }
}

/// Keys per db from INFO keyspace (`db3:keys=12,expires=...`).
fn keyspace(conn: &mut Connection) -> Result<BTreeMap<u32, u64>, Failure> {
    let info: String = redis::cmd("INFO").arg("keyspace").query(conn)?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(':')?;
            let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys="))?;
            Some((db.parse().ok()?, keys.parse().ok()?))
        })
        .collect())
}

/// `{"db": [read back, of those expired by the end, counted at the end], ...}` for every db
/// either side has keys in.
fn keyspace_json(found: &BTreeMap<u32, Found>, at_end: &BTreeMap<u32, u64>, end_ms: u64) -> String {
    let mut dbs: Vec<u32> = found.keys().chain(at_end.keys()).copied().collect();
    dbs.sort_unstable();
    dbs.dedup();
    let rows: Vec<String> = dbs
        .iter()
        .map(|db| {
            let f = found.get(db);
            let expired: u64 = f
                .map(|f| f.expiring.range(..=end_ms).map(|(_, n)| n).sum())
                .unwrap_or(0);
            format!(
                "\"{db}\":[{},{expired},{}]",
                f.map_or(0, |f| f.keys),
                at_end.get(db).copied().unwrap_or(0)
            )
        })
        .collect();
    format!("{{{}}}", rows.join(","))
}

fn server_ms(conn: &mut Connection) -> Result<u64, Failure> {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn)?;
    Ok(s * 1000 + us / 1000)
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
    let timeout = Duration::from_secs_f64(job.timeout_s.max(1.0));
    let not_connected = |e: Failure| match e {
        Failure::Other(m) => Failure::NotConnected(m),
        other => other,
    };
    let mut conn = client(&job, settings)
        .and_then(|c| Ok(c.get_connection_with_timeout(timeout)?))
        .map_err(not_connected)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;

    let (batches, rx) = sync_channel(2);
    let path = job.rdb.clone();
    let replace = job.replace;
    let packer = thread::spawn(move || pack(&path, replace, batches));
    let (reads, read_rx) = sync_channel::<ReadKey>(4 * BATCH_KEYS);
    let bucket_ms = job.bucket_ms.max(1);
    let hasher = thread::spawn(move || {
        let (mut facts, mut found) = (Facts::default(), BTreeMap::new());
        read_rx
            .into_iter()
            .for_each(|r| add_read(&mut facts, &mut found, r, bucket_ms));
        (facts, found)
    });
    let loaded = load(&mut conn, rx, &reads);
    drop(reads);
    packer
        .join()
        .map_err(|_| "the RDB reader panicked".to_string())?;
    let (facts, found) = hasher
        .join()
        .map_err(|_| "the hashing thread panicked".to_string())?;
    let written = loaded?;
    let at_end = keyspace(&mut conn)?;
    let end_ms = server_ms(&mut conn)?;
    Ok(format!(
        "{{\"keys_written\":{written},\"keyspace\":{},{}}}",
        keyspace_json(&found, &at_end, end_ms),
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
        Err(Failure::NotConnected(message)) => {
            eprintln!("{message}");
            ExitCode::from(4)
        }
        Err(Failure::Other(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
