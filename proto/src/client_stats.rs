//! Client-side latency and message-size figures that Meridian's SDK reports to the brokers
//! ([`crate::messages::ProducerHeartbeat`]), and the percentiles the brokers answer with.
//!
//! [`LatencyHistogram`] and [`SizeHistogram`] are fixed arrays of atomic counters with
//! power-of-two buckets: recording is one `fetch_add`, with no allocation and no lock, so it can
//! sit on the send path. [`percentile`] reads a bucket array back. Reports carry cumulative counts
//! since the client started; a reader wanting a window subtracts two reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;

/// Buckets of every histogram: bucket `i` counts values whose bit length is `i` (bucket 0 holds
/// 0, bucket `i` values in `[2^(i-1), 2^i)`), and the last bucket everything larger.
pub const BUCKETS: usize = 32;

/// The message size over which a producer is flagged by default, in bytes (10 KB).
pub const DEFAULT_LARGE_MESSAGE_BYTES: u64 = 10 * 1024;

fn bucket_of(value: u64) -> usize {
    (u64::BITS - value.leading_zeros()).min(BUCKETS as u32 - 1) as usize
}

/// The largest value bucket `index` holds (the last bucket: its lower bound).
pub fn bucket_upper_bound(index: usize) -> u64 {
    match index {
        0 => 0,
        index if index >= BUCKETS - 1 => 1 << (BUCKETS - 2),
        index => (1u64 << index) - 1,
    }
}

/// The value below which `quantile` (0 to 1) of the recorded values fall, as the upper bound of
/// its bucket (so at most twice the true value); `None` when nothing was recorded.
pub fn percentile(buckets: &[u64], quantile: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_upper_bound(index));
        }
    }
    Some(bucket_upper_bound(buckets.len().saturating_sub(1)))
}

/// Latencies in microseconds, in [`BUCKETS`] power-of-two buckets.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, bucket by bucket.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }
}

/// Message sizes in bytes, in [`BUCKETS`] power-of-two buckets, with the count and largest of
/// those over a threshold.
#[derive(Debug)]
pub struct SizeHistogram {
    buckets: [AtomicU64; BUCKETS],
    threshold: u64,
    over_threshold: AtomicU64,
    largest: AtomicU64,
}

impl SizeHistogram {
    /// Flags messages larger than `threshold` bytes.
    pub fn new(threshold: u64) -> SizeHistogram {
        SizeHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            threshold,
            over_threshold: AtomicU64::new(0),
            largest: AtomicU64::new(0),
        }
    }

    /// Counts one message of `bytes`.
    pub fn record(&self, bytes: u64) {
        self.buckets[bucket_of(bytes)].fetch_add(1, Ordering::Relaxed);
        if bytes > self.threshold {
            self.over_threshold.fetch_add(1, Ordering::Relaxed);
        }
        self.largest.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The counts so far, bucket by bucket.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|count| count.load(Ordering::Relaxed)).collect()
    }

    /// The threshold.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Messages over the threshold so far.
    pub fn over_threshold(&self) -> u64 {
        self.over_threshold.load(Ordering::Relaxed)
    }

    /// The largest message so far, in bytes.
    pub fn largest(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }
}

/// What a client reports of itself: cumulative counts since it started.
#[derive(Clone, PartialEq, Message)]
pub struct ClientStats {
    /// Send latency counts per [`LatencyHistogram`] bucket (µs), request to answer.
    #[prost(uint64, repeated, tag = "1")]
    pub send_latency_us: Vec<u64>,
    /// Consume latency counts per bucket (µs), the handler's time per message.
    #[prost(uint64, repeated, tag = "2")]
    pub consume_latency_us: Vec<u64>,
    /// Message size counts per [`SizeHistogram`] bucket (bytes).
    #[prost(uint64, repeated, tag = "3")]
    pub message_bytes: Vec<u64>,
    /// The size over which a message counts as large, in bytes.
    #[prost(uint64, tag = "4")]
    pub large_threshold_bytes: u64,
    /// Messages over that size.
    #[prost(uint64, tag = "5")]
    pub large_messages: u64,
    /// The largest message, in bytes.
    #[prost(uint64, tag = "6")]
    pub largest_message_bytes: u64,
}

impl ClientStats {
    /// Checks that no histogram has more than [`BUCKETS`] buckets; the error names the
    /// histogram, its count and the limit.
    pub fn validate_buckets(&self) -> Result<(), String> {
        for (name, buckets) in [
            ("send_latency_us", &self.send_latency_us),
            ("consume_latency_us", &self.consume_latency_us),
            ("message_bytes", &self.message_bytes),
        ] {
            if buckets.len() > BUCKETS {
                return Err(format!(
                    "{name} has {} buckets, at most {BUCKETS}: report the SDK's fixed histograms unchanged",
                    buckets.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_power_of_two_buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(1023), 10);
        assert_eq!(bucket_of(1024), 11);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for value in [0u64, 1, 5, 1000, 65_536, 1 << 29] {
            let bucket = bucket_of(value);
            assert!(value <= bucket_upper_bound(bucket), "{value}");
            assert!(bucket == 0 || value > bucket_upper_bound(bucket - 1), "{value}");
        }
    }

    #[test]
    fn percentiles_are_within_a_factor_of_two() {
        let histogram = LatencyHistogram::default();
        assert_eq!(percentile(&histogram.snapshot(), 0.5), None);
        // 98 sends of 1 ms, 2 of 100 ms.
        for _ in 0..98 {
            histogram.record(Duration::from_millis(1));
        }
        histogram.record(Duration::from_millis(100));
        histogram.record(Duration::from_millis(100));
        let counts = histogram.snapshot();
        let p50 = percentile(&counts, 0.5).unwrap();
        assert!((1_000..2_000).contains(&p50), "{p50}");
        let p98 = percentile(&counts, 0.98).unwrap();
        assert!((1_000..2_000).contains(&p98), "{p98}");
        let p99 = percentile(&counts, 0.99).unwrap();
        assert!((100_000..200_000).contains(&p99), "{p99}");
        assert_eq!(percentile(&counts, 1.0), Some(p99));
        assert_eq!(percentile(&[0, 0, 3], 0.0), Some(bucket_upper_bound(2)));
    }

    #[test]
    fn sizes_over_the_threshold_are_counted_with_the_largest() {
        let sizes = SizeHistogram::new(DEFAULT_LARGE_MESSAGE_BYTES);
        sizes.record(100);
        sizes.record(10 * 1024);
        sizes.record(20 * 1024);
        sizes.record(30 * 1024);
        assert_eq!(sizes.over_threshold(), 2, "exactly the threshold is not over it");
        assert_eq!(sizes.largest(), 30 * 1024);
        assert_eq!(sizes.snapshot().iter().sum::<u64>(), 4);
        let p50 = percentile(&sizes.snapshot(), 0.5).unwrap();
        assert!((10 * 1024..20 * 1024).contains(&p50), "{p50}");
    }

    #[test]
    fn stats_round_trip_and_old_readers_ignore_them() {
        let stats = ClientStats {
            send_latency_us: vec![0, 3, 1],
            large_messages: 2,
            largest_message_bytes: 20_480,
            large_threshold_bytes: 10_240,
            ..ClientStats::default()
        };
        let bytes = stats.encode_to_vec();
        assert_eq!(ClientStats::decode(bytes.as_slice()).unwrap(), stats);
    }
}
