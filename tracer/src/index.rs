//! The trace index: one tantivy index per UTC day (`index/2026-11-25/`), so retention deletes
//! whole directories and a lookup over a time range opens only the days in it.
//!
//! Each event is one document: the exact-term fields a lookup filters on (`msg_id`, `keys`,
//! `topic`, `offset_id`, `trace_type`), the event time as an indexed i64, and the prost-encoded
//! event itself, stored (so a lookup returns every field, its event id included, with no second
//! source). The schema keeps an `event_id` term field, but no lookup filters on it (duplicates are
//! caught by the recent-ids set below), so documents leave it empty: a term unique to every
//! document was the dearest part of indexing one (`benches/index.rs`).
//!
//! Exactly once across crash and replay: every commit of a partition carries, as its tantivy
//! payload, the trace-topic position (`broker/queue → next offset`) the ingester had fully read
//! when it committed. After a restart, an event read from position `p` of a queue is skipped when
//! its partition's committed position for that queue is beyond `p`: the partition has it. Events
//! added since the last commit were lost with the process and are indexed again. On top of that,
//! event ids seen recently are remembered, so one event reported twice (a client resending a
//! report) is indexed once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use meridian_proto::trace::{OffsetId, TraceEvent};
use prost::Message;
use tantivy::collector::DocSetCollector;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Result, TracerError};

const DAY_MS: i64 = 86_400_000;

/// Position in the trace topic: `broker_name/queue_id` → next offset to read.
pub type Positions = BTreeMap<String, u64>;

/// The key of a trace-topic queue in [`Positions`].
pub fn queue_key(broker_name: &str, queue_id: u32) -> String {
    format!("{broker_name}/{queue_id}")
}

/// The day (days since the Unix epoch, UTC) of a timestamp in ms.
pub fn day_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(DAY_MS)
}

/// `YYYY-MM-DD` of a day.
pub fn day_name(day: i64) -> String {
    meridian_proto::time::format_millis(day * DAY_MS)[..10].to_owned()
}

/// The day named `YYYY-MM-DD`, if it is one.
pub fn parse_day(name: &str) -> Option<i64> {
    // A name is a day only if formatting that day gives it back exactly.
    let bytes = name.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = name[0..4].parse().ok()?;
    let month: i64 = name[5..7].parse().ok()?;
    let day: i64 = name[8..10].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (day_name(days) == name).then_some(days)
}

#[derive(Clone, Copy)]
struct Fields {
    event_id: Field,
    msg_id: Field,
    keys: Field,
    topic: Field,
    offset_id: Field,
    trace_type: Field,
    timestamp: Field,
    raw: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        event_id: builder.add_text_field("event_id", STRING),
        msg_id: builder.add_text_field("msg_id", STRING),
        keys: builder.add_text_field("keys", STRING),
        topic: builder.add_text_field("topic", STRING),
        offset_id: builder.add_text_field("offset_id", STRING),
        trace_type: builder.add_text_field("trace_type", STRING),
        timestamp: builder.add_i64_field("timestamp", INDEXED),
        raw: builder.add_bytes_field("raw", STORED),
    };
    (builder.build(), fields)
}

/// One day's index.
struct Partition {
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    /// Positions of its last commit.
    committed: Mutex<Positions>,
    /// Documents added since its last commit.
    dirty: Mutex<usize>,
}

/// What a lookup may narrow to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events of this topic.
    pub topic: Option<String>,
    /// Only events at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Only events before this time (Unix ms).
    pub to_ms: Option<i64>,
}

/// The day-partitioned trace index.
pub struct TraceIndex {
    dir: PathBuf,
    fields: Fields,
    schema: Schema,
    writer_heap_bytes: usize,
    partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    /// Event ids indexed recently, two generations (the older is dropped when the newer fills).
    recent_ids: Mutex<(HashSet<u128>, HashSet<u128>)>,
    recent_ids_per_generation: usize,
    /// Whether documents also get an `event_id` term (what every document had before; kept for
    /// `benches/index.rs` to measure against). No lookup reads it.
    event_id_terms: bool,
}

/// What [`TraceIndex::add`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Indexed.
    Indexed,
    /// Already committed in its partition before a restart: skipped.
    Replayed,
    /// Its event id was indexed moments ago: skipped.
    Duplicate,
    /// Older than the retention: skipped (its partition was dropped).
    Expired,
}

fn event_id_bits(event_id: &str) -> u128 {
    meridian_proto::MessageId::parse(event_id).map_or(0, |id| u128::from_be_bytes(id.0))
}

impl TraceIndex {
    /// Opens (creating) the partitions under `dir`.
    pub fn open(dir: &Path, writer_heap_bytes: usize) -> Result<TraceIndex> {
        std::fs::create_dir_all(dir).map_err(TracerError::io(format!("creating {}", dir.display())))?;
        let (schema, fields) = schema();
        let index = TraceIndex {
            dir: dir.to_owned(),
            fields,
            schema,
            writer_heap_bytes,
            partitions: RwLock::new(BTreeMap::new()),
            recent_ids: Mutex::new((HashSet::new(), HashSet::new())),
            recent_ids_per_generation: 1 << 20,
            event_id_terms: false,
        };
        let entries = std::fs::read_dir(dir).map_err(TracerError::io(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(TracerError::io(format!("listing {}", dir.display())))?;
            if let Some(day) = entry.file_name().to_str().and_then(parse_day) {
                index.partition(day)?;
            }
        }
        Ok(index)
    }

    /// Gives every document an `event_id` term again, as before they were left out: for
    /// `benches/index.rs`, which measures the saving in the same run.
    #[doc(hidden)]
    pub fn with_event_id_terms(mut self) -> TraceIndex {
        self.event_id_terms = true;
        self
    }

    fn partition(&self, day: i64) -> Result<Arc<Partition>> {
        if let Some(found) = self.partitions.read().expect("partitions lock").get(&day) {
            return Ok(found.clone());
        }
        let mut partitions = self.partitions.write().expect("partitions lock");
        if let Some(found) = partitions.get(&day) {
            return Ok(found.clone());
        }
        let path = self.dir.join(day_name(day));
        std::fs::create_dir_all(&path).map_err(TracerError::io(format!("creating {}", path.display())))?;
        let directory = tantivy::directory::MmapDirectory::open(&path)
            .map_err(|error| TracerError::Index(format!("opening {}: {error}", path.display())))?;
        let index = Index::open_or_create(directory, self.schema.clone())?;
        let committed: Positions = index
            .load_metas()?
            .payload
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|error| TracerError::Index(format!("payload of {}: {error}", path.display())))?
            .unwrap_or_default();
        // Reloaded by hand after each commit: a lookup sees an event as soon as its commit returns.
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let partition = Arc::new(Partition {
            index,
            reader,
            writer: Mutex::new(None),
            committed: Mutex::new(committed),
            dirty: Mutex::new(0),
        });
        partitions.insert(day, partition.clone());
        Ok(partition)
    }

    /// The days held, oldest first.
    pub fn days(&self) -> Vec<i64> {
        self.partitions
            .read()
            .expect("partitions lock")
            .keys()
            .copied()
            .collect()
    }

    /// The lowest committed position per queue over every partition that has one: where reading
    /// may resume without losing an event (replayed ones are skipped by [`TraceIndex::add`]).
    pub fn committed_positions(&self) -> Positions {
        let mut lowest = Positions::new();
        for partition in self.partitions.read().expect("partitions lock").values() {
            for (queue, offset) in partition.committed.lock().expect("committed lock").iter() {
                let entry = lowest.entry(queue.clone()).or_insert(*offset);
                *entry = (*entry).min(*offset);
            }
        }
        lowest
    }

    /// Adds one event read from `queue` at `offset` (the trace-topic message holding it), unless
    /// its partition already committed it, it was indexed moments ago, or it is older than
    /// `oldest_day`.
    pub fn add(&self, event: &TraceEvent, queue: &str, offset: u64, oldest_day: i64) -> Result<Added> {
        let day = day_of(event.timestamp);
        if day < oldest_day {
            return Ok(Added::Expired);
        }
        let partition = self.partition(day)?;
        if partition
            .committed
            .lock()
            .expect("committed lock")
            .get(queue)
            .is_some_and(|committed| offset < *committed)
        {
            return Ok(Added::Replayed);
        }
        let id = event_id_bits(&event.event_id);
        {
            let mut recent = self.recent_ids.lock().expect("recent ids lock");
            if recent.0.contains(&id) || recent.1.contains(&id) {
                return Ok(Added::Duplicate);
            }
            if recent.0.len() >= self.recent_ids_per_generation {
                recent.1 = std::mem::take(&mut recent.0);
            }
            recent.0.insert(id);
        }
        let fields = self.fields;
        let mut document = TantivyDocument::default();
        if self.event_id_terms {
            document.add_text(fields.event_id, &event.event_id);
        }
        document.add_text(fields.msg_id, &event.msg_id);
        for key in &event.keys {
            document.add_text(fields.keys, key);
        }
        document.add_text(fields.topic, &event.topic);
        if let Some(offset_id) = event.offset_id() {
            document.add_text(fields.offset_id, offset_id.to_string());
        }
        document.add_text(fields.trace_type, event.kind().name());
        document.add_i64(fields.timestamp, event.timestamp);
        document.add_bytes(fields.raw, &event.encode_to_vec());
        let mut writer = partition.writer.lock().expect("writer lock");
        if writer.is_none() {
            // One indexing thread and one merge thread (tantivy's default is four): merges of a
            // day's segments wait their turn rather than taking every core from a broker that
            // shares them. Created on the indexing thread, they inherit its priority (`worker.rs`).
            let options = tantivy::indexer::IndexWriterOptions::builder()
                .memory_budget_per_thread(self.writer_heap_bytes)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            *writer = Some(partition.index.writer_with_options(options)?);
        }
        writer
            .as_mut()
            .expect("writer was just opened")
            .add_document(document)?;
        *partition.dirty.lock().expect("dirty lock") += 1;
        Ok(Added::Indexed)
    }

    /// Commits every partition with added documents, recording `positions` with each, and makes
    /// them searchable. Writers of partitions that had nothing to commit are closed (their memory
    /// freed): only the day being written keeps one.
    pub fn commit(&self, positions: &Positions) -> Result<usize> {
        let partitions: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect();
        let payload = serde_json::to_string(positions).expect("positions serialize");
        let mut committed_docs = 0;
        for partition in partitions {
            let mut dirty = partition.dirty.lock().expect("dirty lock");
            let mut writer = partition.writer.lock().expect("writer lock");
            if *dirty == 0 {
                // Idle since its last commit: close its writer (waits for its merges).
                if let Some(idle) = writer.take() {
                    idle.wait_merging_threads()?;
                }
                continue;
            }
            let open = writer.as_mut().expect("a dirty partition has a writer");
            let mut prepared = open.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            committed_docs += *dirty;
            *dirty = 0;
            *partition.committed.lock().expect("committed lock") = positions.clone();
            partition.reader.reload()?;
        }
        Ok(committed_docs)
    }

    /// Deletes the partitions of days before `oldest_day`; returns the days deleted.
    pub fn drop_before(&self, oldest_day: i64) -> Result<Vec<i64>> {
        let expired: Vec<(i64, Arc<Partition>)> = {
            let mut partitions = self.partitions.write().expect("partitions lock");
            let keep = partitions.split_off(&oldest_day);
            let expired = std::mem::replace(&mut *partitions, keep);
            expired.into_iter().collect()
        };
        let mut dropped = Vec::new();
        for (day, partition) in expired {
            if let Some(writer) = partition.writer.lock().expect("writer lock").take() {
                writer.wait_merging_threads()?;
            }
            drop(partition);
            let path = self.dir.join(day_name(day));
            std::fs::remove_dir_all(&path).map_err(TracerError::io(format!("deleting {}", path.display())))?;
            dropped.push(day);
        }
        Ok(dropped)
    }

    fn search(&self, query: &dyn Query, filter: &Filter) -> Result<Vec<TraceEvent>> {
        let partitions: Vec<Arc<Partition>> = {
            let partitions = self.partitions.read().expect("partitions lock");
            let from_day = filter.from_ms.map_or(i64::MIN, day_of);
            let to_day = filter.to_ms.map_or(i64::MAX, |to| day_of(to.saturating_sub(1)));
            if from_day > to_day {
                return Ok(Vec::new());
            }
            partitions
                .range(from_day..=to_day)
                .map(|(_, partition)| partition.clone())
                .collect()
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, query.box_clone())];
        if let Some(topic) = &filter.topic {
            clauses.push((Occur::Must, Box::new(self.term_query(self.fields.topic, topic))));
        }
        if filter.from_ms.is_some() || filter.to_ms.is_some() {
            let lower = filter.from_ms.map_or(Bound::Unbounded, |from| {
                Bound::Included(Term::from_field_i64(self.fields.timestamp, from))
            });
            let upper = filter.to_ms.map_or(Bound::Unbounded, |to| {
                Bound::Excluded(Term::from_field_i64(self.fields.timestamp, to))
            });
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        let query = BooleanQuery::new(clauses);
        let mut events = Vec::new();
        for partition in partitions {
            let searcher = partition.reader.searcher();
            let found = searcher.search(&query, &DocSetCollector)?;
            for address in found {
                let document: TantivyDocument = searcher.doc(address)?;
                let raw = document
                    .get_first(self.fields.raw)
                    .and_then(|value| value.as_bytes())
                    .ok_or_else(|| TracerError::Index("a trace document has no stored event".into()))?;
                let event = TraceEvent::decode(raw)
                    .map_err(|error| TracerError::Index(format!("a stored trace event does not decode: {error}")))?;
                events.push(event);
            }
        }
        Ok(events)
    }

    fn term_query(&self, field: Field, text: &str) -> TermQuery {
        TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic)
    }

    /// Every event of message `msg_id`, in timeline order.
    pub fn by_msg_id(&self, msg_id: &str, filter: &Filter) -> Result<Vec<TraceEvent>> {
        let mut events = self.search(&self.term_query(self.fields.msg_id, msg_id), filter)?;
        sort_timeline(&mut events);
        Ok(events)
    }

    /// The msgIds stored at `offset_id` (one, unless the offset was reused after a truncation).
    pub fn msg_ids_by_offset_id(&self, offset_id: &OffsetId) -> Result<Vec<String>> {
        let events = self.search(
            &self.term_query(self.fields.offset_id, &offset_id.to_string()),
            &Filter::default(),
        )?;
        let mut ids: Vec<String> = events.into_iter().map(|event| event.msg_id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The msgIds of messages with key `key`, each with the time of its earliest event, earliest
    /// first: every match, no cap (the caller pages).
    pub fn msg_ids_by_key(&self, key: &str, filter: &Filter) -> Result<Vec<(String, i64)>> {
        let events = self.search(&self.term_query(self.fields.keys, key), filter)?;
        let mut first: HashMap<String, i64> = HashMap::new();
        for event in events {
            let entry = first.entry(event.msg_id).or_insert(event.timestamp);
            *entry = (*entry).min(event.timestamp);
        }
        let mut ids: Vec<(String, i64)> = first.into_iter().collect();
        ids.sort_by(|left, right| left.1.cmp(&right.1).then_with(|| left.0.cmp(&right.0)));
        Ok(ids)
    }

    /// Documents held, over every partition (as of the last commit).
    pub fn num_docs(&self) -> u64 {
        self.partitions
            .read()
            .expect("partitions lock")
            .values()
            .map(|partition| partition.reader.searcher().num_docs())
            .sum()
    }
}

/// Orders a timeline: by time, then by the step's place in a message's life (a Pub and its Store
/// can share a millisecond), then by event id.
pub fn sort_timeline(events: &mut [TraceEvent]) {
    events.sort_by(|left, right| {
        left.timestamp
            .cmp(&right.timestamp)
            .then_with(|| left.kind().life_order().cmp(&right.kind().life_order()))
            .then_with(|| left.event_id.cmp(&right.event_id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::MessageId;
    use meridian_proto::trace::TraceType;

    pub(crate) fn event(kind: TraceType, msg_id: &str, timestamp: i64, keys: &[&str]) -> TraceEvent {
        TraceEvent {
            event_id: MessageId::generate().to_string(),
            trace_type: kind as i32,
            timestamp,
            msg_id: msg_id.to_owned(),
            topic: "orders".into(),
            keys: keys.iter().map(|key| (*key).to_owned()).collect(),
            broker_name: "broker-a".into(),
            commitlog_offset: 500,
            ..TraceEvent::default()
        }
    }

    #[test]
    fn day_names_round_trip() {
        for day in [0, 1, 19_000, 20_417, 30_000] {
            assert_eq!(parse_day(&day_name(day)), Some(day));
        }
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("tmp"), None);
    }

    #[test]
    fn replays_after_a_restart_are_skipped_and_uncommitted_events_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let msg = MessageId::generate().to_string();
        let day = 20_417 * DAY_MS;
        let first = event(TraceType::Pub, &msg, day + 10, &["order-1"]);
        let second = event(TraceType::Store, &msg, day + 11, &["order-1"]);
        let third = event(TraceType::Deliver, &msg, day + 2 * DAY_MS, &["order-1"]);
        {
            let index = TraceIndex::open(dir.path(), 15_000_000).unwrap();
            assert_eq!(index.add(&first, "broker-a/0", 0, 0).unwrap(), Added::Indexed);
            assert_eq!(index.add(&second, "broker-a/0", 1, 0).unwrap(), Added::Indexed);
            assert_eq!(index.add(&second, "broker-a/0", 1, 0).unwrap(), Added::Duplicate);
            index.commit(&Positions::from([("broker-a/0".to_owned(), 2)])).unwrap();
            // Added but never committed: lost with the process.
            assert_eq!(index.add(&third, "broker-a/0", 2, 0).unwrap(), Added::Indexed);
        }
        let index = TraceIndex::open(dir.path(), 15_000_000).unwrap();
        assert_eq!(
            index.committed_positions(),
            Positions::from([("broker-a/0".to_owned(), 2)])
        );
        // Replay from the beginning: the committed ones are skipped, the lost one comes back.
        assert_eq!(index.add(&first, "broker-a/0", 0, 0).unwrap(), Added::Replayed);
        assert_eq!(index.add(&second, "broker-a/0", 1, 0).unwrap(), Added::Replayed);
        assert_eq!(index.add(&third, "broker-a/0", 2, 0).unwrap(), Added::Indexed);
        index.commit(&Positions::from([("broker-a/0".to_owned(), 3)])).unwrap();
        let timeline = index.by_msg_id(&msg, &Filter::default()).unwrap();
        assert_eq!(
            timeline.iter().map(TraceEvent::kind).collect::<Vec<_>>(),
            [TraceType::Pub, TraceType::Store, TraceType::Deliver]
        );
        assert_eq!(index.days(), [20_417, 20_419]);
        assert_eq!(
            index.msg_ids_by_key("order-1", &Filter::default()).unwrap(),
            [(msg.clone(), day + 10)]
        );
        let only_later = Filter {
            from_ms: Some(day + DAY_MS),
            ..Filter::default()
        };
        assert_eq!(index.by_msg_id(&msg, &only_later).unwrap().len(), 1);
        let offset_id = OffsetId {
            broker_name: "broker-a".into(),
            commitlog_offset: 500,
        };
        assert_eq!(
            index.msg_ids_by_offset_id(&offset_id).unwrap(),
            std::slice::from_ref(&msg)
        );

        // Retention drops whole days, and late events for a dropped day are not indexed.
        assert_eq!(index.drop_before(20_418).unwrap(), [20_417]);
        assert!(!dir.path().join(day_name(20_417)).exists());
        assert_eq!(index.by_msg_id(&msg, &Filter::default()).unwrap().len(), 1);
        let late = event(TraceType::SubAfter, &msg, day + 20, &[]);
        assert_eq!(index.add(&late, "broker-a/0", 3, 20_418).unwrap(), Added::Expired);
    }
}
