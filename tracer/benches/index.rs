//! What indexing one trace event costs the tracer (the in-process indexer of `meridian dev`
//! shares its cores with the broker), before and after documents stopped carrying an `event_id`
//! term (no lookup filters on it; `src/index.rs`), measured in the same run:
//!
//! - `index/with_event_id_terms`: the documents as they were (the old path, kept callable through
//!   `TraceIndex::with_event_id_terms`);
//! - `index/without_event_id_terms`: the documents as they are now.
//!
//! One iteration indexes `EVENTS` events (per message: Pub, Deliver, SubBefore, SubAfter, as a
//! traced and consumed message has) into a fresh day partition and commits once; the index is
//! opened outside the timed part. Before the timed runs, one pass of each variant prints its heap
//! allocations per event (a counting global allocator around the adds and the commit, tantivy's
//! threads included) and how the time splits between the adds and the commit. Read the two figures as a ratio: on a shared machine
//! the absolute times are noise.
//!
//! Run with `nice -n 10 cargo bench --workspace --bench index -- --sample-size 10`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_proto::MessageId;
use meridian_proto::trace::{TraceEvent, TraceType};
use meridian_tracer::index::{Positions, TraceIndex};

/// Counts heap allocations, to report them per event.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Events one iteration indexes.
const EVENTS: usize = 8192;
/// 2026-11-25, so every event falls in one day partition.
const BASE_MS: i64 = 1_795_600_000_000;

fn events() -> Vec<TraceEvent> {
    let steps = [
        TraceType::Pub,
        TraceType::Deliver,
        TraceType::SubBefore,
        TraceType::SubAfter,
    ];
    (0..EVENTS / steps.len())
        .flat_map(|message| {
            let msg_id = MessageId::generate().to_string();
            steps.into_iter().enumerate().map(move |(step, kind)| TraceEvent {
                event_id: MessageId::generate().to_string(),
                trace_type: kind as i32,
                timestamp: BASE_MS + message as i64 + step as i64,
                msg_id: msg_id.clone(),
                topic: "orders".into(),
                queue_id: (message % 8) as u32,
                queue_offset: message as u64,
                commitlog_offset: message as u64 * 1100,
                keys: vec![format!("order-{message}")],
                tags: "created".into(),
                group: if kind == TraceType::Pub { "shop" } else { "billing" }.into(),
                client_host: "10.0.0.7:51234".into(),
                broker_name: "broker-a".into(),
                broker_member: "a-0".into(),
                broker_host: "10.0.0.1:7911".into(),
                idc: "dc1".into(),
                born_timestamp: BASE_MS + message as i64,
                store_timestamp: BASE_MS + message as i64 + 1,
                body_size: 1024,
                ..TraceEvent::default()
            })
        })
        .collect()
}

fn open(dir: &std::path::Path, event_id_terms: bool) -> TraceIndex {
    let index = TraceIndex::open(dir, 64 << 20).expect("open index");
    if event_id_terms {
        index.with_event_id_terms()
    } else {
        index
    }
}

/// Indexes every event and commits: what the tracer's indexing thread does with a read.
fn index_all(index: &TraceIndex, events: &[TraceEvent]) {
    for (offset, event) in events.iter().enumerate() {
        black_box(index.add(event, "broker-a/0", offset as u64, 0).expect("add"));
    }
    index
        .commit(&Positions::from([("broker-a/0".to_owned(), events.len() as u64)]))
        .expect("commit");
}

/// Allocations per event over the adds and the commit, and the time of each part (one pass).
fn one_pass(events: &[TraceEvent], event_id_terms: bool) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let index = open(dir.path(), event_id_terms);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    for (offset, event) in events.iter().enumerate() {
        black_box(index.add(event, "broker-a/0", offset as u64, 0).expect("add"));
    }
    let added = started.elapsed();
    index
        .commit(&Positions::from([("broker-a/0".to_owned(), events.len() as u64)]))
        .expect("commit");
    let committed = started.elapsed() - added;
    let allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / events.len() as f64;
    format!(
        "{allocations:.1} allocations per event, adds {:.2} us per event, the commit {:.1} ms",
        added.as_secs_f64() * 1e6 / events.len() as f64,
        committed.as_secs_f64() * 1e3
    )
}

fn bench_index(c: &mut Criterion) {
    let events = events();
    for (name, event_id_terms) in [("with_event_id_terms", true), ("without_event_id_terms", false)] {
        println!("{name}: {}", one_pass(&events, event_id_terms));
    }
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, event_id_terms) in [("with_event_id_terms", true), ("without_event_id_terms", false)] {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let index = open(dir.path(), event_id_terms);
                    let started = Instant::now();
                    index_all(&index, &events);
                    total += started.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_index);
criterion_main!(benches);
