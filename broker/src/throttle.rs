//! Per-topic produce limits, enforced by each master on its share of the topic.
//!
//! A topic's limit (`meridian topic limit`, messages/s and bytes/s) is for the whole topic; the
//! nameservers send it to every broker group in its [`TopicGrant`] with the topic's total queue
//! count, and each master enforces `its queues / all queues` of it, so producers spread over the
//! queues (as Meridian's SDK and RocketMQ's round-robin do) get the whole limit together.
//!
//! [`TopicThrottle`] is a token bucket per dimension in the style of Kafka's KIP-599: tokens refill
//! at the rate up to a burst of [`BURST`] worth of the rate; a send is admitted while the bucket is
//! not in debt and takes its whole cost (so one large batch can overdraw it), and a send that finds
//! it in debt is refused with the time the debt takes to pay off. Both buckets of a topic sit
//! behind one short `std::sync::Mutex` (no `.await` inside, a few float operations), and admitting
//! allocates nothing. [`Throttles`] is the table [`crate::registry::Approved`] holds; start reading
//! at [`TopicThrottle::admit`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_proto::messages::TopicGrant;

/// How much above its rate a quiet topic may send at once: this long's worth of the rate.
pub const BURST: Duration = Duration::from_millis(200);

/// A topic's limit as the nameservers gave it, and this master's share of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// The topic's limit in messages per second; 0: none.
    pub messages_per_sec: u32,
    /// The topic's limit in bytes per second; 0: none.
    pub bytes_per_sec: u64,
    /// Queues of the topic on this broker group.
    pub queues: u32,
    /// Queues of the topic on all broker groups.
    pub topic_queues: u32,
}

impl Limit {
    /// The limit of a grant; `None` when it limits nothing.
    pub fn of(grant: &TopicGrant) -> Option<Limit> {
        (grant.produce_limit > 0 || grant.produce_limit_bytes > 0).then(|| Limit {
            messages_per_sec: grant.produce_limit,
            bytes_per_sec: grant.produce_limit_bytes,
            queues: grant.queues,
            // An older nameserver sends no total: enforce the whole limit here.
            topic_queues: if grant.topic_queues == 0 {
                grant.queues
            } else {
                grant.topic_queues.max(grant.queues)
            },
        })
    }

    /// The fraction of the topic's limit this master enforces.
    pub fn share(&self) -> f64 {
        if self.topic_queues == 0 {
            return 1.0;
        }
        f64::from(self.queues) / f64::from(self.topic_queues)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = self.share();
        let mut parts = Vec::with_capacity(2);
        if self.messages_per_sec > 0 {
            parts.push(format!(
                "{} msg/s ({:.1} msg/s here)",
                self.messages_per_sec,
                f64::from(self.messages_per_sec) * share
            ));
        }
        if self.bytes_per_sec > 0 {
            parts.push(format!(
                "{} bytes/s ({:.0} bytes/s here)",
                self.bytes_per_sec,
                self.bytes_per_sec as f64 * share
            ));
        }
        write!(
            formatter,
            "{}, this broker group's share by its {} of the topic's {} queues",
            parts.join(" and "),
            self.queues,
            self.topic_queues
        )
    }
}

/// One dimension's bucket: tokens may go negative (a debt a large send left).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens per second; 0: this dimension is not limited.
    rate: f64,
    /// Most tokens the bucket holds.
    burst: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        let burst = rate * BURST.as_secs_f64();
        Bucket {
            rate,
            burst,
            tokens: burst,
        }
    }

    fn refill(&mut self, elapsed: f64) {
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// How long until the bucket is out of debt; zero when it is not in debt (or not limited).
    fn debt(&self) -> Duration {
        if self.rate <= 0.0 || self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.rate)
    }
}

#[derive(Debug)]
struct Buckets {
    messages: Bucket,
    bytes: Bucket,
    last: Instant,
}

/// The token buckets of one topic on this master.
#[derive(Debug)]
pub struct TopicThrottle {
    limit: Limit,
    buckets: Mutex<Buckets>,
}

impl TopicThrottle {
    /// Full buckets for `limit`, as of `now`.
    pub fn new(limit: Limit, now: Instant) -> TopicThrottle {
        let share = limit.share();
        TopicThrottle {
            limit,
            buckets: Mutex::new(Buckets {
                messages: Bucket::new(f64::from(limit.messages_per_sec) * share),
                bytes: Bucket::new(limit.bytes_per_sec as f64 * share),
                last: now,
            }),
        }
    }

    /// The limit enforced.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Admits a send of `messages` messages and `bytes` bytes at `now`, or says how long to wait
    /// before sending again (at least 1 ms).
    pub fn admit(&self, messages: u32, bytes: u64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // `saturating_duration_since`: sends race to the lock, so `now` may be a little older.
        let elapsed = now.saturating_duration_since(buckets.last).as_secs_f64();
        buckets.last = buckets.last.max(now);
        buckets.messages.refill(elapsed);
        buckets.bytes.refill(elapsed);
        let wait = buckets.messages.debt().max(buckets.bytes.debt());
        if !wait.is_zero() {
            return Err(wait.max(Duration::from_millis(1)));
        }
        if buckets.messages.rate > 0.0 {
            buckets.messages.tokens -= f64::from(messages);
        }
        if buckets.bytes.rate > 0.0 {
            buckets.bytes.tokens -= bytes as f64;
        }
        Ok(())
    }
}

/// The throttles of every limited topic on this broker group, by topic name.
#[derive(Debug, Default)]
pub struct Throttles {
    topics: HashMap<String, Arc<TopicThrottle>>,
}

impl Throttles {
    /// Full buckets for every limited topic among `grants`.
    pub fn from_grants<'a>(grants: impl IntoIterator<Item = &'a TopicGrant>, now: Instant) -> Throttles {
        Throttles {
            topics: grants
                .into_iter()
                .filter_map(|grant| {
                    let limit = Limit::of(grant)?;
                    Some((grant.name.clone(), Arc::new(TopicThrottle::new(limit, now))))
                })
                .collect(),
        }
    }

    /// Keeps the buckets of `previous` whose limit did not change, so new metadata (any approval
    /// anywhere in the cluster bumps its version) does not hand every topic a fresh burst.
    pub fn carry_over(&mut self, previous: &Throttles) {
        for (topic, throttle) in &mut self.topics {
            if let Some(kept) = previous.topics.get(topic)
                && kept.limit == throttle.limit
            {
                *throttle = kept.clone();
            }
        }
    }

    /// The throttle of `topic`, when it has a limit.
    pub fn get(&self, topic: &str) -> Option<&TopicThrottle> {
        self.topics.get(topic).map(Arc::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(messages: u32, bytes: u64, queues: u32, topic_queues: u32) -> TopicGrant {
        TopicGrant {
            name: "orders".into(),
            queues,
            perm: 3,
            produce_limit: messages,
            topic_queues,
            produce_limit_bytes: bytes,
        }
    }

    /// Sends one message whenever the bucket admits it, over `seconds` of an injected clock with
    /// 1 ms steps; returns how many were admitted.
    fn admitted_over(throttle: &TopicThrottle, start: Instant, seconds: u64, bytes: u64) -> u64 {
        let mut admitted = 0;
        for step in 0..seconds * 1000 {
            let now = start + Duration::from_millis(step);
            while throttle.admit(1, bytes, now).is_ok() {
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn the_rate_holds_over_time_with_one_burst_on_top() {
        let start = Instant::now();
        let throttle = TopicThrottle::new(Limit::of(&grant(100, 0, 4, 4)).unwrap(), start);
        let admitted = admitted_over(&throttle, start, 10, 1);
        // 100/s for 10 s, plus the 200 ms burst it started with (20), plus the one admitted into debt.
        assert!((1000..=1022).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn a_master_enforces_its_share_by_queue_count() {
        let start = Instant::now();
        let limit = Limit::of(&grant(300, 0, 1, 3)).unwrap();
        assert!((limit.share() - 1.0 / 3.0).abs() < 1e-9);
        let throttle = TopicThrottle::new(limit, start);
        let admitted = admitted_over(&throttle, start, 10, 1);
        assert!((1000..=1022).contains(&admitted), "admitted {admitted}");
        // An older nameserver without the total: the whole limit here.
        assert_eq!(Limit::of(&grant(300, 0, 2, 0)).unwrap().share(), 1.0);
        assert_eq!(Limit::of(&grant(0, 0, 2, 4)), None);
    }

    #[test]
    fn a_refused_send_is_told_how_long_the_debt_takes_to_pay() {
        let start = Instant::now();
        let throttle = TopicThrottle::new(Limit::of(&grant(10, 0, 1, 1)).unwrap(), start);
        // The burst is 2 messages; a batch of 12 is admitted into 10 messages of debt: one second.
        throttle.admit(12, 0, start).unwrap();
        let wait = throttle.admit(1, 0, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        let wait = throttle.admit(1, 0, start + Duration::from_millis(600)).unwrap_err();
        assert!((399..=400).contains(&wait.as_millis()), "{wait:?}");
        assert!(throttle.admit(1, 0, start + Duration::from_secs(1)).is_ok());
        // The clock never runs backwards for the bucket, and the wait is never zero.
        assert!(throttle.admit(1, 0, start).unwrap_err() >= Duration::from_millis(1));
    }

    #[test]
    fn bytes_are_limited_on_their_own() {
        let start = Instant::now();
        let throttle = TopicThrottle::new(Limit::of(&grant(0, 10_000, 2, 2)).unwrap(), start);
        // 1000-byte messages at 10 000 bytes/s: 10 per second.
        let admitted = admitted_over(&throttle, start, 5, 1000);
        assert!((50..=53).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn unchanged_limits_keep_their_buckets_across_metadata() {
        let start = Instant::now();
        let first = Throttles::from_grants(&[grant(10, 0, 1, 1)], start);
        first.get("orders").unwrap().admit(5, 0, start).unwrap();
        let mut same = Throttles::from_grants(&[grant(10, 0, 1, 1)], start);
        same.carry_over(&first);
        assert!(same.get("orders").unwrap().admit(1, 0, start).is_err(), "kept the debt");
        let mut raised = Throttles::from_grants(&[grant(20, 0, 1, 1)], start);
        raised.carry_over(&first);
        assert!(
            raised.get("orders").unwrap().admit(1, 0, start).is_ok(),
            "a new limit starts full"
        );
        assert!(raised.get("payments").is_none());
    }
}
