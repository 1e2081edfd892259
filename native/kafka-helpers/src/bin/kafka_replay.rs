//! kafka-replay: writes a Kafka topic backup's messages into a topic, and proves the copy.
//!
//!     kafka-replay  < job (one JSON line) + kafka-records-v2 stream  > result.json
//!
//! It does what `auction_backup_pipelines/kafka/restore.py` does in Python (steps 4 and 5 of a
//! restore: replay, read back and compare), and exists because there every message costs a
//! few microseconds of interpreter time three times over (decode, produce, read back and
//! hash), which made a verified restore 1.4-1.6x the CPU of a plain Python producer writing
//! the same messages. Here those loops cost almost nothing; librdkafka does the rest, with
//! exactly the configuration the Python clients would have used (security included: the job
//! arrives on stdin, never in argv or the environment).
//!
//! The job: the producer's and the read-back consumer's librdkafka properties, the target
//! topic, and per partition the number of messages, each day's (day, count, sha256) in stream
//! order, and the original offsets whose restored offsets the caller needs (consumer groups).
//! The stream that follows is the backup's records file of each day, one after another.
//!
//! Every delivery report is checked: a partition's messages must land at consecutive offsets
//! (the idempotent producer keeps their order), or a message was lost or duplicated, or another
//! producer wrote into the range. Once its first message is acknowledged, a partition is read
//! back by a second thread that follows the replay (the backup holds its partitions one after
//! another), and each day's slice is hashed exactly as the export hashed it (timestamp, key,
//! value, headers; see kafka/records.py).
//!
//! Output: one JSON object on stdout (exit 0), with `failures` (the replay's) and `problems`
//! (the read-back's) for the caller to judge; or one line on stderr (exit 2) when the stream
//! or the job cannot be read, or the producer cannot be created.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_helpers::{config, hex, BatchQueue, Fatal, BLOCK_RECORDS, FORMAT, MAGIC, NULL};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const POLL_EVERY: u64 = 1000;

#[derive(Deserialize)]
struct Job {
    producer: HashMap<String, String>,
    consumer: HashMap<String, String>,
    topic: String,
    partitions: Vec<PartitionJob>,
    flush_timeout_s: f64,
    stall_timeout_s: f64,
}

#[derive(Deserialize)]
struct PartitionJob {
    partition: i32,
    want: u64,
    segments: Vec<(String, u64, Option<String>)>, // (day, messages, sha256) of each day holding some
    wanted: Vec<i64>,                             // original offsets to translate, ascending
}

fn damaged() -> Fatal {
    Fatal(format!(
        "{FORMAT} stream is damaged or ends in the middle of a block"
    ))
}

// -- delivery reports ------------------------------------------------------------------------------

#[derive(Default)]
struct Delivered {
    first: Option<i64>, // restored offset of position 0
    count: u64,
    broken: bool,
}

#[derive(Default)]
struct Reports {
    partitions: HashMap<i32, Delivered>,
    failures: Vec<String>,
    started: Vec<(i32, i64)>, // (partition, first restored offset), not yet handed to the read-back
}

struct ReplayContext {
    reports: Mutex<Reports>,
}

impl ClientContext for ReplayContext {}

impl ProducerContext for ReplayContext {
    type DeliveryOpaque = usize; // the message's position in its partition (no allocation per message)

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let position = opaque as u64;
        let mut reports = self.reports.lock().unwrap();
        let Reports {
            partitions,
            failures,
            started,
        } = &mut *reports;
        match result {
            Err((err, msg)) => failures.push(format!(
                "partition {} message {position}: {err}",
                msg.partition()
            )),
            Ok(msg) => {
                let (p, offset) = (msg.partition(), msg.offset());
                let Some(d) = partitions.get_mut(&p) else {
                    return;
                };
                if d.broken {
                    return;
                }
                // Reports of a partition arrive in produce order, so position 0's comes first.
                let first = *d.first.get_or_insert(offset - position as i64);
                if offset != first + position as i64 {
                    d.broken = true;
                    failures.push(format!(
                        "partition {p}: message {position} was written at offset {offset}, not {} (a message was lost or \
                         duplicated, or another producer wrote into the topic)",
                        first + position as i64
                    ));
                    return;
                }
                if d.count == 0 {
                    started.push((p, first)); // the read-back follows the replay from here
                }
                d.count += 1;
            }
        }
    }
}

// -- the records stream ----------------------------------------------------------------------------

/// Fills `buf` from `r`; Ok(false) at a clean end of stream (nothing read), damaged() mid-way.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, Fatal> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(damaged()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Fatal(format!("cannot read the backup stream: {e}"))),
        }
    }
    Ok(true)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Fatal> {
    if buf.is_empty() || fill(r, buf)? {
        Ok(())
    } else {
        Err(damaged())
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads `len` bytes into `buf` (None for the null length -1).
fn field(r: &mut impl Read, len: i32, buf: &mut Vec<u8>) -> Result<bool, Fatal> {
    if len == NULL {
        return Ok(false);
    }
    buf.resize(len as usize, 0);
    read_exact(r, buf)?;
    Ok(true)
}

// -- replay ----------------------------------------------------------------------------------------

struct Replayed {
    sent: HashMap<i32, u64>,
    firsts: HashMap<i32, i64>,
    mapping: HashMap<i32, Vec<(i64, u64)>>, // original offset -> position
}

fn forward(
    producer: &BaseProducer<ReplayContext>,
    to_read_back: &mpsc::Sender<(i32, i64)>,
) -> bool {
    let mut reports = producer.context().reports.lock().unwrap();
    for item in reports.started.drain(..) {
        let _ = to_read_back.send(item); // the read-back thread only ends after the replay
    }
    reports.failures.is_empty()
}

fn replay(
    job: &Job,
    input: &mut impl Read,
    producer: &BaseProducer<ReplayContext>,
    to_read_back: &mpsc::Sender<(i32, i64)>,
) -> Result<Replayed, Fatal> {
    let want: HashMap<i32, u64> = job
        .partitions
        .iter()
        .map(|p| (p.partition, p.want))
        .collect();
    let wanted: HashMap<i32, &[i64]> = job
        .partitions
        .iter()
        .map(|p| (p.partition, p.wanted.as_slice()))
        .collect();
    let mut next_wanted: HashMap<i32, usize> = want.keys().map(|p| (*p, 0)).collect();
    let mut out = Replayed {
        sent: want.keys().map(|p| (*p, 0)).collect(),
        firsts: HashMap::new(),
        mapping: HashMap::new(),
    };
    let topic = job.topic.as_str();
    let (mut head, mut record) = ([0u8; 12], [0u8; 20]); // block head, record head (<qiii)
    let (mut key, mut value, mut name, mut hvalue) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut index = Vec::new();
    let mut count: u64 = 0;
    'blocks: while fill(input, &mut head)? {
        let (p, n) = (i32_at(&head, 4), i32_at(&head, 8));
        if &head[..4] != MAGIC || !(1..=BLOCK_RECORDS).contains(&n) {
            return Err(Fatal(format!(
                "not a {FORMAT} block (magic {:?}, {n} records)",
                String::from_utf8_lossy(&head[..4])
            )));
        }
        let Some(&first_position) = out.sent.get(&p) else {
            return Err(Fatal(format!(
                "the backup has partition {p} but '{topic}' has {}",
                want.len()
            )));
        };
        if first_position + n as u64 > want[&p] {
            return Err(Fatal(format!(
                "the backup holds more messages in partition {p} than its manifests count"
            )));
        }
        out.sent.insert(p, first_position + n as u64);
        index.resize(9 * n as usize, 0);
        read_exact(input, &mut index)?;
        let (targets, next) = (wanted[&p], next_wanted.get_mut(&p).unwrap());
        for j in 0..n as usize {
            let (position, original) = (first_position + j as u64, i64_at(&index, 8 * j));
            if position == 0 {
                out.firsts.insert(p, original);
            }
            while *next < targets.len() && targets[*next] <= original {
                out.mapping
                    .entry(p)
                    .or_default()
                    .push((targets[*next], position));
                *next += 1;
            }
            read_exact(input, &mut record)?;
            let (ts, key_len, value_len, header_count) = (
                i64_at(&record, 0),
                i32_at(&record, 8),
                i32_at(&record, 12),
                i32_at(&record, 16),
            );
            if key_len < NULL || value_len < NULL || header_count < 0 {
                return Err(damaged());
            }
            let has_key = field(input, key_len, &mut key)?;
            let has_value = field(input, value_len, &mut value)?;
            let mut headers = None; // built only for a message that has some: an allocation each
            for _ in 0..header_count {
                let mut hh = [0u8; 8];
                read_exact(input, &mut hh)?;
                let (name_len, hv_len) = (i32_at(&hh, 0), i32_at(&hh, 4));
                if name_len < 0 || hv_len < NULL {
                    return Err(damaged());
                }
                field(input, name_len, &mut name)?;
                let has = field(input, hv_len, &mut hvalue)?;
                let header_name = std::str::from_utf8(&name).map_err(|_| {
                    Fatal(format!(
                        "partition {p} offset {original}: a header name is not UTF-8"
                    ))
                })?;
                let all = headers
                    .take()
                    .unwrap_or_else(|| OwnedHeaders::new_with_capacity(header_count as usize));
                headers = Some(all.insert(Header {
                    key: header_name,
                    value: if has { Some(hvalue.as_slice()) } else { None },
                }));
            }
            let mut rec: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(topic, position as usize).partition(p);
            if has_key {
                rec = rec.key(key.as_slice());
            }
            if has_value {
                rec = rec.payload(value.as_slice());
            }
            if ts > 0 {
                rec = rec.timestamp(ts);
            }
            if let Some(headers) = headers {
                rec = rec.headers(headers);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        producer.poll(Duration::from_millis(100)); // the local queue is full: serve reports
                    }
                    Err((e, _)) => return Err(Fatal(format!("cannot produce to '{topic}': {e}"))),
                }
            }
            count += 1;
            if count.is_multiple_of(POLL_EVERY) {
                producer.poll(Duration::ZERO);
                if !forward(producer, to_read_back) {
                    break 'blocks;
                }
            }
        }
    }
    Ok(out)
}

// -- read-back -------------------------------------------------------------------------------------

struct ReadBack {
    compared: u64,
    problems: Vec<String>,
    error: Option<String>,
}

fn read_back(
    props: HashMap<String, String>,
    topic: String,
    segments: HashMap<i32, Vec<(String, u64, Option<String>)>>,
    stall: Duration,
    partitions: Receiver<(i32, i64)>,
    stop: Arc<AtomicBool>,
) -> ReadBack {
    let mut result = ReadBack {
        compared: 0,
        problems: Vec::new(),
        error: None,
    };
    let consumer: BaseConsumer = match config(&props).create() {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("cannot create the read-back consumer: {e}"));
            return result;
        }
    };
    // A consumer assigned a topic it has no metadata for (a topic the restore just created)
    // waits for its periodic refresh, a second, before the first fetch: ask for it now.
    if let Err(e) = consumer.fetch_metadata(Some(&topic), stall) {
        result.error = Some(format!("cannot read back '{topic}': {e}"));
    }
    let reader = Reader {
        consumer: &consumer,
        topic: &topic,
        stall,
        stop: &stop,
    };
    for (p, first) in partitions {
        if stop.load(Ordering::Relaxed) || result.error.is_some() {
            continue; // drain: the replay failed, or an earlier partition could not be read
        }
        let days = &segments[&p];
        if let Err(e) = reader.compare(p, first, days, &mut result.problems) {
            result.error = Some(e);
            continue;
        }
        result.compared += days.iter().map(|d| d.1).sum::<u64>();
    }
    result
}

/// Where the read-back reads, and when it gives up.
struct Reader<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    stall: Duration,
    stop: &'a AtomicBool, // set when the replay failed
}

impl Reader<'_> {
    /// Reads partition `p` from `first` and hashes one day's slice after another (memory flat).
    fn compare(
        &self,
        p: i32,
        first: i64,
        days: &[(String, u64, Option<String>)],
        problems: &mut Vec<String>,
    ) -> Result<(), String> {
        let (consumer, topic, stall, stop) = (self.consumer, self.topic, self.stall, self.stop);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(first))
            .map_err(|e| e.to_string())?;
        consumer
            .assign(&tpl)
            .map_err(|e| format!("cannot read back '{topic}' partition {p}: {e}"))?;
        let mut left: u64 = days.iter().map(|d| d.1).sum();
        let (mut day, mut in_day, mut sha) = (0usize, 0u64, Sha256::new());
        let mut record = Vec::new();
        let mut queue = BatchQueue::of(consumer)?;
        let mut idle_since: Option<Instant> = None;
        while left > 0 {
            let mut progressed = false;
            queue
                .consume(left as usize, |m| {
                    // Events (end of partition, errors) and another partition's leftovers are skipped.
                    if m.error().is_some() || m.partition() != p || left == 0 {
                        return Ok(());
                    }
                    record.clear();
                    m.append_record(&mut record);
                    sha.update(&record);
                    (in_day, left, progressed) = (in_day + 1, left - 1, true);
                    if in_day == days[day].1 {
                        if Some(&hex(&sha.finalize_reset())) != days[day].2.as_ref() {
                            problems.push(format!(
                            "partition {p} day {}: content differs from the manifest's checksum",
                            days[day].0
                        ));
                        }
                        (day, in_day) = (day + 1, 0);
                    }
                    Ok(())
                })
                .map_err(|e| format!("cannot read back '{topic}' partition {p}: {e}"))?;
            if progressed {
                idle_since = None; // no clock read while messages flow
            } else if left > 0 {
                // Nothing yet (the replay is still writing): give up when the replay failed, or after `stall`.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if idle_since.get_or_insert_with(Instant::now).elapsed() > stall {
                    return Err(format!(
                        "reading back '{topic}' partition {p} stalled with {left} messages still to read"
                    ));
                }
            }
        }
        drop(queue);
        consumer
            .assign(&TopicPartitionList::new())
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

// -- main ------------------------------------------------------------------------------------------

fn run() -> Result<Value, Fatal> {
    let stdin = io::stdin();
    let mut input = BufReader::with_capacity(1 << 20, stdin.lock());
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Fatal(format!("cannot read the job: {e}")))?;
    let job: Job = serde_json::from_str(&line)
        .map_err(|e| Fatal(format!("the job is not valid JSON: {e}")))?;

    let reports = Reports {
        partitions: job
            .partitions
            .iter()
            .map(|p| (p.partition, Delivered::default()))
            .collect(),
        ..Default::default()
    };
    let producer: BaseProducer<ReplayContext> = config(&job.producer)
        .create_with_context(ReplayContext {
            reports: Mutex::new(reports),
        })
        .map_err(|e| Fatal(format!("cannot create a producer for '{}': {e}", job.topic)))?;

    let (to_read_back, partitions) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let segments = job
            .partitions
            .iter()
            .map(|p| (p.partition, p.segments.clone()))
            .collect();
        let (props, topic, stall, stop) = (
            job.consumer.clone(),
            job.topic.clone(),
            Duration::from_secs_f64(job.stall_timeout_s),
            stop.clone(),
        );
        thread::spawn(move || read_back(props, topic, segments, stall, partitions, stop))
    };

    let replayed = replay(&job, &mut input, &producer, &to_read_back);
    if replayed.is_err()
        || !producer
            .context()
            .reports
            .lock()
            .unwrap()
            .failures
            .is_empty()
    {
        stop.store(true, Ordering::Relaxed); // the read-back may be waiting for messages that never come
    }
    let deadline = Instant::now() + Duration::from_secs_f64(job.flush_timeout_s);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        let _ = producer.flush(Duration::from_secs(1));
        forward(&producer, &to_read_back);
    }
    forward(&producer, &to_read_back);
    let left = producer.in_flight_count();
    let reports = std::mem::take(&mut *producer.context().reports.lock().unwrap());
    if replayed.is_err() || !reports.failures.is_empty() || left > 0 {
        stop.store(true, Ordering::Relaxed);
    }
    drop(to_read_back);
    let read = reader.join().unwrap_or(ReadBack {
        compared: 0,
        problems: vec![],
        error: Some("the read-back thread failed".into()),
    });
    let replayed = replayed?;

    let mut partitions = serde_json::Map::new();
    for pj in &job.partitions {
        let d = &reports.partitions[&pj.partition];
        partitions.insert(
            pj.partition.to_string(),
            json!({
                "sent": replayed.sent[&pj.partition],
                "delivered": d.count,
                "first_restored": d.first,
                "first_original": replayed.firsts.get(&pj.partition),
                "mapping": replayed.mapping.get(&pj.partition).cloned().unwrap_or_default(),
            }),
        );
    }
    Ok(json!({
        "partitions": partitions,
        "failures": reports.failures,
        "unacknowledged": left,
        "compared": read.compared,
        "problems": read.problems,
        "read_back_error": read.error,
    }))
}

fn main() -> ExitCode {
    match run() {
        Ok(result) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(Fatal(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
