//! What the loop reads of a consumed record, whichever way it came: rust-rdkafka's message
//! (from the consumer's own queue) or one of a batch (`crate::batch`). Reading only.

use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::batch::RawRecord;

/// One consumed record.
pub trait Record {
    /// Its topic.
    fn topic(&self) -> &str;
    /// Its partition.
    fn partition(&self) -> i32;
    /// Its offset.
    fn offset(&self) -> i64;
    /// Its key, if any.
    fn key(&self) -> Option<&[u8]>;
    /// The payload ("" when there is none).
    fn payload(&self) -> &[u8];
    /// Calls `f(name, value)` for each header, in order.
    fn for_each_header<'s>(&'s self, f: impl FnMut(&'s [u8], Option<&'s [u8]>));
}

impl Record for BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> &[u8] {
        Message::payload(self).unwrap_or_default()
    }
    fn for_each_header<'s>(&'s self, mut f: impl FnMut(&'s [u8], Option<&'s [u8]>)) {
        if let Some(headers) = self.headers() {
            for header in headers.iter() {
                f(header.key.as_bytes(), header.value);
            }
        }
    }
}

impl Record for RawRecord<'_> {
    fn topic(&self) -> &str {
        RawRecord::topic(self)
    }
    fn partition(&self) -> i32 {
        RawRecord::partition(self)
    }
    fn offset(&self) -> i64 {
        RawRecord::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        RawRecord::key(self)
    }
    fn payload(&self) -> &[u8] {
        RawRecord::payload(self)
    }
    fn for_each_header<'s>(&'s self, f: impl FnMut(&'s [u8], Option<&'s [u8]>)) {
        RawRecord::for_each_header(self, f)
    }
}
