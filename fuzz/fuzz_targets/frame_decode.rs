//! `FrameCodec::decode` on arbitrary bytes, as a socket would deliver them.
//!
//! The first input byte picks a chunk size; the rest is the byte stream. The stream is decoded
//! twice, all at once and chunk by chunk, and both must give the same frames and the same error:
//! a decoder that depends on how reads split the stream corrupts connections. Every decoded frame
//! must survive an encode/decode round trip. Nothing may panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_proto::codes::RequestCode;
use meridian_proto::frame::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Small, so short inputs reach the size limit and the "wait for more bytes" path.
const MAX_FRAME_SIZE: usize = 4096;

/// Decodes the chunks in order until the stream ends or the codec fails (which closes a connection).
fn decode_stream<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<String>) {
    let mut codec = FrameCodec::new(MAX_FRAME_SIZE);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(buffer.len() < before, "a decoded frame must consume bytes");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buffer.len(), before, "waiting for more bytes must not consume any");
                    break;
                }
                Err(error) => return (frames, Some(error.to_string())),
            }
        }
    }
    (frames, None)
}

fn check_round_trip(frame: &Frame) {
    let _ = (frame.is_response(), frame.is_oneway(), frame.error_code().http_status());
    let _ = RequestCode::from_u32(frame.header.code);
    let mut codec = FrameCodec::new(MAX_FRAME_SIZE);
    let mut wire = BytesMut::new();
    if codec.encode(frame.clone(), &mut wire).is_ok() {
        assert_eq!(wire.len(), frame.encoded_len());
        let decoded = codec.decode(&mut wire).expect("an encoded frame decodes");
        assert_eq!(decoded.as_ref(), Some(frame));
        assert!(wire.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_byte, stream)) = data.split_first() else {
        return;
    };
    let chunk_size = usize::from(chunk_byte % 64) + 1;
    let (whole_frames, whole_error) = decode_stream(std::iter::once(stream));
    let (chunked_frames, chunked_error) = decode_stream(stream.chunks(chunk_size));
    assert_eq!(whole_frames, chunked_frames);
    assert_eq!(whole_error, chunked_error);
    for frame in &whole_frames {
        check_round_trip(frame);
    }
});
