//! RocketMQ's message encodings (`MessageDecoder`): the stored-message layout a pull response's
//! body concatenates, the batch layout of `SEND_BATCH_MESSAGE` bodies, the offset msgId
//! (`storeHost + commitLogOffset` in hex) and compressed bodies (sysFlag `COMPRESSED`: zlib, and
//! RocketMQ 5's LZ4 and ZSTD types, [`decompress_body`]).
//!
//! ```text
//! i32 total | i32 magic | i32 bodyCRC | i32 queueId | i32 flag | i64 queueOffset |
//! i64 physicalOffset | i32 sysFlag | i64 bornTimestamp | bornHost (4|16 + i32 port) |
//! i64 storeTimestamp | storeHost (4|16 + i32 port) | i32 reconsumeTimes |
//! i64 preparedTransactionOffset | i32 bodyLen + body | u8 (V1) or i16 (V2) topicLen + topic |
//! i16 propertiesLen + properties
//! ```
//!
//! Properties use the same `name \x01 value \x02` form as Meridian's ([`crate::properties`]), so
//! KEYS, TAGS and UNIQ_KEY (Meridian's msgId) pass through unchanged.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};

/// Magic of a stored message with a 1-byte topic length.
pub const MAGIC_V1: i32 = -626_843_481;
/// Magic of a stored message with a 2-byte topic length (topics over 127 bytes).
pub const MAGIC_V2: i32 = -626_843_477;
/// sysFlag bit: the body is compressed (zlib unless compression type bits say otherwise).
pub const SYSFLAG_COMPRESSED: i32 = 0x1;
/// sysFlag bit: born host is IPv6.
pub const SYSFLAG_BORNHOST_V6: i32 = 0x10;
/// sysFlag bit: store host is IPv6.
pub const SYSFLAG_STOREHOST_V6: i32 = 0x20;
/// sysFlag transaction bits (`TRANSACTION_PREPARED_TYPE` 0x4, commit 0x8, rollback 0xC).
pub const SYSFLAG_TRANSACTION_MASK: i32 = 0xC;
/// sysFlag compression type bits (8..10): 1 LZ4, 2 ZSTD, 3 ZLIB ([`COMPRESSION_LZ4`] and on).
pub const SYSFLAG_COMPRESSION_MASK: i32 = 0x700;

/// One message as a pull response carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    /// Queue within the topic.
    pub queue_id: i32,
    /// User flag.
    pub flag: i32,
    /// Position in the queue.
    pub queue_offset: i64,
    /// Position in the commitlog.
    pub physical_offset: i64,
    /// `MessageSysFlag` bits other than the host bits, which follow the addresses.
    pub sys_flag: i32,
    /// When the producer made it (ms).
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// When it was stored (ms).
    pub store_timestamp: i64,
    /// Broker address.
    pub store_host: SocketAddr,
    /// Times consumed again.
    pub reconsume_times: i32,
    /// Half message offset of a transactional message.
    pub prepared_transaction_offset: i64,
    /// Body as stored.
    pub body: &'a [u8],
    /// Topic.
    pub topic: &'a str,
    /// Encoded properties.
    pub properties: &'a [u8],
}

fn host_len(host: &SocketAddr) -> usize {
    if host.is_ipv4() { 8 } else { 20 }
}

fn put_host(out: &mut BytesMut, host: &SocketAddr) {
    match host.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.put_i32(i32::from(host.port()));
}

impl StoredMessage<'_> {
    /// Bytes [`StoredMessage::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let topic_len_size = if self.topic.len() > 127 { 2 } else { 1 };
        4 + 4
            + 4
            + 4
            + 4
            + 8
            + 8
            + 4
            + 8
            + host_len(&self.born_host)
            + 8
            + host_len(&self.store_host)
            + 4
            + 8
            + 4
            + self.body.len()
            + topic_len_size
            + self.topic.len()
            + 2
            + self.properties.len()
    }

    /// The sysFlag as written: the given bits with the host bits set by the addresses.
    pub fn full_sys_flag(&self) -> i32 {
        let mut flag = self.sys_flag & !(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6);
        if self.born_host.is_ipv6() {
            flag |= SYSFLAG_BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            flag |= SYSFLAG_STOREHOST_V6;
        }
        flag
    }

    /// Appends the encoded message to `out`. Properties longer than an i16 cannot be written;
    /// Meridian's limit keeps them under 32 KiB.
    pub fn encode(&self, out: &mut BytesMut) {
        let v2 = self.topic.len() > 127;
        out.reserve(self.encoded_len());
        out.put_i32(self.encoded_len() as i32);
        out.put_i32(if v2 { MAGIC_V2 } else { MAGIC_V1 });
        out.put_u32(crc32fast::hash(self.body) & 0x7FFF_FFFF);
        out.put_i32(self.queue_id);
        out.put_i32(self.flag);
        out.put_i64(self.queue_offset);
        out.put_i64(self.physical_offset);
        out.put_i32(self.full_sys_flag());
        out.put_i64(self.born_timestamp);
        put_host(out, &self.born_host);
        out.put_i64(self.store_timestamp);
        put_host(out, &self.store_host);
        out.put_i32(self.reconsume_times);
        out.put_i64(self.prepared_transaction_offset);
        out.put_i32(self.body.len() as i32);
        out.extend_from_slice(self.body);
        if v2 {
            out.put_i16(self.topic.len() as i16);
        } else {
            out.put_u8(self.topic.len() as u8);
        }
        out.extend_from_slice(self.topic.as_bytes());
        out.put_i16(self.properties.len() as i16);
        out.extend_from_slice(self.properties);
    }
}

/// Why bytes are not a RocketMQ message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RocketMQ message encoding is malformed: {0}")]
pub struct MessageError(pub String);

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], MessageError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| MessageError(format!("ends inside {what}")))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }
    fn i16(&mut self, what: &str) -> Result<i16, MessageError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().expect("2")))
    }
    fn i32(&mut self, what: &str) -> Result<i32, MessageError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("4")))
    }
    fn i64(&mut self, what: &str) -> Result<i64, MessageError> {
        Ok(i64::from_be_bytes(self.take(8, what)?.try_into().expect("8")))
    }
    fn len(&mut self, value: i64, what: &str) -> Result<usize, MessageError> {
        usize::try_from(value).map_err(|_| MessageError(format!("{what} length {value} is negative")))
    }
    fn host(&mut self, v6: bool, what: &str) -> Result<SocketAddr, MessageError> {
        let ip = if v6 {
            let octets: [u8; 16] = self.take(16, what)?.try_into().expect("16");
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let octets: [u8; 4] = self.take(4, what)?.try_into().expect("4");
            IpAddr::V4(Ipv4Addr::from(octets))
        };
        let port = self.i32(what)?;
        Ok(SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)))
    }
}

/// Decodes the message at the start of `bytes`; returns it and its size.
pub fn decode_stored(bytes: &[u8]) -> Result<(StoredMessage<'_>, usize), MessageError> {
    let mut cursor = Cursor { bytes, position: 0 };
    let total = cursor.i32("total size")?;
    let total = cursor.len(i64::from(total), "total")?;
    if total > bytes.len() || total < 4 {
        return Err(MessageError(format!(
            "total size {total} is outside the {} bytes",
            bytes.len()
        )));
    }
    cursor.bytes = &bytes[..total];
    let magic = cursor.i32("magic")?;
    if magic != MAGIC_V1 && magic != MAGIC_V2 {
        return Err(MessageError(format!("magic {magic:#x} is not a message")));
    }
    let _crc = cursor.i32("body CRC")?;
    let queue_id = cursor.i32("queue id")?;
    let flag = cursor.i32("flag")?;
    let queue_offset = cursor.i64("queue offset")?;
    let physical_offset = cursor.i64("physical offset")?;
    let sys_flag = cursor.i32("sys flag")?;
    let born_timestamp = cursor.i64("born timestamp")?;
    let born_host = cursor.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0, "born host")?;
    let store_timestamp = cursor.i64("store timestamp")?;
    let store_host = cursor.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0, "store host")?;
    let reconsume_times = cursor.i32("reconsume times")?;
    let prepared_transaction_offset = cursor.i64("prepared transaction offset")?;
    let body_len = cursor.i32("body length")?;
    let body_len = cursor.len(i64::from(body_len), "body")?;
    let body = cursor.take(body_len, "body")?;
    let topic_len = if magic == MAGIC_V2 {
        let len = cursor.i16("topic length")?;
        cursor.len(i64::from(len), "topic")?
    } else {
        usize::from(cursor.take(1, "topic length")?[0])
    };
    let topic =
        std::str::from_utf8(cursor.take(topic_len, "topic")?).map_err(|_| MessageError("topic is not UTF-8".into()))?;
    let properties_len = cursor.i16("properties length")?;
    let properties_len = cursor.len(i64::from(properties_len), "properties")?;
    let properties = cursor.take(properties_len, "properties")?;
    Ok((
        StoredMessage {
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            topic,
            properties,
        },
        total,
    ))
}

/// Decodes every message of a pull response body.
pub fn decode_all_stored(mut bytes: &[u8]) -> Result<Vec<StoredMessage<'_>>, MessageError> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let (message, size) = decode_stored(bytes)?;
        messages.push(message);
        bytes = &bytes[size..];
    }
    Ok(messages)
}

/// One message of a `SEND_BATCH_MESSAGE` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry<'a> {
    /// User flag.
    pub flag: i32,
    /// Body.
    pub body: &'a [u8],
    /// Encoded properties.
    pub properties: &'a [u8],
}

/// Decodes a batch body: `i32 total | i32 magic | i32 bodyCRC | i32 flag | i32 bodyLen | body |
/// i16 propertiesLen | properties`, repeated.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<BatchEntry<'_>>, MessageError> {
    let mut entries = Vec::new();
    let mut cursor = Cursor { bytes, position: 0 };
    while cursor.position < bytes.len() {
        let start = cursor.position;
        let total = cursor.i32("batch message size")?;
        let total = cursor.len(i64::from(total), "batch message")?;
        let _magic = cursor.i32("magic")?;
        let _crc = cursor.i32("body CRC")?;
        let flag = cursor.i32("flag")?;
        let body_len = cursor.i32("body length")?;
        let body_len = cursor.len(i64::from(body_len), "body")?;
        let body = cursor.take(body_len, "body")?;
        let properties_len = cursor.i16("properties length")?;
        let properties_len = cursor.len(i64::from(properties_len), "properties")?;
        let properties = cursor.take(properties_len, "properties")?;
        if cursor.position - start != total {
            return Err(MessageError(format!(
                "batch message at byte {start} says {total} bytes but holds {}",
                cursor.position - start
            )));
        }
        entries.push(BatchEntry { flag, body, properties });
    }
    Ok(entries)
}

/// Encodes a batch body (what a producer sends), for tests and tools.
pub fn encode_batch(entries: &[BatchEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let total = 4 + 4 + 4 + 4 + 4 + entry.body.len() + 2 + entry.properties.len();
        out.put_i32(total as i32);
        out.put_i32(0);
        out.put_i32(0);
        out.put_i32(entry.flag);
        out.put_i32(entry.body.len() as i32);
        out.extend_from_slice(entry.body);
        out.put_i16(entry.properties.len() as i16);
        out.extend_from_slice(entry.properties);
    }
    out
}

/// The offset msgId of a message: store host and commitlog offset, in uppercase hex (32 digits
/// for IPv4, 56 for IPv6).
pub fn offset_msg_id(store_host: SocketAddr, commitlog_offset: u64) -> String {
    let mut bytes = Vec::with_capacity(28);
    match store_host.ip() {
        IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.put_i32(i32::from(store_host.port()));
    bytes.put_u64(commitlog_offset);
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    text
}

/// Parses an offset msgId into its store host and commitlog offset.
pub fn parse_offset_msg_id(text: &str) -> Result<(SocketAddr, u64), MessageError> {
    let invalid = || MessageError(format!("{text:?} is not an offset msgId (32 or 56 hex digits)"));
    if (text.len() != 32 && text.len() != 56) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..text.len() / 2)
        .map(|index| u8::from_str_radix(&text[index * 2..index * 2 + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let ip_len = if text.len() == 32 { 4 } else { 16 };
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[..4]).expect("4")))
    } else {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..16]).expect("16")))
    };
    let port = i32::from_be_bytes(bytes[ip_len..ip_len + 4].try_into().expect("4"));
    let offset = u64::from_be_bytes(bytes[ip_len + 4..ip_len + 12].try_into().expect("8"));
    Ok((SocketAddr::new(ip, u16::try_from(port).map_err(|_| invalid())?), offset))
}

/// sysFlag compression type (bits 8..10, `MessageSysFlag.COMPRESSION_TYPE_COMPARATOR`) of
/// RocketMQ 5's `CompressionType`: LZ4 frame (`LZ4FrameOutputStream`).
pub const COMPRESSION_LZ4: i32 = 1;
/// Compression type ZSTD (a standard zstd frame, `ZstdOutputStream`).
pub const COMPRESSION_ZSTD: i32 = 2;
/// Compression type ZLIB; 0 (clients older than 5.0 set no type) means zlib too.
pub const COMPRESSION_ZLIB: i32 = 3;

/// Decompresses a body whose sysFlag has `COMPRESSED`, by its compression type (none or ZLIB:
/// zlib, LZ4: an LZ4 frame, ZSTD: a zstd frame, as `CompressionType.findByValue` reads them),
/// refusing to grow past `max_len` bytes. Types 4..7 do not exist and are refused.
pub fn decompress_body(body: &[u8], sys_flag: i32, max_len: usize) -> Result<Vec<u8>, MessageError> {
    let kind = (sys_flag & SYSFLAG_COMPRESSION_MASK) >> 8;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_len + 1));
    let limit = max_len as u64 + 1;
    let (name, read) = match kind {
        0 | COMPRESSION_ZLIB => (
            "zlib",
            flate2::read::ZlibDecoder::new(body).take(limit).read_to_end(&mut out),
        ),
        COMPRESSION_LZ4 => (
            "LZ4 frame",
            lz4_flex::frame::FrameDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out),
        ),
        COMPRESSION_ZSTD => (
            "zstd",
            zstd::stream::read::Decoder::with_buffer(body)
                .and_then(|decoder| decoder.take(limit).read_to_end(&mut out)),
        ),
        other => {
            return Err(MessageError(format!(
                "sysFlag compression type {other} is unknown: RocketMQ defines 1 (LZ4), 2 (ZSTD) and 3 (ZLIB); send with one of them or uncompressed"
            )));
        }
    };
    read.map_err(|error| MessageError(format!("{name} body does not decompress: {error}")))?;
    if out.len() > max_len {
        return Err(MessageError(format!(
            "{name} body decompresses past the {max_len}-byte body limit: send a smaller body"
        )));
    }
    Ok(out)
}

/// Compresses `body` as a RocketMQ 5 producer does for compression type `kind` (zlib level 5,
/// an LZ4 frame of 4 MiB blocks, a zstd frame at level 5), for tests and tools: what
/// [`decompress_body`] reads. Unknown kinds are zlib, as `findByValue(0)` reads them.
pub fn compress_body(body: &[u8], kind: i32) -> Vec<u8> {
    use std::io::Write;
    match kind {
        COMPRESSION_LZ4 => {
            let info = lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max4MB);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(body).expect("writing to a Vec");
            encoder.finish().expect("writing to a Vec")
        }
        COMPRESSION_ZSTD => zstd::stream::encode_all(body, 5).expect("compressing into a Vec"),
        _ => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
            encoder.write_all(body).expect("writing to a Vec");
            encoder.finish().expect("writing to a Vec")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn host() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(ip.into()), port)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(ip.into()), port)),
        ]
    }

    proptest! {
        #[test]
        fn stored_messages_round_trip(
            queue_id in any::<i32>(), flag in any::<i32>(), queue_offset in any::<i64>(),
            physical_offset in any::<i64>(), sys_flag in 0i32..0x800, born in any::<i64>(),
            born_host in host(), stored in any::<i64>(), store_host in host(), reconsume in any::<i32>(),
            body in proptest::collection::vec(any::<u8>(), 0..100),
            topic in "[a-zA-Z0-9%_-]{1,200}", properties in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let message = StoredMessage {
                queue_id, flag, queue_offset, physical_offset, sys_flag, born_timestamp: born, born_host,
                store_timestamp: stored, store_host, reconsume_times: reconsume, prepared_transaction_offset: 0,
                body: &body, topic: &topic, properties: &properties,
            };
            let mut out = BytesMut::new();
            message.encode(&mut out);
            message.encode(&mut out);
            prop_assert_eq!(out.len(), 2 * message.encoded_len());
            let decoded = decode_all_stored(&out).unwrap();
            let expected = StoredMessage { sys_flag: message.full_sys_flag(), ..message.clone() };
            prop_assert_eq!(&decoded, &vec![expected.clone(), expected]);
        }

        #[test]
        fn batches_round_trip(entries in proptest::collection::vec(
            (any::<i32>(), proptest::collection::vec(any::<u8>(), 0..50), proptest::collection::vec(any::<u8>(), 0..50)), 0..5)) {
            let entries: Vec<BatchEntry<'_>> = entries.iter()
                .map(|(flag, body, properties)| BatchEntry { flag: *flag, body, properties }).collect();
            let encoded = encode_batch(&entries);
            prop_assert_eq!(decode_batch(&encoded).unwrap(), entries);
        }

        #[test]
        fn offset_msg_ids_round_trip(store_host in host(), offset in any::<u64>()) {
            let id = offset_msg_id(store_host, offset);
            prop_assert_eq!(id.len(), if store_host.is_ipv4() { 32 } else { 56 });
            prop_assert_eq!(parse_offset_msg_id(&id).unwrap(), (store_host, offset));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all_stored(&bytes);
            let _ = decode_batch(&bytes);
        }
    }

    #[test]
    fn offset_msg_id_matches_java_layout() {
        // 127.0.0.1:10911, commitlog offset 0x1234 (UtilAll.bytes2string of the 16 bytes).
        let id = offset_msg_id("127.0.0.1:10911".parse().unwrap(), 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert!(parse_offset_msg_id("XYZ").is_err());
    }

    #[test]
    fn zlib_bodies_inflate_within_the_limit() {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
        encoder.write_all(&[b'a'; 10_000]).unwrap();
        let compressed = encoder.finish().unwrap();
        assert_eq!(
            decompress_body(&compressed, SYSFLAG_COMPRESSED, 20_000).unwrap().len(),
            10_000
        );
        assert!(decompress_body(&compressed, SYSFLAG_COMPRESSED, 5_000).is_err());
        assert_eq!(
            decompress_body(&compressed, SYSFLAG_COMPRESSED | COMPRESSION_ZLIB << 8, 20_000)
                .unwrap()
                .len(),
            10_000,
            "RocketMQ 5 marks zlib as type 3"
        );
        assert!(decompress_body(&compressed, SYSFLAG_COMPRESSED | COMPRESSION_LZ4 << 8, 20_000).is_err());
        assert!(decompress_body(b"not zlib", SYSFLAG_COMPRESSED, 20_000).is_err());
    }

    /// A body as RocketMQ 5's `Lz4Compressor` makes it: lz4-java's `LZ4FrameOutputStream`
    /// defaults (4 MiB independent blocks, no content checksum).
    fn lz4_frame(body: &[u8]) -> Vec<u8> {
        compress_body(body, COMPRESSION_LZ4)
    }

    #[test]
    fn lz4_frame_bodies_decompress_within_the_limit() {
        let body: Vec<u8> = (0..200_000u32).flat_map(|index| (index % 251).to_le_bytes()).collect();
        let compressed = lz4_frame(&body);
        assert_eq!(
            &compressed[..4],
            &[0x04, 0x22, 0x4D, 0x18],
            "LZ4 frame magic, as LZ4FrameOutputStream writes"
        );
        let flag = SYSFLAG_COMPRESSED | COMPRESSION_LZ4 << 8;
        assert_eq!(decompress_body(&compressed, flag, body.len()).unwrap(), body);
        let error = decompress_body(&compressed, flag, body.len() - 1).unwrap_err();
        assert!(error.to_string().contains("body limit"), "{error}");
        // An LZ4 block without the frame (what a client using the raw block API would send).
        let block = lz4_flex::block::compress(&body);
        assert!(decompress_body(&block, flag, body.len()).is_err());
    }

    #[test]
    fn zstd_bodies_decompress_within_the_limit() {
        let body = b"zstd body from a RocketMQ 5 producer ".repeat(2_000);
        // `ZstdOutputStream(out, level)` at the producer's default level 5 writes one frame.
        let compressed = zstd::stream::encode_all(&body[..], 5).unwrap();
        assert_eq!(&compressed[..4], &[0x28, 0xB5, 0x2F, 0xFD], "zstd frame magic");
        let flag = SYSFLAG_COMPRESSED | COMPRESSION_ZSTD << 8;
        assert_eq!(decompress_body(&compressed, flag, body.len()).unwrap(), body);
        assert!(decompress_body(&compressed, flag, 1_000).is_err());
        assert!(
            decompress_body(&compressed, SYSFLAG_COMPRESSED, body.len()).is_err(),
            "not zlib"
        );
        let unknown = decompress_body(&compressed, SYSFLAG_COMPRESSED | 5 << 8, body.len()).unwrap_err();
        assert!(
            unknown.to_string().contains("compression type 5 is unknown"),
            "{unknown}"
        );
    }

    proptest! {
        #[test]
        fn every_compression_type_round_trips(body in proptest::collection::vec(any::<u8>(), 0..5_000)) {
            let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
            zlib.write_all(&body).unwrap();
            for (kind, compressed) in [
                (0, zlib.finish().unwrap()),
                (COMPRESSION_LZ4, lz4_frame(&body)),
                (COMPRESSION_ZSTD, zstd::stream::encode_all(&body[..], 3).unwrap()),
            ] {
                let flag = SYSFLAG_COMPRESSED | kind << 8;
                prop_assert_eq!(&decompress_body(&compressed, flag, 5_000).unwrap(), &body);
            }
        }

        #[test]
        fn garbage_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), kind in 0i32..8) {
            let _ = decompress_body(&bytes, SYSFLAG_COMPRESSED | kind << 8, 10_000);
        }
    }
}
