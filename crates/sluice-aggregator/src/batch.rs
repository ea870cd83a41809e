//! Batch consumption: the fetch queues of assigned partitions are forwarded to one queue of ours,
//! which the consumer thread drains many records per call (`rd_kafka_consume_batch_queue`)
//! instead of one event, one clock read and one shared pointer per record through
//! `BaseConsumer::poll`.
//!
//! Only records take this path. Rebalances, commits and errors stay on the consumer's own queue,
//! which the loop still polls every round, so rust-rdkafka's rebalance handling (and ours in
//! `pre_rebalance`) is untouched. librdkafka clears a partition's forwarding when it stops
//! fetching it, and discards records of an outdated fetch (a revoked partition) in this queue as
//! it does in its own, so a partition is forwarded anew at each assignment, before fetching starts.
//!
//! It also reads a partition's cached high watermark (`cached_high_watermark`), which rust-rdkafka
//! does not expose. This is the crate's only `unsafe`: every pointer comes from librdkafka and is
//! released here.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::bindings as rd;

/// A queue of ours that assigned partitions forward their records to.
pub struct BatchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
}

// SAFETY: librdkafka queues and handles are thread-safe; the pointers are only handed to
// librdkafka's thread-safe API.
unsafe impl Send for BatchQueue {}
// SAFETY: as above.
unsafe impl Sync for BatchQueue {}

impl BatchQueue {
    /// A new queue on the client. The queue must be dropped before the client is destroyed.
    ///
    /// # Safety
    /// `client` must be a live consumer handle that outlives the returned queue.
    pub unsafe fn new(client: *mut rd::rd_kafka_t) -> Option<BatchQueue> {
        let client = NonNull::new(client)?;
        // SAFETY: `client` is live (the caller's contract).
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(BatchQueue { queue, client })
    }

    /// Sends the records of `topic` / `partition` to this queue from now on (until librdkafka
    /// stops fetching the partition). Returns false if librdkafka has no such partition.
    pub fn forward(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: the client is live; the returned handle is released below.
        let partition_queue = unsafe {
            rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition)
        };
        if partition_queue.is_null() {
            return false;
        }
        // SAFETY: both queues are live; forwarding keeps its own reference to ours, and
        // destroying our handle to the partition's queue leaves the queue (and its forwarding)
        // to librdkafka.
        unsafe {
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Waits up to `wait` for records and moves up to `batch`'s capacity of them into it.
    pub fn consume(&self, wait: Duration, batch: &mut Batch) -> usize {
        batch.clear();
        let timeout = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is live and `batch.slots` has room for `capacity` pointers.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout,
                batch.slots.as_mut_ptr(),
                batch.slots.len(),
            )
        };
        batch.len = usize::try_from(n).unwrap_or(0).min(batch.slots.len());
        batch.len
    }

    /// The high watermark of `topic` / `partition` as the consumer last heard it (librdkafka
    /// updates it from every fetch response; no request is made): every record below it was in
    /// Kafka by then. `None` when not known yet.
    pub fn cached_high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let topic = CString::new(topic).ok()?;
        let (mut low, mut high) = (-1_i64, -1_i64);
        // SAFETY: the client is live; the call only reads librdkafka's cached offsets into the
        // two locals.
        let error = unsafe {
            rd::rd_kafka_get_watermark_offsets(
                self.client.as_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        // An unknown offset is RD_KAFKA_OFFSET_INVALID (negative).
        (error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: the queue is ours; partitions still forwarding to it hold their own reference.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Records consumed in one call; they are released when the batch is cleared or dropped.
pub struct Batch {
    slots: Box<[*mut rd::rd_kafka_message_t]>,
    len: usize,
}

impl Batch {
    /// Room for `capacity` records.
    pub fn with_capacity(capacity: usize) -> Batch {
        Batch {
            slots: vec![ptr::null_mut(); capacity.max(1)].into_boxed_slice(),
            len: 0,
        }
    }

    /// Hands each record to `f`, in the order librdkafka delivered them, releasing each one as
    /// soon as `f` returns. (Releasing them one by one, not all at the end, lets the allocator
    /// reuse one record's header blocks for the next: glibc's per-thread cache holds only seven
    /// blocks of a size, and a record has seven headers, each its own block.)
    pub fn drain(&mut self, mut f: impl FnMut(RawRecord<'_>)) {
        for slot in &mut self.slots[..self.len] {
            let message = std::mem::replace(slot, ptr::null_mut());
            // SAFETY: the first `len` slots hold messages librdkafka returned, each taken out of
            // its slot once; the record borrows the message only for the call to `f`.
            if let Some(borrowed) = unsafe { message.as_ref() } {
                f(RawRecord { message: borrowed });
                // SAFETY: destroyed exactly once, after its last use.
                unsafe { rd::rd_kafka_message_destroy(message) };
            }
        }
        self.len = 0;
    }

    fn clear(&mut self) {
        for slot in &mut self.slots[..self.len] {
            if !slot.is_null() {
                // SAFETY: each returned message is destroyed exactly once.
                unsafe { rd::rd_kafka_message_destroy(*slot) };
                *slot = ptr::null_mut();
            }
        }
        self.len = 0;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One consumed record, borrowed from its batch.
pub struct RawRecord<'a> {
    message: &'a rd::rd_kafka_message_t,
}

impl<'a> RawRecord<'a> {
    /// The error librdkafka reports in place of a record (a fetch error), if any.
    pub fn error(&self) -> Option<String> {
        if self.message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: `rd_kafka_err2str` returns a static string.
        let text = unsafe { CStr::from_ptr(rd::rd_kafka_err2str(self.message.err)) };
        Some(text.to_string_lossy().into_owned())
    }

    /// Whether this is librdkafka's report that the partition's next offset is no longer on
    /// the broker (`auto.offset.reset=error`).
    pub fn is_offset_out_of_range(&self) -> bool {
        self.message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET
    }

    /// The topic's name ("" if librdkafka gives none or it is not UTF-8).
    pub fn topic(&self) -> &'a str {
        if self.message.rkt.is_null() {
            return "";
        }
        // SAFETY: the topic handle lives at least as long as the message.
        let name = unsafe { rd::rd_kafka_topic_name(self.message.rkt) };
        if name.is_null() {
            return "";
        }
        // SAFETY: librdkafka's topic names are NUL-terminated and live with the topic handle.
        unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("")
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    /// The offset.
    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka's key pointer and length describe the message's own key bytes.
        unsafe { slice(self.message.key.cast::<u8>(), self.message.key_len) }
    }

    /// The payload ("" when there is none).
    pub fn payload(&self) -> &'a [u8] {
        // SAFETY: as for the key.
        unsafe { slice(self.message.payload.cast::<u8>(), self.message.len) }.unwrap_or_default()
    }

    /// Calls `f(name, value)` for each header, in order.
    pub fn for_each_header(&self, mut f: impl FnMut(&'a [u8], Option<&'a [u8]>)) {
        let mut headers: *mut rd::rd_kafka_headers_t = ptr::null_mut();
        let message = ptr::from_ref(self.message).cast_mut();
        // SAFETY: the message is live; the headers it returns belong to it.
        let err = unsafe { rd::rd_kafka_message_headers(message, &mut headers) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return;
        }
        // SAFETY: `headers` is the message's own list.
        let count = unsafe { rd::rd_kafka_header_cnt(headers) };
        for idx in 0..count {
            let mut name: *const c_char = ptr::null();
            let mut value: *const c_void = ptr::null();
            let mut size = 0usize;
            // SAFETY: `idx` is in range; the out-pointers are valid locals.
            let err = unsafe {
                rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                continue;
            }
            // SAFETY: header names are NUL-terminated and live with the message.
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            // SAFETY: value and size describe the header's bytes, which live with the message.
            let value = unsafe { slice(value.cast::<u8>(), size) };
            f(name, value);
        }
    }
}

/// The bytes at `data` (None for a null pointer).
///
/// # Safety
/// A non-null `data` must point to `len` readable bytes that live for `'a`.
unsafe fn slice<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        Some(unsafe { std::slice::from_raw_parts(data, len) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};
    use sluice_testkit::TestKafka;

    use super::{Batch, BatchQueue};

    /// What the test reads of a record.
    #[derive(Debug, PartialEq)]
    struct Seen {
        topic: String,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    #[test]
    fn a_forwarded_partition_is_read_in_batches_with_every_field_intact() {
        let kafka = TestKafka::mock().unwrap();
        let created = kafka.with_mock(|cluster| cluster.create_topic("t", 2, 1));
        created.unwrap().unwrap().unwrap();
        let bootstrap = kafka.bootstrap().to_owned();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let expected: Vec<Seen> = (0..300i64)
            .map(|i| Seen {
                topic: "t".to_owned(),
                partition: 0,
                offset: i,
                key: (i % 7 != 0).then(|| format!("k{i}").into_bytes()),
                // Every 50th record has no payload: read as empty.
                payload: if i % 50 == 0 {
                    Vec::new()
                } else {
                    format!("{{\"i\":{i}}}").into_bytes()
                },
                headers: vec![
                    (b"sse.id".to_vec(), Some(i.to_string().into_bytes())),
                    (b"null".to_vec(), None),
                    (b"empty".to_vec(), Some(Vec::new())),
                ],
            })
            .collect();
        for seen in &expected {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "sse.id",
                    value: seen.headers[0].1.as_deref(),
                })
                .insert(Header {
                    key: "null",
                    value: None::<&[u8]>,
                })
                .insert(Header {
                    key: "empty",
                    value: Some(&b""[..]),
                });
            let mut record = BaseRecord::<[u8], [u8]>::to("t")
                .partition(0)
                .headers(headers);
            if let Some(key) = &seen.key {
                record = record.key(key);
            }
            if !seen.payload.is_empty() {
                record = record.payload(&seen.payload);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        // Partition 1 is not forwarded: its records stay on the consumer's own queue.
        for i in 0..10 {
            let payload = format!("{i}");
            producer
                .send(
                    BaseRecord::<str, str>::to("t")
                        .partition(1)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "batch-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        // SAFETY of the contract: the queue is dropped (below) before the consumer.
        let queue = unsafe { BatchQueue::new(consumer.client().native_ptr()) }.unwrap();
        assert!(queue.forward("t", 0));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        tpl.add_partition_offset("t", 1, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();

        let mut batch = Batch::with_capacity(64);
        let mut seen = Vec::new();
        let mut on_own_queue = 0;
        let mut largest = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while (seen.len() < expected.len() || on_own_queue < 10) && Instant::now() < deadline {
            while let Some(message) = consumer.poll(Duration::ZERO) {
                assert_eq!(rdkafka::Message::partition(&message.unwrap()), 1);
                on_own_queue += 1;
            }
            largest = largest.max(queue.consume(Duration::from_millis(100), &mut batch));
            batch.drain(|record| {
                assert_eq!(record.error(), None);
                let mut headers = Vec::new();
                record.for_each_header(|name, value| {
                    headers.push((name.to_vec(), value.map(<[u8]>::to_vec)))
                });
                seen.push(Seen {
                    topic: record.topic().to_owned(),
                    partition: record.partition(),
                    offset: record.offset(),
                    key: record.key().map(<[u8]>::to_vec),
                    payload: record.payload().to_vec(),
                    headers,
                });
            });
        }
        assert_eq!(seen, expected);
        assert_eq!(on_own_queue, 10, "the unforwarded partition's records");
        assert!(largest > 1, "records come more than one per call");
        drop(batch);
        drop(queue);
    }
}
