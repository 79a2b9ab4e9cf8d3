//! Abuse limits of the public customer side: token buckets per IP (visitor
//! creation, socket connections) and per visitor (messages), a cap on open
//! sockets per visitor, and the settings of the socket's abuse and idle
//! rules. Everything is in memory, per instance: with N instances behind a
//! load balancer a client gets up to N times each rate.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use uuid::Uuid;

/// A token bucket's shape: `burst` tokens, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

/// Every limit, with the defaults documented in docs/configuration.md.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `POST /api/visitors` per client IP.
    pub visitors_per_ip: Rate,
    /// Socket upgrades (`GET /api/chat/ws`) per client IP.
    pub sockets_per_ip: Rate,
    /// Customer `message` frames per visitor (all of its sockets together).
    pub messages_per_visitor: Rate,
    /// Open sockets per visitor; the next one is closed with 1008.
    pub sockets_per_visitor: usize,
    /// This many error frames within a minute close the socket with 1008.
    pub abuse_errors_per_minute: usize,
    /// The server pings every socket this often...
    pub ping_interval: Duration,
    /// ...and closes one it has heard nothing from (frame or pong) this long.
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            visitors_per_ip: Rate {
                burst: 60,
                per_minute: 30,
            },
            sockets_per_ip: Rate {
                burst: 120,
                per_minute: 120,
            },
            messages_per_visitor: Rate {
                burst: 20,
                per_minute: 30,
            },
            sockets_per_visitor: 10,
            abuse_errors_per_minute: 20,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys beyond this many are pruned of full (idle) buckets.
const MAX_KEYS: usize = 10_000;

/// Token buckets by key.
pub struct Buckets<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash> Buckets<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(f64::from(self.rate.burst));
        bucket.at = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst);
        let mut buckets = self.buckets.lock().expect("buckets lock");
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| {
                let mut b2 = *b;
                self.refill(&mut b2, now);
                b2.tokens < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        let wait = if per_sec > 0.0 {
            (1.0 - bucket.tokens) / per_sec
        } else {
            3600.0
        };
        Err(Duration::from_secs_f64(wait))
    }
}

/// Whole seconds for `Retry-After`, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The limiters of one instance.
pub struct Limits {
    pub config: LimitsConfig,
    pub visitors: Buckets<IpAddr>,
    pub sockets: Buckets<IpAddr>,
    pub messages: Buckets<Uuid>,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open socket of a visitor, counted until dropped.
pub struct SocketSlot {
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
    visitor: Uuid,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open sockets lock");
        if let Some(n) = open.get_mut(&self.visitor) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.visitor);
            }
        }
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            visitors: Buckets::new(config.visitors_per_ip),
            sockets: Buckets::new(config.sockets_per_ip),
            messages: Buckets::new(config.messages_per_visitor),
            open: Arc::default(),
            config,
        }
    }

    /// A slot for one more socket of `visitor`, unless it has the maximum.
    pub fn open_socket(&self, visitor: Uuid) -> Option<SocketSlot> {
        let mut open = self.open.lock().expect("open sockets lock");
        let n = open.entry(visitor).or_insert(0);
        if *n >= self.config.sockets_per_visitor {
            return None;
        }
        *n += 1;
        Some(SocketSlot {
            open: self.open.clone(),
            visitor,
        })
    }
}

/// Counts error frames in a sliding minute; says when there were too many.
pub struct AbuseCounter {
    limit: usize,
    recent: std::collections::VecDeque<Instant>,
}

impl AbuseCounter {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            recent: Default::default(),
        }
    }

    /// Records one error; true when the socket should be closed.
    pub fn record(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let b = Buckets::new(Rate {
            burst: 3,
            per_minute: 60,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take("ip", t0).is_ok());
        }
        let wait = b.take("ip", t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        assert!(b.take("other", t0).is_ok(), "keys are independent");
        assert!(b.take("ip", t0 + Duration::from_millis(1001)).is_ok());
        assert!(b.take("ip", t0 + Duration::from_millis(1002)).is_err());
    }

    #[test]
    fn sockets_per_visitor_are_capped_and_freed_on_drop() {
        let limits = Limits::new(LimitsConfig {
            sockets_per_visitor: 2,
            ..LimitsConfig::default()
        });
        let v = Uuid::new_v4();
        let a = limits.open_socket(v).unwrap();
        let _b = limits.open_socket(v).unwrap();
        assert!(limits.open_socket(v).is_none());
        assert!(limits.open_socket(Uuid::new_v4()).is_some());
        drop(a);
        assert!(limits.open_socket(v).is_some());
    }

    #[test]
    fn abuse_is_counted_in_a_sliding_minute() {
        let mut c = AbuseCounter::new(3);
        let t0 = Instant::now();
        assert!(!c.record(t0));
        assert!(!c.record(t0));
        assert!(
            !c.record(t0 + Duration::from_secs(61)),
            "the first two expired"
        );
        assert!(!c.record(t0 + Duration::from_secs(62)));
        assert!(c.record(t0 + Duration::from_secs(62)));
    }
}
