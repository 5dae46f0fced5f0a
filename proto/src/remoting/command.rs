//! The remoting frame and its two header encodings (`RemotingCommand.encode/decode`):
//!
//! ```text
//! | u32 total_len | u32 (serialize_type << 24 | header_len) | header | body |
//! total_len = 4 + header_len + body_len        (does not count itself)
//! ```
//!
//! The header is JSON (type 0) or RocketMQ binary (type 1, [`decode_binary_header`]). Both are
//! read leniently, as the Java broker reads them: numbers may arrive as strings, `language` as a
//! name or an ordinal, ext-field values as strings, numbers or booleans. A response is written in
//! the encoding of the request it answers.
//!
//! [`RemotingCodec`] is the tokio-util codec. A frame whose length is impossible is a
//! [`FrameError`] (the connection closes, as Java's decoder closes it); a well-framed command whose
//! header cannot be read is a [`Decoded::BadHeader`], answered with an error and the connection
//! kept.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::codes::{language_name, language_ordinal, response};

/// RocketMQ's default largest frame (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Flag bit: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit: the request is one-way (no response).
pub const FLAG_ONEWAY: i32 = 2;
/// The version a Meridian listener reports in its responses (`V4_9_4`).
pub const SERVER_VERSION: i32 = 401;
/// `MQVersion` ordinal of 4.9.4: clients at or above it get standard JSON route bodies.
pub const V4_9_4: i32 = 401;

/// How a header is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// fastjson object (type byte 0).
    #[default]
    Json,
    /// RocketMQ binary (type byte 1).
    Binary,
}

/// One remoting command: a request or a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemotingCommand {
    /// Request code, or response code in a response.
    pub code: i32,
    /// `LanguageCode` ordinal of the sender.
    pub language: u8,
    /// Sender's `MQVersion` ordinal.
    pub version: i32,
    /// Matches a response to its request.
    pub opaque: i32,
    /// [`FLAG_RESPONSE`], [`FLAG_ONEWAY`].
    pub flag: i32,
    /// Error text of a response.
    pub remark: Option<String>,
    /// Custom header fields, flattened to strings.
    pub ext_fields: BTreeMap<String, String>,
    /// Body bytes.
    pub body: Bytes,
    /// The header encoding this command arrived in, or is to be written in.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    /// A request with these ext fields.
    pub fn request(code: i32, opaque: i32) -> RemotingCommand {
        RemotingCommand {
            code,
            language: 0,
            version: SERVER_VERSION,
            opaque,
            ..RemotingCommand::default()
        }
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this request wants no response.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// A success response to this request, in its encoding.
    pub fn success(&self) -> RemotingCommand {
        self.respond(response::SUCCESS, None)
    }

    /// A response to this request with `code` and `remark`, in its encoding.
    pub fn respond(&self, code: i32, remark: Option<String>) -> RemotingCommand {
        RemotingCommand {
            code,
            language: 0,
            version: SERVER_VERSION,
            opaque: self.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type: self.serialize_type,
        }
    }

    /// Sets an ext field.
    pub fn with(mut self, name: &str, value: impl ToString) -> RemotingCommand {
        self.ext_fields.insert(name.to_owned(), value.to_string());
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> RemotingCommand {
        self.body = body.into();
        self
    }

    /// The ext fields, for lenient typed reads.
    pub fn fields(&self) -> super::fields::Fields<'_> {
        super::fields::Fields::new(self.code, &self.ext_fields)
    }

    /// The header in its encoding.
    pub fn encode_header(&self) -> Vec<u8> {
        match self.serialize_type {
            SerializeType::Json => encode_json_header(self),
            SerializeType::Binary => encode_binary_header(self),
        }
    }

    /// The whole frame, length prefix included.
    pub fn encode(&self, dst: &mut BytesMut) {
        let header = self.encode_header();
        let total = 4 + header.len() + self.body.len();
        dst.reserve(4 + total);
        dst.put_u32(total as u32);
        let type_byte: u32 = match self.serialize_type {
            SerializeType::Json => 0,
            SerializeType::Binary => 1,
        };
        dst.put_u32(type_byte << 24 | (header.len() as u32 & 0x00FF_FFFF));
        dst.extend_from_slice(&header);
        dst.extend_from_slice(&self.body);
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remoting header is malformed: {0}")]
pub struct HeaderError(pub String);

fn json_int(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => number.as_i64().or_else(|| number.as_f64().map(|float| float as i64)),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        serde_json::Value::Bool(flag) => Some(i64::from(*flag)),
        _ => None,
    }
}

fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads a JSON header (the body is not part of it).
pub fn decode_json_header(bytes: &[u8]) -> Result<RemotingCommand, HeaderError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| HeaderError(format!("not JSON: {error}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| HeaderError("the JSON header is not an object".into()))?;
    let int = |name: &str| object.get(name).and_then(json_int).unwrap_or(0);
    let code = object
        .get("code")
        .and_then(json_int)
        .ok_or_else(|| HeaderError("the JSON header has no numeric `code`".into()))?;
    let language = match object.get("language") {
        Some(serde_json::Value::String(name)) => match name.trim().parse::<u8>() {
            Ok(ordinal) => ordinal,
            Err(_) => language_ordinal(name),
        },
        Some(other) => json_int(other).map_or(7, |ordinal| u8::try_from(ordinal).unwrap_or(7)),
        None => 0,
    };
    let mut ext_fields = BTreeMap::new();
    if let Some(serde_json::Value::Object(fields)) = object.get("extFields") {
        for (name, value) in fields {
            if let Some(text) = json_text(value) {
                ext_fields.insert(name.clone(), text);
            }
        }
    }
    Ok(RemotingCommand {
        code: code as i32,
        language,
        version: int("version") as i32,
        opaque: int("opaque") as i32,
        flag: int("flag") as i32,
        remark: object.get("remark").and_then(json_text),
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

/// Writes a JSON header as fastjson does (keys sorted).
pub fn encode_json_header(command: &RemotingCommand) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("code".into(), command.code.into());
    object.insert(
        "extFields".into(),
        serde_json::to_value(&command.ext_fields).unwrap_or_default(),
    );
    object.insert("flag".into(), command.flag.into());
    object.insert("language".into(), language_name(command.language).into());
    object.insert("opaque".into(), command.opaque.into());
    if let Some(remark) = &command.remark {
        object.insert("remark".into(), remark.clone().into());
    }
    object.insert("serializeTypeCurrentRPC".into(), "JSON".into());
    object.insert("version".into(), command.version.into());
    serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default()
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], HeaderError> {
        if self.bytes.len() < len {
            return Err(HeaderError(format!(
                "binary header ends inside {what} ({len} bytes wanted, {} left)",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }
    fn i16(&mut self, what: &str) -> Result<i16, HeaderError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self, what: &str) -> Result<i32, HeaderError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn text(&mut self, len: usize, what: &str) -> Result<String, HeaderError> {
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Reads a RocketMQ binary header.
pub fn decode_binary_header(bytes: &[u8]) -> Result<RemotingCommand, HeaderError> {
    let mut reader = Reader { bytes };
    let code = reader.i16("code")?;
    let language = reader.take(1, "language")?[0];
    let version = reader.i16("version")?;
    let opaque = reader.i32("opaque")?;
    let flag = reader.i32("flag")?;
    let remark_len = reader.i32("remark length")?;
    let remark = match usize::try_from(remark_len) {
        Ok(0) => None,
        Ok(len) => Some(reader.text(len, "remark")?),
        Err(_) => return Err(HeaderError(format!("remark length {remark_len} is negative"))),
    };
    let ext_len = reader.i32("ext fields length")?;
    let ext_len = usize::try_from(ext_len)
        .ok()
        .filter(|len| *len <= reader.bytes.len())
        .ok_or_else(|| {
            HeaderError(format!(
                "ext fields length {ext_len} is outside the {} header bytes left",
                reader.bytes.len()
            ))
        })?;
    let mut fields = Reader {
        bytes: reader.take(ext_len, "ext fields")?,
    };
    let mut ext_fields = BTreeMap::new();
    while !fields.bytes.is_empty() {
        let key_len = fields.i16("ext field name length")?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| HeaderError(format!("ext field name length {key_len} is negative")))?;
        let key = fields.text(key_len, "ext field name")?;
        let value_len = fields.i32("ext field value length")?;
        let value_len = usize::try_from(value_len)
            .map_err(|_| HeaderError(format!("ext field value length {value_len} is negative")))?;
        let value = fields.text(value_len, "ext field value")?;
        ext_fields.insert(key, value);
    }
    Ok(RemotingCommand {
        code: i32::from(code),
        language,
        version: i32::from(version),
        opaque,
        flag,
        remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::Binary,
    })
}

/// Writes a RocketMQ binary header.
pub fn encode_binary_header(command: &RemotingCommand) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.put_i16(command.code as i16);
    out.put_u8(command.language);
    out.put_i16(command.version as i16);
    out.put_i32(command.opaque);
    out.put_i32(command.flag);
    let remark = command.remark.as_deref().unwrap_or("");
    out.put_i32(remark.len() as i32);
    out.extend_from_slice(remark.as_bytes());
    let mut fields = Vec::new();
    for (key, value) in &command.ext_fields {
        fields.put_i16(key.len() as i16);
        fields.extend_from_slice(key.as_bytes());
        fields.put_i32(value.len() as i32);
        fields.extend_from_slice(value.as_bytes());
    }
    out.put_i32(fields.len() as i32);
    out.extend_from_slice(&fields);
    out
}

/// A frame whose length makes it unreadable: the connection cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is larger than the limit.
    #[error("remoting frame of {len} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The length prefix or header length is impossible.
    #[error("remoting frame is malformed: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// What one frame decoded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A readable command.
    Command(RemotingCommand),
    /// A whole frame whose header could not be read: answered with an error.
    BadHeader {
        /// The opaque, when it could be found (binary headers carry it at a fixed place).
        opaque: i32,
        /// The header's type byte.
        serialize_type: SerializeType,
        /// What was wrong.
        error: HeaderError,
    },
}

/// Decodes one frame's bytes after the length prefix (`header_len_and_type | header | body`).
pub fn decode_frame(mut frame: Bytes) -> Result<Decoded, FrameError> {
    if frame.len() < 4 {
        return Err(FrameError::Malformed(format!(
            "a frame of {} bytes has no room for its header length",
            frame.len()
        )));
    }
    let header_len_and_type = frame.get_u32();
    let header_len = (header_len_and_type & 0x00FF_FFFF) as usize;
    if header_len > frame.len() {
        return Err(FrameError::Malformed(format!(
            "header length {header_len} is larger than the {} bytes of the frame",
            frame.len()
        )));
    }
    let header = frame.split_to(header_len);
    let (serialize_type, decoded) = match header_len_and_type >> 24 {
        0 => (SerializeType::Json, decode_json_header(&header)),
        1 => (SerializeType::Binary, decode_binary_header(&header)),
        other => (
            SerializeType::Json,
            Err(HeaderError(format!(
                "serialize type {other} is unknown (0 is JSON, 1 is ROCKETMQ)"
            ))),
        ),
    };
    Ok(match decoded {
        Ok(mut command) => {
            command.body = frame;
            Decoded::Command(command)
        }
        Err(error) => {
            let opaque = if serialize_type == SerializeType::Binary && header.len() >= 9 {
                i32::from_be_bytes(header[5..9].try_into().expect("4 bytes"))
            } else {
                0
            };
            Decoded::BadHeader {
                opaque,
                serialize_type,
                error,
            }
        }
    })
}

/// The tokio-util codec of remoting frames.
#[derive(Debug, Clone)]
pub struct RemotingCodec {
    max_frame: usize,
}

impl RemotingCodec {
    /// A codec refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> RemotingCodec {
        RemotingCodec { max_frame }
    }
}

impl Default for RemotingCodec {
    fn default() -> RemotingCodec {
        RemotingCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for RemotingCodec {
    type Item = Decoded;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(src[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let frame = src.split_to(len).freeze();
        decode_frame(frame).map(Some)
    }
}

impl Encoder<RemotingCommand> for RemotingCodec {
    type Error = FrameError;

    fn encode(&mut self, command: RemotingCommand, dst: &mut BytesMut) -> Result<(), FrameError> {
        command.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn command_strategy() -> impl Strategy<Value = RemotingCommand> {
        (
            any::<i16>(),
            0u8..14,
            any::<i16>(),
            any::<i32>(),
            0i32..4,
            proptest::option::of("[ -~]{1,40}"),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", "[ -~]{0,30}", 0..6),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        )
            .prop_map(
                |(code, language, version, opaque, flag, remark, ext_fields, body, binary)| RemotingCommand {
                    code: i32::from(code),
                    language,
                    version: i32::from(version),
                    opaque,
                    flag,
                    remark,
                    ext_fields,
                    body: Bytes::from(body),
                    serialize_type: if binary {
                        SerializeType::Binary
                    } else {
                        SerializeType::Json
                    },
                },
            )
    }

    fn round_trip(command: &RemotingCommand) -> RemotingCommand {
        let mut buffer = BytesMut::new();
        command.encode(&mut buffer);
        let mut codec = RemotingCodec::default();
        match codec.decode(&mut buffer).unwrap().unwrap() {
            Decoded::Command(decoded) => {
                assert!(buffer.is_empty());
                decoded
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn both_header_encodings_round_trip(command in command_strategy()) {
            prop_assert_eq!(round_trip(&command), command);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = RemotingCodec::new(1024);
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buffer) {}
        }
    }

    #[test]
    fn json_headers_are_read_leniently_as_cpp_and_java_clients_write_them() {
        let header = br#"{"code":"310","language":1,"version":"401","opaque":7,"flag":0,
            "extFields":{"b":"orders","e":3,"k":false,"g":1700000000000},"serializeTypeCurrentRPC":"JSON"}"#;
        let command = decode_json_header(header).unwrap();
        assert_eq!(
            (command.code, command.language, command.version, command.opaque),
            (310, 1, 401, 7)
        );
        assert_eq!(command.ext_fields["e"], "3");
        assert_eq!(command.ext_fields["k"], "false");
        assert_eq!(command.ext_fields["g"], "1700000000000");
        let named = decode_json_header(br#"{"code":105,"language":"GO","opaque":1}"#).unwrap();
        assert_eq!(named.language, 9);
        assert!(decode_json_header(br#"{"language":"GO"}"#).is_err());
        assert!(decode_json_header(b"[1,2]").is_err());
    }

    #[test]
    fn a_well_framed_command_with_a_bad_header_is_reported_not_fatal() {
        let mut frame = BytesMut::new();
        let header = b"{not json";
        frame.put_u32((4 + header.len()) as u32);
        frame.put_u32(header.len() as u32);
        frame.extend_from_slice(header);
        let mut codec = RemotingCodec::default();
        assert!(matches!(
            codec.decode(&mut frame).unwrap(),
            Some(Decoded::BadHeader { .. })
        ));
        let mut binary = BytesMut::new();
        let header = [0u8, 10, 1, 0, 1, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 0];
        binary.put_u32((4 + header.len()) as u32);
        binary.put_u32(1 << 24 | header.len() as u32);
        binary.extend_from_slice(&header);
        match codec.decode(&mut binary).unwrap() {
            Some(Decoded::BadHeader {
                opaque, serialize_type, ..
            }) => {
                assert_eq!((opaque, serialize_type), (42, SerializeType::Binary));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn impossible_lengths_close_the_connection() {
        let mut codec = RemotingCodec::new(100);
        let mut huge = BytesMut::from(&[0u8, 0, 1, 0][..]);
        assert!(matches!(codec.decode(&mut huge), Err(FrameError::TooLarge { .. })));
        let mut short = BytesMut::from(&[0u8, 0, 0, 2, 0, 0][..]);
        assert!(matches!(codec.decode(&mut short), Err(FrameError::Malformed(_))));
        let mut header_too_long = BytesMut::from(&[0u8, 0, 0, 4, 0, 0, 0, 9][..]);
        assert!(matches!(
            codec.decode(&mut header_too_long),
            Err(FrameError::Malformed(_))
        ));
    }
}
