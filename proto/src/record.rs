//! The message record: the unit the broker appends to its commitlog and hands to consumers as is.
//!
//! ```text
//! offset size field
//!  0     4    total_size        whole record, this field included
//!  4     4    magic             RECORD_MAGIC (or BLANK_MAGIC: end of segment, rest is padding)
//!  8     4    crc32c            of bytes [12, total_size)
//! 12     4    flags
//! 16     4    queue_id
//! 20     8    queue_offset
//! 28     8    commitlog_offset
//! 36     8    born_timestamp    Unix ms
//! 44     8    store_timestamp   Unix ms
//! 52    18    born_host         IPv6 (IPv4 mapped) + port
//! 70    18    store_host
//! 88     4    reconsume_count
//! 92     1    topic_len, then topic
//!  .     2    properties_len, then properties (see `properties`)
//!  .     4    body_len, then body
//! ```
//!
//! Integers are big-endian. A record is self-checking: recovery reads `total_size`, checks the
//! magic and the CRC, and treats the first record that fails as the torn tail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::properties;

/// Magic of a message record ("MRD1").
pub const RECORD_MAGIC: u32 = 0x4D52_4431;
/// Magic of the padding that ends a segment ("MRD0").
pub const BLANK_MAGIC: u32 = 0x4D52_4430;
/// Bytes before the topic.
pub const FIXED_HEADER_LEN: usize = 92;
/// Smallest possible record (empty topic, properties and body).
pub const MIN_RECORD_LEN: usize = FIXED_HEADER_LEN + 1 + 2 + 4;
/// Smallest blank marker: total size and magic.
pub const BLANK_MARKER_LEN: usize = 8;
const CRC_START: usize = 12;

/// Size on disk of a record with these variable parts.
pub fn encoded_len(topic_len: usize, properties_len: usize, body_len: usize) -> usize {
    MIN_RECORD_LEN + topic_len + properties_len + body_len
}

/// Everything needed to write a record.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    /// Message flags (reserved; zero today).
    pub flags: u32,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Position within the queue.
    pub queue_offset: u64,
    /// Byte position of this record in the commitlog.
    pub commitlog_offset: u64,
    /// When the producer created the message.
    pub born_timestamp: i64,
    /// When the broker stored it.
    pub store_timestamp: i64,
    /// The producer's address as the broker saw it.
    pub born_host: SocketAddr,
    /// The broker's address.
    pub store_host: SocketAddr,
    /// How many times this message has been consumed again.
    pub reconsume_count: u32,
    /// Topic name (validated; at most 255 bytes here).
    pub topic: &'a str,
    /// Encoded properties.
    pub properties: &'a [u8],
    /// Message body.
    pub body: &'a [u8],
}

impl RecordFields<'_> {
    /// Size of the encoded record.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.topic.len(), self.properties.len(), self.body.len())
    }
}

fn put_host(dst: &mut [u8], host: SocketAddr) {
    let ip = match host.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    dst[..16].copy_from_slice(&ip.octets());
    dst[16..18].copy_from_slice(&host.port().to_be_bytes());
}

fn get_host(src: &[u8]) -> SocketAddr {
    let octets: [u8; 16] = src[..16].try_into().expect("16 bytes");
    let ip = Ipv6Addr::from(octets);
    let port = u16::from_be_bytes([src[16], src[17]]);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        None => SocketAddr::new(IpAddr::V6(ip), port),
    }
}

/// Writes the record into `dst`, which must be exactly [`RecordFields::encoded_len`] bytes, and
/// fills in the CRC. Writes straight into the destination (a commitlog mapping) with no
/// intermediate buffer.
pub fn encode_into(dst: &mut [u8], fields: &RecordFields<'_>) {
    let total = fields.encoded_len();
    assert_eq!(dst.len(), total, "destination must be exactly the record size");
    assert!(fields.topic.len() <= u8::MAX as usize && fields.properties.len() <= u16::MAX as usize);
    dst[0..4].copy_from_slice(&(total as u32).to_be_bytes());
    dst[4..8].copy_from_slice(&RECORD_MAGIC.to_be_bytes());
    dst[12..16].copy_from_slice(&fields.flags.to_be_bytes());
    dst[16..20].copy_from_slice(&fields.queue_id.to_be_bytes());
    dst[20..28].copy_from_slice(&fields.queue_offset.to_be_bytes());
    dst[28..36].copy_from_slice(&fields.commitlog_offset.to_be_bytes());
    dst[36..44].copy_from_slice(&fields.born_timestamp.to_be_bytes());
    dst[44..52].copy_from_slice(&fields.store_timestamp.to_be_bytes());
    put_host(&mut dst[52..70], fields.born_host);
    put_host(&mut dst[70..88], fields.store_host);
    dst[88..92].copy_from_slice(&fields.reconsume_count.to_be_bytes());
    let mut position = FIXED_HEADER_LEN;
    dst[position] = fields.topic.len() as u8;
    position += 1;
    dst[position..position + fields.topic.len()].copy_from_slice(fields.topic.as_bytes());
    position += fields.topic.len();
    dst[position..position + 2].copy_from_slice(&(fields.properties.len() as u16).to_be_bytes());
    position += 2;
    dst[position..position + fields.properties.len()].copy_from_slice(fields.properties);
    position += fields.properties.len();
    dst[position..position + 4].copy_from_slice(&(fields.body.len() as u32).to_be_bytes());
    position += 4;
    dst[position..].copy_from_slice(fields.body);
    let crc = crc32c::crc32c(&dst[CRC_START..]);
    dst[8..12].copy_from_slice(&crc.to_be_bytes());
}

/// Writes an end-of-segment marker over `dst` (at least [`BLANK_MARKER_LEN`] bytes): the reader
/// skips `dst.len()` bytes and continues in the next segment.
pub fn encode_blank(dst: &mut [u8]) {
    let len = dst.len();
    encode_blank_header(dst, len);
}

/// Writes the header of an end-of-segment marker that covers `len` bytes into `dst` (its first
/// [`BLANK_MARKER_LEN`] bytes); the rest of the covered space is left as it is (zeros).
pub fn encode_blank_header(dst: &mut [u8], len: usize) {
    assert!(dst.len() >= BLANK_MARKER_LEN && len >= BLANK_MARKER_LEN);
    dst[0..4].copy_from_slice(&(len as u32).to_be_bytes());
    dst[4..8].copy_from_slice(&BLANK_MAGIC.to_be_bytes());
}

/// Why bytes are not a valid record. Small and plain: this runs on the read and recovery paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record claims, or than a record header.
    #[error("record is truncated")]
    Truncated,
    /// Zero size: preallocated space that was never written.
    #[error("no record here (zero size)")]
    Empty,
    /// Neither a record nor a blank marker.
    #[error("bad record magic {0:#010x}")]
    BadMagic(u32),
    /// The size field is impossible.
    #[error("bad record size {0}")]
    BadSize(u32),
    /// The CRC does not match the bytes.
    #[error("record checksum mismatch")]
    BadCrc,
    /// Inner lengths disagree with the total size, or properties are malformed.
    #[error("record fields are inconsistent")]
    BadLayout,
}

/// What lies at a position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A valid record of `record.total_size()` bytes.
    Record(Record<'a>),
    /// Padding to the end of the segment, of this many bytes.
    Blank(usize),
}

/// Reads what lies at the start of `src`: a CRC-checked record or an end-of-segment marker.
pub fn read_entry(src: &[u8]) -> Result<Entry<'_>, RecordError> {
    read_entry_checking(src, true)
}

/// [`read_entry`] without the CRC check (the layout is still checked), for bytes whose CRC the
/// reader's own process already computed or checked: the broker's dispatcher reads what its
/// writer just encoded, what replication checked on receipt, or what recovery checked. Consumers
/// still check every record they receive.
pub fn read_entry_unverified(src: &[u8]) -> Result<Entry<'_>, RecordError> {
    read_entry_checking(src, false)
}

fn read_entry_checking(src: &[u8], check_crc: bool) -> Result<Entry<'_>, RecordError> {
    if src.len() < BLANK_MARKER_LEN {
        return Err(RecordError::Truncated);
    }
    let size = u32::from_be_bytes(src[0..4].try_into().expect("4 bytes"));
    let magic = u32::from_be_bytes(src[4..8].try_into().expect("4 bytes"));
    if size == 0 && magic == 0 {
        return Err(RecordError::Empty);
    }
    match magic {
        BLANK_MAGIC if size as usize >= BLANK_MARKER_LEN && size as usize <= src.len() => {
            Ok(Entry::Blank(size as usize))
        }
        BLANK_MAGIC => Err(RecordError::BadSize(size)),
        RECORD_MAGIC => Record::parse_checking(src, check_crc).map(Entry::Record),
        other => Err(RecordError::BadMagic(other)),
    }
}

/// A checked view of one record over borrowed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    bytes: &'a [u8],
    properties_start: usize,
    body_start: usize,
}

impl<'a> Record<'a> {
    /// Parses and CRC-checks the record at the start of `src` (which may hold more after it).
    pub fn parse(src: &'a [u8]) -> Result<Record<'a>, RecordError> {
        Record::parse_checking(src, true)
    }

    fn parse_checking(src: &'a [u8], check_crc: bool) -> Result<Record<'a>, RecordError> {
        if src.len() < MIN_RECORD_LEN {
            return Err(RecordError::Truncated);
        }
        let size = u32::from_be_bytes(src[0..4].try_into().expect("4 bytes"));
        let magic = u32::from_be_bytes(src[4..8].try_into().expect("4 bytes"));
        if magic != RECORD_MAGIC {
            return Err(RecordError::BadMagic(magic));
        }
        let total = size as usize;
        if total < MIN_RECORD_LEN {
            return Err(RecordError::BadSize(size));
        }
        if total > src.len() {
            return Err(RecordError::Truncated);
        }
        let bytes = &src[..total];
        let stored_crc = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if check_crc && crc32c::crc32c(&bytes[CRC_START..]) != stored_crc {
            return Err(RecordError::BadCrc);
        }
        let topic_len = bytes[FIXED_HEADER_LEN] as usize;
        let properties_len_at = FIXED_HEADER_LEN + 1 + topic_len;
        let properties_start = properties_len_at + 2;
        if properties_start > total {
            return Err(RecordError::BadLayout);
        }
        let properties_len =
            u16::from_be_bytes(bytes[properties_len_at..properties_start].try_into().expect("2 bytes")) as usize;
        let body_len_at = properties_start + properties_len;
        let body_start = body_len_at + 4;
        if body_start > total {
            return Err(RecordError::BadLayout);
        }
        let body_len = u32::from_be_bytes(bytes[body_len_at..body_start].try_into().expect("4 bytes")) as usize;
        if body_start + body_len != total {
            return Err(RecordError::BadLayout);
        }
        let record = Record {
            bytes,
            properties_start,
            body_start,
        };
        if std::str::from_utf8(record.topic_bytes()).is_err() || !properties::is_well_formed(record.properties()) {
            return Err(RecordError::BadLayout);
        }
        Ok(record)
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The whole record, as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Bytes the record takes.
    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }
    /// Message flags.
    pub fn flags(&self) -> u32 {
        self.u32_at(12)
    }
    /// Queue within the topic.
    pub fn queue_id(&self) -> u32 {
        self.u32_at(16)
    }
    /// Position within the queue.
    pub fn queue_offset(&self) -> u64 {
        self.u64_at(20)
    }
    /// Byte position in the commitlog.
    pub fn commitlog_offset(&self) -> u64 {
        self.u64_at(28)
    }
    /// When the producer created the message (Unix ms).
    pub fn born_timestamp(&self) -> i64 {
        self.u64_at(36) as i64
    }
    /// When the broker stored it (Unix ms).
    pub fn store_timestamp(&self) -> i64 {
        self.u64_at(44) as i64
    }
    /// Producer address.
    pub fn born_host(&self) -> SocketAddr {
        get_host(&self.bytes[52..70])
    }
    /// Broker address.
    pub fn store_host(&self) -> SocketAddr {
        get_host(&self.bytes[70..88])
    }
    /// Times consumed again.
    pub fn reconsume_count(&self) -> u32 {
        self.u32_at(88)
    }
    fn topic_bytes(&self) -> &'a [u8] {
        &self.bytes[FIXED_HEADER_LEN + 1..self.properties_start - 2]
    }
    /// Topic name.
    pub fn topic(&self) -> &'a str {
        std::str::from_utf8(self.topic_bytes()).expect("checked in parse")
    }
    /// Encoded properties.
    pub fn properties(&self) -> &'a [u8] {
        &self.bytes[self.properties_start..self.body_start - 4]
    }
    /// Message body.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.body_start..]
    }
    /// The message id property, if set.
    pub fn msg_id(&self) -> Option<&'a str> {
        properties::get(self.properties(), properties::MSG_ID)
    }
    /// The tag property, if set.
    pub fn tag(&self) -> Option<&'a str> {
        properties::get(self.properties(), properties::TAGS)
    }
    /// Offset of the body within the record, for zero-copy slicing of a shared buffer.
    pub fn body_range(&self) -> std::ops::Range<usize> {
        self.body_start..self.bytes.len()
    }
    /// Offset of the properties within the record.
    pub fn properties_range(&self) -> std::ops::Range<usize> {
        self.properties_start..self.body_start - 4
    }
}

/// A message decoded from records a consumer received, sharing the received buffer (no copies of
/// bodies or properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Position within the queue.
    pub queue_offset: u64,
    /// Byte position in the broker's commitlog.
    pub commitlog_offset: u64,
    /// When the producer created it (Unix ms).
    pub born_timestamp: i64,
    /// When the broker stored it (Unix ms).
    pub store_timestamp: i64,
    /// Producer address as the broker saw it.
    pub born_host: SocketAddr,
    /// Broker address.
    pub store_host: SocketAddr,
    /// Times consumed again.
    pub reconsume_count: u32,
    /// Message flags.
    pub flags: u32,
    /// Encoded properties.
    pub properties: Bytes,
    /// Message body.
    pub body: Bytes,
}

impl StoredMessage {
    /// The message id (empty if the record has none, which the broker never stores).
    pub fn msg_id(&self) -> &str {
        properties::get(&self.properties, properties::MSG_ID).unwrap_or("")
    }
    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        properties::get(&self.properties, properties::KEYS)
            .unwrap_or("")
            .split(properties::KEY_SEPARATOR)
            .filter(|key| !key.is_empty())
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        properties::get(&self.properties, properties::TAGS)
    }
    /// A property by name.
    pub fn property(&self, name: &str) -> Option<&str> {
        properties::get(&self.properties, name)
    }
}

/// Decodes every record in `buffer` (concatenated records, as in a pull response), checking each
/// CRC. Bodies and properties are slices of `buffer`.
pub fn decode_all(buffer: &Bytes) -> Result<Vec<StoredMessage>, RecordError> {
    let mut messages = Vec::new();
    let mut position = 0;
    while position < buffer.len() {
        let record = Record::parse(&buffer[position..])?;
        let properties = record.properties_range();
        let body = record.body_range();
        messages.push(StoredMessage {
            topic: record.topic().to_owned(),
            queue_id: record.queue_id(),
            queue_offset: record.queue_offset(),
            commitlog_offset: record.commitlog_offset(),
            born_timestamp: record.born_timestamp(),
            store_timestamp: record.store_timestamp(),
            born_host: record.born_host(),
            store_host: record.store_host(),
            reconsume_count: record.reconsume_count(),
            flags: record.flags(),
            properties: buffer.slice(position + properties.start..position + properties.end),
            body: buffer.slice(position + body.start..position + body.end),
        });
        position += record.total_size();
    }
    Ok(messages)
}

/// The unspecified address, for records whose host is unknown.
pub const UNKNOWN_HOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::PropertiesBuilder;
    use proptest::prelude::*;

    fn sample_properties() -> Vec<u8> {
        let mut builder = PropertiesBuilder::new();
        builder
            .msg_id("0123456789ABCDEF0123456789ABCDEF")
            .keys(&["order-1"])
            .unwrap()
            .tag("created")
            .unwrap();
        builder.finish()
    }

    fn encode(fields: &RecordFields<'_>) -> Vec<u8> {
        let mut buffer = vec![0u8; fields.encoded_len()];
        encode_into(&mut buffer, fields);
        buffer
    }

    fn fields<'a>(topic: &'a str, properties: &'a [u8], body: &'a [u8]) -> RecordFields<'a> {
        RecordFields {
            flags: 0,
            queue_id: 3,
            queue_offset: 42,
            commitlog_offset: 4096,
            born_timestamp: 1_700_000_000_000,
            store_timestamp: 1_700_000_000_123,
            born_host: "10.1.2.3:5555".parse().unwrap(),
            store_host: "[2001:db8::1]:7911".parse().unwrap(),
            reconsume_count: 2,
            topic,
            properties,
            body,
        }
    }

    #[test]
    fn record_round_trip() {
        let properties = sample_properties();
        let bytes = encode(&fields("orders", &properties, b"hello"));
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.topic(), "orders");
        assert_eq!(record.queue_id(), 3);
        assert_eq!(record.queue_offset(), 42);
        assert_eq!(record.commitlog_offset(), 4096);
        assert_eq!(record.born_host(), "10.1.2.3:5555".parse().unwrap());
        assert_eq!(record.store_host(), "[2001:db8::1]:7911".parse().unwrap());
        assert_eq!(record.reconsume_count(), 2);
        assert_eq!(record.body(), b"hello");
        assert_eq!(record.tag(), Some("created"));
        let decoded = decode_all(&Bytes::from(bytes)).unwrap();
        assert_eq!(decoded[0].keys().collect::<Vec<_>>(), ["order-1"]);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let properties = sample_properties();
        let bytes = encode(&fields("orders", &properties, b"some body bytes"));
        for position in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= 0x10;
            assert!(
                Record::parse(&corrupt).is_err(),
                "flip at byte {position} went unnoticed"
            );
        }
    }

    #[test]
    fn unverified_reads_skip_only_the_crc() {
        let properties = sample_properties();
        let bytes = encode(&fields("orders", &properties, b"some body bytes"));
        let mut flipped_body = bytes.clone();
        *flipped_body.last_mut().unwrap() ^= 0x10;
        assert_eq!(read_entry(&flipped_body), Err(RecordError::BadCrc));
        let Ok(Entry::Record(record)) = read_entry_unverified(&flipped_body) else {
            panic!("an unverified read takes a record whose layout is sound");
        };
        assert_eq!(record.body(), b"some body bytec");
        // The layout is still checked: a wrong size, a bad magic or a truncated record is refused.
        let mut oversized = bytes.clone();
        oversized[3] ^= 0x01;
        assert!(read_entry_unverified(&oversized).is_err());
        let mut bad_magic = bytes.clone();
        bad_magic[5] ^= 0x01;
        assert!(read_entry_unverified(&bad_magic).is_err());
        assert!(read_entry_unverified(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn blank_markers_and_empty_space() {
        let mut padding = vec![0u8; 64];
        assert_eq!(read_entry(&padding), Err(RecordError::Empty));
        encode_blank(&mut padding);
        assert_eq!(read_entry(&padding), Ok(Entry::Blank(64)));
    }

    proptest! {
        #[test]
        fn records_round_trip(topic in "[A-Za-z0-9_-]{1,127}", body in proptest::collection::vec(any::<u8>(), 0..4096),
                              queue_offset in any::<u64>(), reconsume in any::<u32>()) {
            let properties = sample_properties();
            let mut record_fields = fields(&topic, &properties, &body);
            record_fields.queue_offset = queue_offset;
            record_fields.reconsume_count = reconsume;
            let bytes = encode(&record_fields);
            let record = Record::parse(&bytes).unwrap();
            prop_assert_eq!(record.topic(), topic.as_str());
            prop_assert_eq!(record.body(), &body[..]);
            prop_assert_eq!(record.queue_offset(), queue_offset);
            prop_assert_eq!(record.reconsume_count(), reconsume);
            prop_assert_eq!(record.total_size(), bytes.len());
        }

        #[test]
        fn truncations_are_always_detected(body in proptest::collection::vec(any::<u8>(), 1..512), cut in 0usize..1000) {
            let properties = sample_properties();
            let bytes = encode(&fields("t", &properties, &body));
            let cut = cut % bytes.len();
            prop_assert!(Record::parse(&bytes[..cut]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_entry(&bytes);
            let _ = decode_all(&Bytes::from(bytes));
        }
    }
}
