//! Length-prefixed frames.
//!
//! ```text
//! +-------------+--------------+------------------+----------------------+
//! | frame_len   | header_len   | header (prost)   | body (opaque bytes)  |
//! | u32 BE      | u32 BE       | header_len bytes | frame_len - 4 - hlen |
//! +-------------+--------------+------------------+----------------------+
//! ```
//!
//! `frame_len` counts everything after itself. The body is never re-encoded: a decoded frame's
//! body is a zero-copy slice of the read buffer, and a request's body is handed to the handler as
//! it arrived. Requests are pipelined: each carries a `request_id`, and responses may come back in
//! any order with the same id.

/// Version of the wire protocol this build speaks, sent in every frame header.
pub const PROTOCOL_VERSION: u32 = 1;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::codes::{ErrorCode, RequestCode};

/// Bytes before the header: `frame_len` and `header_len`.
pub const FRAME_PREFIX_LEN: usize = 8;
/// Largest header accepted; headers are a few dozen bytes, so anything larger is garbage.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Set on response frames.
pub const FLAG_RESPONSE: u32 = 1;
/// Set on requests that expect no response (one-way sends).
pub const FLAG_ONEWAY: u32 = 1 << 1;

/// The prost header of every frame.
#[derive(Clone, PartialEq, Message)]
pub struct Header {
    /// Chosen by the requester, echoed by the response.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// A [`RequestCode`] on requests, an [`ErrorCode`] on responses.
    #[prost(uint32, tag = "2")]
    pub code: u32,
    /// [`FLAG_RESPONSE`], [`FLAG_ONEWAY`].
    #[prost(uint32, tag = "3")]
    pub flags: u32,
    /// Protocol version of the sender ([`PROTOCOL_VERSION`]).
    #[prost(uint32, tag = "4")]
    pub version: u32,
    /// Human-readable error on failed responses: names the problem, the limit and the fix.
    #[prost(string, tag = "5")]
    pub remark: String,
}

/// One frame: a header and an opaque body.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The decoded header.
    pub header: Header,
    /// The body, not interpreted by the codec.
    pub body: Bytes,
}

impl Frame {
    /// A request frame.
    pub fn request(request_id: u64, code: RequestCode, body: Bytes) -> Frame {
        Frame {
            header: Header {
                request_id,
                code: code as u32,
                flags: 0,
                version: PROTOCOL_VERSION,
                remark: String::new(),
            },
            body,
        }
    }

    /// A successful response to `request_id`.
    pub fn response(request_id: u64, body: Bytes) -> Frame {
        Frame {
            header: Header {
                request_id,
                code: ErrorCode::Ok as u32,
                flags: FLAG_RESPONSE,
                version: PROTOCOL_VERSION,
                remark: String::new(),
            },
            body,
        }
    }

    /// A failed response to `request_id`, with a message for the user.
    pub fn error(request_id: u64, code: ErrorCode, remark: impl Into<String>) -> Frame {
        Frame {
            header: Header {
                request_id,
                code: code as u32,
                flags: FLAG_RESPONSE,
                version: PROTOCOL_VERSION,
                remark: remark.into(),
            },
            body: Bytes::new(),
        }
    }

    /// Whether this frame answers a request.
    pub fn is_response(&self) -> bool {
        self.header.flags & FLAG_RESPONSE != 0
    }

    /// Whether this request expects no response.
    pub fn is_oneway(&self) -> bool {
        self.header.flags & FLAG_ONEWAY != 0
    }

    /// The error code of a response.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_u32(self.header.code)
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        FRAME_PREFIX_LEN + self.header.encoded_len() + self.body.len()
    }
}

/// Why a frame could not be decoded. The connection cannot be trusted afterwards and is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced frame is larger than this side accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes (max_frame_size); send smaller batches")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The header length is impossible for the frame that holds it.
    #[error("frame header of {header_len} bytes does not fit a frame of {frame_len} bytes (header limit {max})")]
    BadHeaderLength {
        /// Announced header length.
        header_len: usize,
        /// Announced frame length.
        frame_len: usize,
        /// Largest header accepted.
        max: usize,
    },
    /// The header bytes are not a valid prost header.
    #[error("frame header is not valid protobuf: {0}")]
    BadHeader(#[from] prost::DecodeError),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// tokio-util codec for [`Frame`]s with a size limit.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_size: usize,
}

impl FrameCodec {
    /// A codec that refuses frames whose `frame_len` exceeds `max_frame_size`.
    pub fn new(max_frame_size: usize) -> FrameCodec {
        FrameCodec { max_frame_size }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < FRAME_PREFIX_LEN {
            return Ok(None);
        }
        let frame_len = u32::from_be_bytes(src[0..4].try_into().expect("4 bytes")) as usize;
        let header_len = u32::from_be_bytes(src[4..8].try_into().expect("4 bytes")) as usize;
        if frame_len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len: frame_len,
                max: self.max_frame_size,
            });
        }
        if header_len > MAX_HEADER_LEN || header_len + 4 > frame_len {
            return Err(FrameError::BadHeaderLength {
                header_len,
                frame_len,
                max: MAX_HEADER_LEN,
            });
        }
        let total = 4 + frame_len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame_bytes = src.split_to(total).freeze();
        frame_bytes.advance(FRAME_PREFIX_LEN);
        let header = Header::decode(frame_bytes.split_to(header_len))?;
        Ok(Some(Frame {
            header,
            body: frame_bytes,
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let header_len = frame.header.encoded_len();
        let frame_len = 4 + header_len + frame.body.len();
        if frame_len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len: frame_len,
                max: self.max_frame_size,
            });
        }
        dst.reserve(4 + frame_len);
        dst.put_u32(frame_len as u32);
        dst.put_u32(header_len as u32);
        frame.header.encode(dst).expect("reserved enough space for the header");
        dst.extend_from_slice(&frame.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            ".{0,40}",
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(request_id, code, flags, version, remark, body)| Frame {
                header: Header {
                    request_id,
                    code,
                    flags,
                    version,
                    remark,
                },
                body: Bytes::from(body),
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(frames in proptest::collection::vec(arb_frame(), 1..8), chunk in 1usize..64) {
            let mut codec = FrameCodec::new(1 << 20);
            let mut wire = BytesMut::new();
            for frame in &frames {
                codec.encode(frame.clone(), &mut wire).unwrap();
            }
            let mut decoded = Vec::new();
            let mut buffer = BytesMut::new();
            for piece in wire.chunks(chunk) {
                buffer.extend_from_slice(piece);
                while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::new(4096);
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buffer) {}
        }
    }

    #[test]
    fn oversize_frames_are_refused_before_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buffer = BytesMut::new();
        buffer.put_u32(u32::MAX);
        buffer.put_u32(10);
        let error = codec.decode(&mut buffer).unwrap_err();
        assert!(error.to_string().contains("exceeds the limit of 1024 bytes"), "{error}");
    }

    #[test]
    fn header_longer_than_frame_is_refused() {
        let mut codec = FrameCodec::new(1024);
        let mut buffer = BytesMut::new();
        buffer.put_u32(10);
        buffer.put_u32(100);
        buffer.extend_from_slice(&[0; 10]);
        assert!(matches!(
            codec.decode(&mut buffer),
            Err(FrameError::BadHeaderLength { .. })
        ));
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit() {
        let mut codec = FrameCodec::new(100);
        let frame = Frame::response(1, Bytes::from(vec![0u8; 200]));
        assert!(matches!(
            codec.encode(frame, &mut BytesMut::new()),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
