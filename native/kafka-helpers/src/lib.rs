//! What the two Kafka helpers share: the kafka-records-v2 format (auction_backup_pipelines/kafka/
//! records.py has the full description), librdkafka clients configured exactly as the Python
//! ones are, and reading a consumer's queue in batches.
//!
//!   record = timestamp:i64  key_len:i32  value_len:i32  header_count:i32  key  value  header*
//!   header = name_len:i32  value_len:i32  name  value                  (little-endian; -1 = null)
//!
//! A partition's sha256 in a manifest is taken over its records alone, so an export computes
//! it from what it reads and a restore from what it reads back, with the same `append_record`.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::{ptr, slice};

use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;

pub const FORMAT: &str = "kafka-records-v2";
pub const MAGIC: &[u8; 4] = b"KRB2";
pub const BLOCK_RECORDS: i32 = 10_000;
pub const NULL: i32 = -1;
/// Messages asked of librdkafka at once, and how long it may wait to fill the batch: it waits
/// until the batch is full or the time is up, so the wait is short (a reader that follows a
/// writer, or that nears the end of a range, would otherwise idle for most of it).
pub const READ_BATCH: usize = 10_000;
pub const READ_WAIT_MS: i32 = 10;

/// Why a helper stopped: one line for the operator.
pub struct Fatal(pub String);

/// A librdkafka configuration from the string properties the Python side sent.
pub fn config(props: &HashMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in props {
        cfg.set(k, v);
    }
    cfg
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A consumer's queue, read with librdkafka's batch call: rdkafka's `poll()` hands out one event
/// at a time, with an allocation and two clock reads each, which cost a fifth of the CPU of
/// reading a topic (measured, 1 M messages).
pub struct BatchQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    batch: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl BatchQueue {
    /// The queue of `consumer` (which must have a group.id, as ours always do, and outlive it).
    pub fn of(consumer: &BaseConsumer) -> Result<Self, String> {
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if queue.is_null() {
            return Err("the consumer has no queue".into());
        }
        Ok(BatchQueue {
            queue,
            batch: vec![ptr::null_mut(); READ_BATCH],
        })
    }

    /// Up to `asked` messages and events, waiting at most READ_WAIT_MS; each is destroyed after `each`.
    pub fn consume(
        &mut self,
        asked: usize,
        mut each: impl FnMut(&Msg) -> Result<(), String>,
    ) -> Result<usize, String> {
        let asked = asked.clamp(1, READ_BATCH);
        // Safety: `batch` has room for `asked` pointers; every message returned is destroyed below.
        let got = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue,
                READ_WAIT_MS,
                self.batch.as_mut_ptr(),
                asked,
            )
        };
        if got < 0 {
            return Err(format!("librdkafka could not read a batch (error {got})"));
        }
        let mut result = Ok(got as usize);
        for &m in &self.batch[..got as usize] {
            if result.is_ok() {
                if let Err(e) = each(&Msg(m)) {
                    result = Err(e);
                }
            }
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        result
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) }
    }
}

/// A message or an event from a batch, valid while the batch's callback runs.
pub struct Msg(*mut rdsys::rd_kafka_message_t);

unsafe fn bytes<'a>(ptr: *const c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None // a null key or value (a tombstone), unlike an empty one
    } else {
        Some(slice::from_raw_parts(ptr as *const u8, len))
    }
}

impl Msg {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        unsafe { &*self.0 }
    }

    /// None for a message; the error code of an event (end of partition, an error).
    pub fn error(&self) -> Option<RDKafkaRespErr> {
        let err = self.raw().err;
        (err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(err)
    }

    /// An event's description, as librdkafka words it.
    pub fn error_text(&self) -> String {
        let err = self.raw().err;
        let base = unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(err)) }
            .to_string_lossy()
            .into_owned();
        match unsafe { bytes(self.raw().payload, self.raw().len) } {
            Some(detail) if !detail.is_empty() => {
                format!("{base}: {}", String::from_utf8_lossy(detail))
            }
            _ => base,
        }
    }

    pub fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// Appends the message's `record` to `out`; returns its (timestamp, timestamp type) with
    /// the type numbered as in the format (0 none, 1 CreateTime, 2 LogAppendTime).
    pub fn append_record(&self, out: &mut Vec<u8>) -> (i64, u8) {
        let len = |b: Option<&[u8]>| b.map_or(NULL, |b| b.len() as i32);
        let msg = self.raw();
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // -1 when the message has none, as confluent-kafka reports it to the Python export.
        let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(self.0, &mut kind) };
        let (key, value) = unsafe { (bytes(msg.key, msg.key_len), bytes(msg.payload, msg.len)) };
        let mut headers: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
        let has_headers = unsafe { rdsys::rd_kafka_message_headers(self.0, &mut headers) }
            == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
        let count = if has_headers {
            unsafe { rdsys::rd_kafka_header_cnt(headers) }
        } else {
            0
        };
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&len(key).to_le_bytes());
        out.extend_from_slice(&len(value).to_le_bytes());
        out.extend_from_slice(&(count as i32).to_le_bytes());
        out.extend_from_slice(key.unwrap_or_default());
        out.extend_from_slice(value.unwrap_or_default());
        for i in 0..count {
            let (mut name, mut hv, mut size) = (ptr::null(), ptr::null(), 0usize);
            unsafe { rdsys::rd_kafka_header_get_all(headers, i, &mut name, &mut hv, &mut size) };
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            let hv = unsafe { bytes(hv, size) };
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(&len(hv).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(hv.unwrap_or_default());
        }
        let kind = match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => 1,
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => 2,
            _ => 0,
        };
        (timestamp, kind)
    }
}
