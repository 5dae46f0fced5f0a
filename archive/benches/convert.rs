//! Segment → Parquet conversion next to a plain sequential read of the same segment bytes, in the
//! same run (docs/benchmarks.md, "Archive (issue 8)").
//!
//! - `archive_convert/read_entries/<body>`: the baseline. `record::read_entry` over the whole
//!   segment, which is what any reader of the commitlog does at least (header, CRC of every record).
//! - `archive_convert/convert_zstd1/<body>`: `convert::convert_segment` with the archiver's default
//!   options (zstd level 1, statistics, page index, bloom filters), files built in memory.
//!
//! Both read the same in-memory segment (the archiver maps a sealed segment that is normally in
//! the page cache), single-threaded: the conversion runs on one core, so MB/s is MB/s per core.
//! Throughput is counted in commitlog bytes (records only, not the segment's unwritten tail).
//! Before timing, the archive size as a share of the commitlog bytes is printed per body size.
//!
//! Run with `cargo bench -p meridian-archive --bench convert`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meridian_archive::convert::{self, ConvertOptions};
use meridian_archive::sample;
use meridian_proto::record::{self, Entry};

/// Segment size: small enough that a run takes a few minutes, large enough for several row groups.
const SEGMENT_LEN: usize = 64 << 20;
/// 2026-11-25T00:00:00Z: every message falls on one UTC day (one file per topic).
const FIRST_STORE_TIME: i64 = 1_795_564_800_000;
const TOPICS: u32 = 4;
const QUEUES: u32 = 8;

/// A sealed segment filled to about 90% with JSON-like bodies of about `body_size` bytes.
fn sample_segment(body_size: usize) -> Vec<u8> {
    let probe = sample::messages(1, TOPICS, QUEUES, FIRST_STORE_TIME, 1, body_size);
    let per_record = record::encoded_len(
        probe[0].topic.len(),
        // msg id, keys, tag and a property: an upper bound of the encoded properties.
        160,
        probe[0].body.len(),
    );
    let count = (SEGMENT_LEN * 9 / 10 / per_record) as u64;
    let messages = sample::messages(count, TOPICS, QUEUES, FIRST_STORE_TIME, 1, body_size);
    sample::segment(0, SEGMENT_LEN, &messages, &mut HashMap::new(), true)
}

/// The baseline: every entry of the segment read and checked, in order.
fn read_entries(bytes: &[u8]) -> (u64, u64) {
    let (mut position, mut records, mut body_bytes) = (0usize, 0u64, 0u64);
    while position < bytes.len() {
        match record::read_entry(&bytes[position..]) {
            Ok(Entry::Record(record)) => {
                records += 1;
                body_bytes += record.body().len() as u64;
                position += record.total_size();
            }
            Ok(Entry::Blank(len)) => position += len,
            Err(_) => break,
        }
    }
    (records, body_bytes)
}

fn convert(criterion: &mut Criterion) {
    let options = ConvertOptions::new("broker-a");
    let mut group = criterion.benchmark_group("archive_convert");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for body_size in [256usize, 1024, 4096] {
        let segment = sample_segment(body_size);
        let converted = convert::convert_segment(0, &segment, &options).expect("sample segment converts");
        let parquet: u64 = converted.files.iter().map(|file| file.bytes.len() as u64).sum();
        println!(
            "archive size, JSON-like bodies of {body_size} B: {} records, {} commitlog bytes, {} Parquet bytes \
             in {} files = {:.1}% of the commitlog",
            converted.records,
            converted.record_bytes,
            parquet,
            converted.files.len(),
            100.0 * parquet as f64 / converted.record_bytes as f64
        );
        group.throughput(Throughput::Bytes(converted.record_bytes));
        group.bench_with_input(
            BenchmarkId::new("read_entries", body_size),
            &segment,
            |bencher, segment| bencher.iter(|| black_box(read_entries(black_box(segment)))),
        );
        group.bench_with_input(
            BenchmarkId::new("convert_zstd1", body_size),
            &segment,
            |bencher, segment| {
                bencher.iter(|| black_box(convert::convert_segment(0, black_box(segment), &options).expect("converts")))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, convert);
criterion_main!(benches);
