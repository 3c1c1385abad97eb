//! Token-bucket rate limiting, as pure logic fed with `(key, now)`.
//!
//! The limiter owns one bucket per key (a request source, a recipient) and nothing else;
//! it never reads a clock. Memory is bounded: at most `max_keys` buckets are tracked, and
//! when that many are live the ones that have refilled completely (indistinguishable from
//! a fresh key) are forgotten first, then the least recently used.

use alloc::collections::BTreeMap;
use core::fmt;

use crate::types::Timestamp;

/// Token bucket parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Burst size: tokens in a full bucket.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: u32,
    /// Most keys tracked at once (memory bound, about 48 bytes per key).
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    /// 200 requests of burst, 100 per second sustained, 100,000 keys.
    fn default() -> Self {
        Self {
            burst: 200,
            per_second: 100,
            max_keys: 100_000,
        }
    }
}

/// Refused: try again after `retry_after_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// When one token will be available, in ms from now.
    pub retry_after_ms: u64,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited; retry after {} ms", self.retry_after_ms)
    }
}

/// Tokens are counted in thousandths so refill needs no floating point.
const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    updated: Timestamp,
}

/// Token buckets keyed by `K`.
#[derive(Clone, Debug)]
pub struct RateLimiter<K> {
    config: RateLimitConfig,
    buckets: BTreeMap<K, Bucket>,
}

impl<K: Ord + Copy> RateLimiter<K> {
    /// A limiter with no keys tracked.
    #[must_use]
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: BTreeMap::new(),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.config.burst) * MILLI
    }

    fn refilled(&self, b: Bucket, now: Timestamp) -> u64 {
        // per_second tokens per 1000 ms = per_second milli-tokens per ms.
        let gained = now
            .millis_since(b.updated)
            .saturating_mul(u64::from(self.config.per_second));
        b.milli_tokens.saturating_add(gained).min(self.full())
    }

    /// Takes one token for `key` at `now`, or says when one will be available.
    pub fn check(&mut self, key: K, now: Timestamp) -> Result<(), RateLimited> {
        if self.config.per_second == 0 && self.config.burst == 0 {
            return Err(RateLimited {
                retry_after_ms: u64::MAX,
            });
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.config.max_keys {
            self.make_room(now);
        }
        let full = self.full();
        let current = match self.buckets.get(&key) {
            Some(b) => self.refilled(*b, now),
            None => full,
        };
        if current < MILLI {
            let per_ms = u64::from(self.config.per_second).max(1);
            let retry_after_ms = (MILLI - current).div_ceil(per_ms);
            self.buckets.insert(
                key,
                Bucket {
                    milli_tokens: current,
                    updated: now,
                },
            );
            return Err(RateLimited { retry_after_ms });
        }
        self.buckets.insert(
            key,
            Bucket {
                milli_tokens: current - MILLI,
                updated: now,
            },
        );
        Ok(())
    }

    /// Number of keys tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn make_room(&mut self, now: Timestamp) {
        let full = self.full();
        let config = self.config.clone();
        let refilled = |b: &Bucket| {
            let gained = now
                .millis_since(b.updated)
                .saturating_mul(u64::from(config.per_second));
            b.milli_tokens.saturating_add(gained).min(full)
        };
        self.buckets.retain(|_, b| refilled(b) < full);
        if self.buckets.len() >= self.config.max_keys {
            // Everyone is mid-burst: forget the least recently used.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, per_second: u32, max_keys: usize) -> RateLimiter<u32> {
        RateLimiter::new(RateLimitConfig {
            burst,
            per_second,
            max_keys,
        })
    }

    #[test]
    fn burst_is_allowed_then_refused_with_retry_hint() {
        let mut l = limiter(3, 1, 10);
        let t = Timestamp(1000);
        for _ in 0..3 {
            assert_eq!(l.check(1, t), Ok(()));
        }
        assert_eq!(
            l.check(1, t),
            Err(RateLimited {
                retry_after_ms: 1000
            })
        );
        // Other keys have their own buckets.
        assert_eq!(l.check(2, t), Ok(()));
    }

    #[test]
    fn tokens_refill_with_virtual_time() {
        let mut l = limiter(2, 10, 10);
        let t = Timestamp(0);
        assert!(l.check(7, t).is_ok());
        assert!(l.check(7, t).is_ok());
        assert!(l.check(7, t).is_err());
        assert!(l.check(7, t.plus_millis(99)).is_err());
        assert!(l.check(7, t.plus_millis(200)).is_ok());
    }

    #[test]
    fn sustained_rate_matches_configuration() {
        let mut l = limiter(5, 100, 10);
        let allowed = (0..10_000u64)
            .filter(|ms| l.check(0, Timestamp(*ms)).is_ok())
            .count();
        // 10 s at 100/s plus the initial burst.
        assert!((1000..=1006).contains(&allowed), "{allowed}");
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let mut l = limiter(2, 1, 100);
        for k in 0..10_000u32 {
            let _ = l.check(k, Timestamp(u64::from(k)));
            assert!(l.tracked() <= 100);
        }
    }

    #[test]
    fn forgetting_a_key_never_grants_more_than_a_fresh_key_would() {
        let mut l = limiter(1, 1, 1);
        assert!(l.check(1, Timestamp(0)).is_ok());
        // Key 2 pushes out key 1 (mid-refill); key 1 then starts from a full bucket, which is
        // what any new source gets: the bound costs precision, not safety.
        assert!(l.check(2, Timestamp(0)).is_ok());
        assert_eq!(l.tracked(), 1);
    }
}
