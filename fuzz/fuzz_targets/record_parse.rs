//! The record format on arbitrary bytes: `record::read_entry` walking a segment the way recovery
//! does, and `record::decode_all` decoding a pull response the way a consumer does.
//!
//! Both must agree: `decode_all` succeeds exactly when the bytes are a sequence of whole records,
//! and then yields those records' fields. Nothing may panic.
//!
//! Random bytes almost never carry a valid CRC32C, which would stop the fuzzer at the checksum.
//! So the first input byte picks a mode: odd means "fix the CRC of each record in the input
//! before parsing", which lets the fuzzer reach the layout checks behind the checksum.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian_proto::properties;
use meridian_proto::record::{self, BLANK_MARKER_LEN, Entry, MIN_RECORD_LEN, Record};

/// Reads every accessor, as the broker and a consumer would.
fn touch(record: &Record<'_>) {
    assert!(record.total_size() >= MIN_RECORD_LEN);
    assert_eq!(record.as_bytes().len(), record.total_size());
    assert!(properties::is_well_formed(record.properties()));
    let _ = (
        record.flags(),
        record.queue_id(),
        record.queue_offset(),
        record.commitlog_offset(),
    );
    let _ = (
        record.born_timestamp(),
        record.store_timestamp(),
        record.reconsume_count(),
    );
    let _ = (
        record.born_host(),
        record.store_host(),
        record.topic(),
        record.msg_id(),
        record.tag(),
    );
    assert_eq!(&record.as_bytes()[record.body_range()], record.body());
    assert_eq!(&record.as_bytes()[record.properties_range()], record.properties());
}

/// Offset of the CRC field, and where the bytes it covers start (see the layout in `record`).
const CRC_AT: usize = 8;
const CRC_START: usize = 12;

/// Writes the correct CRC into each record that the size fields chain together.
fn fix_checksums(bytes: &mut [u8]) {
    let mut position = 0;
    while bytes.len() - position >= MIN_RECORD_LEN {
        let size_field: [u8; 4] = bytes[position..position + 4].try_into().expect("4 bytes");
        let size = u32::from_be_bytes(size_field) as usize;
        if size < MIN_RECORD_LEN || size > bytes.len() - position {
            break;
        }
        let crc = crc32c::crc32c(&bytes[position + CRC_START..position + size]);
        bytes[position + CRC_AT..position + CRC_START].copy_from_slice(&crc.to_be_bytes());
        position += size;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksums(&mut owned);
    }
    let data = &owned[..];

    // Walk the bytes as a commitlog segment: records until a blank marker, an error or the end.
    let mut records = Vec::new();
    let mut position = 0;
    let mut only_whole_records = true;
    while position < data.len() {
        match record::read_entry(&data[position..]) {
            Ok(Entry::Record(record)) => {
                touch(&record);
                position += record.total_size();
                records.push(record);
            }
            Ok(Entry::Blank(len)) => {
                assert!(len >= BLANK_MARKER_LEN && len <= data.len() - position);
                only_whole_records = false;
                break;
            }
            Err(_) => {
                only_whole_records = false;
                break;
            }
        }
    }

    let buffer = Bytes::copy_from_slice(data);
    match record::decode_all(&buffer) {
        Ok(messages) => {
            assert!(
                only_whole_records,
                "decode_all accepted bytes that are not whole records"
            );
            assert_eq!(messages.len(), records.len());
            for (message, record) in messages.iter().zip(&records) {
                assert_eq!(message.topic, record.topic());
                assert_eq!(&message.body[..], record.body());
                assert_eq!(&message.properties[..], record.properties());
                assert_eq!(message.queue_offset, record.queue_offset());
                let _ = (message.msg_id(), message.keys().count(), message.tag());
            }
        }
        Err(_) => assert!(!only_whole_records, "decode_all refused a sequence of whole records"),
    }
});
