//! `RemotingCodec::decode` (RocketMQ remoting frames, JSON and binary headers) on arbitrary bytes,
//! as a socket would deliver them, then the lenient field reads and the message decoders a
//! listener runs on what it decoded.
//!
//! The first input byte picks a chunk size; the rest is the byte stream, decoded all at once and
//! chunk by chunk: both must give the same commands and the same error. Every decoded command
//! must survive an encode/decode round trip in its own header encoding. Nothing may panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_proto::remoting::message::{decode_all_stored, decode_batch, parse_offset_msg_id};
use meridian_proto::remoting::{Decoded, RemotingCodec};
use tokio_util::codec::Decoder;

/// Small, so short inputs reach the size limit and the "wait for more bytes" path.
const MAX_FRAME: usize = 4096;

fn decode_stream<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Decoded>, Option<String>) {
    let mut codec = RemotingCodec::new(MAX_FRAME);
    let mut buffer = BytesMut::new();
    let mut decoded = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            match codec.decode(&mut buffer) {
                Ok(Some(item)) => {
                    assert!(buffer.len() < before, "a decoded frame must consume bytes");
                    decoded.push(item);
                }
                Ok(None) => {
                    assert_eq!(buffer.len(), before, "waiting for more bytes must not consume any");
                    break;
                }
                Err(error) => return (decoded, Some(error.to_string())),
            }
        }
    }
    (decoded, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_byte, stream)) = data.split_first() else {
        return;
    };
    let chunk_size = usize::from(chunk_byte % 64) + 1;
    let (whole, whole_error) = decode_stream(std::iter::once(stream));
    let (chunked, chunked_error) = decode_stream(stream.chunks(chunk_size));
    assert_eq!(whole, chunked);
    assert_eq!(whole_error, chunked_error);
    for item in &whole {
        let Decoded::Command(command) = item else { continue };
        let fields = command.fields();
        let _ = (fields.int(&["queueId"]), fields.bool_or(&["batch"], false), fields.str(&["topic"]));
        let _ = decode_batch(&command.body);
        let _ = decode_all_stored(&command.body);
        if let Ok(text) = std::str::from_utf8(&command.body) {
            let _ = parse_offset_msg_id(text);
        }
        let mut wire = BytesMut::new();
        command.encode(&mut wire);
        let mut codec = RemotingCodec::new(usize::MAX);
        match codec.decode(&mut wire).expect("an encoded command decodes") {
            Some(Decoded::Command(again)) => {
                // Binary headers carry i16 codes and versions: compare what they can hold.
                assert_eq!(again.opaque, command.opaque);
                assert_eq!(again.ext_fields, command.ext_fields);
                assert_eq!(again.body, command.body);
            }
            other => panic!("re-encoded command did not decode: {other:?}"),
        }
    }
});
