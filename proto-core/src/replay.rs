//! Replay filter: refuses a packet whose replay tag this hop has already seen while that
//! packet is still valid.
//!
//! The filter owns a fixed block of memory chosen by the caller (an array for `no_std`
//! users, a boxed slice for runtimes) and never allocates. It is a ring of Bloom filters,
//! one per [`BUCKET_MS`] slice of **arrival** time. A packet is recorded in the bucket of
//! the slice it arrives in, and checked against every live bucket it could have arrived
//! in before: a hop accepts a packet only while `now <= expiry <= now +
//! MAX_PACKET_LIFETIME_MS`, so its first copy arrived no earlier than `expiry −
//! MAX_PACKET_LIFETIME_MS`. A bucket is wiped and reused only once every packet that
//! arrived in it has expired, which is how entries past expiry are forgotten without a
//! scan.
//!
//! Buckets follow arrival time, not expiry, on purpose: a sender chooses the expiry, so
//! with expiry-keyed buckets anyone could pour every packet into one bucket and make
//! fresh packets collide with it. Arrival time is the hop's own, so a bucket holds what
//! arrived in one slice, at most `accepted rate × BUCKET_MS` tags, whatever the senders
//! choose. The bound, with numbers, is in `docs/PROTOCOL.md` ("Expiry and replay").
//!
//! Time never runs backwards here: the filter keeps the latest `now` it was given and
//! uses it whenever a caller's clock steps back, so a clock step cannot reopen a replay
//! window.
//!
//! Invariants: no false negatives — a tag inserted for an expiry `e` is reported as seen
//! for as long as `now <= e`, however many other tags arrive ("under churn"). The price of
//! a fixed size is false positives: when a bucket holds more tags than it was sized for,
//! a fresh packet may be refused as a replay. Failing closed that way keeps the security
//! property and costs only availability, which the `fill_ratio` gauge lets operators watch.
//!
//! The tags are outputs of HKDF over a secret shared with the packet's sender, so they
//! are uniform and unpredictable to anyone else: the Bloom probe positions are taken
//! straight from the tag's bits without further hashing.

use crate::types::Timestamp;

/// Length of a replay tag in bytes.
pub const REPLAY_TAG_LEN: usize = 16;

/// A packet's replay tag, derived from its per-hop shared secret.
pub type ReplayTag = [u8; REPLAY_TAG_LEN];

/// Longest validity a hop accepts: a packet whose expiry lies further than this beyond
/// `now` is dropped, which bounds how long the filter must remember a tag (1 minute).
pub const MAX_PACKET_LIFETIME_MS: u64 = 60 * 1000;

/// Every packet expiry is a multiple of this (10 s): packets built within the same ten
/// seconds carry the same expiry, so colluding hops cannot link a packet by it and it
/// does not reveal the sender's clock. A hop drops an expiry off the grid.
pub const EXPIRY_GRID_MS: u64 = 10 * 1000;

/// Width of one arrival-time bucket of the filter (10 s).
pub const BUCKET_MS: u64 = 10 * 1000;

/// Number of buckets: the slices a still-valid packet can have arrived in
/// (`now − MAX_PACKET_LIFETIME_MS ..= now`, seven slices of ten seconds).
pub const BUCKETS: usize = (MAX_PACKET_LIFETIME_MS / BUCKET_MS) as usize + 1;

/// Bloom probes per tag. With `m` bits per bucket and `n` tags in it, the false-positive
/// rate is about `(1 - e^(-k·n/m))^k`.
pub const PROBES: u32 = 16;

/// Accepted packets per second the default sizing is designed for: at or below it, a
/// fresh packet is refused as a replay with probability below [`DESIGN_FALSE_DROP_RATE`],
/// whatever expiries the senders choose.
pub const DESIGN_RATE_PER_SECOND: u64 = 10_000;

/// Bound on the false-drop probability per packet at [`DESIGN_RATE_PER_SECOND`] with the
/// default sizing: at most [`BUCKETS`] buckets of `DESIGN_RATE_PER_SECOND × BUCKET_MS`
/// tags each are checked, `7 × (1 − e^(−16·100,000/2^22))^16 ≈ 7.4·10⁻⁸`.
pub const DESIGN_FALSE_DROP_RATE: f64 = 1e-7;

/// Default words (`u64`) per bucket: 2^16 words = 4 Mbit = 512 KiB, sized for
/// `DESIGN_RATE_PER_SECOND × BUCKET_MS` = 100,000 tags.
pub const DEFAULT_WORDS_PER_BUCKET: usize = 1 << 16;

/// Total `u64` words of the default filter (`BUCKETS × DEFAULT_WORDS_PER_BUCKET`, 3.5 MiB).
pub const DEFAULT_FILTER_WORDS: usize = BUCKETS * DEFAULT_WORDS_PER_BUCKET;

/// Why a tag was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The tag was seen before (or is a Bloom false positive) within its validity window.
    Replayed,
    /// The expiry is already past.
    Expired,
    /// The expiry lies further ahead than [`MAX_PACKET_LIFETIME_MS`].
    TooFarAhead,
    /// The expiry is not a multiple of [`EXPIRY_GRID_MS`].
    OffGrid,
}

/// Arrival-time-bucketed Bloom filter over caller-provided storage `S` (`[u64; N]`,
/// `Box<[u64]>`, `Vec<u64>`, ...). The storage length must be [`BUCKETS`] times a power of
/// two words.
pub struct ReplayFilter<S> {
    words: S,
    /// `log2` of the bits per bucket, so a probe index is a mask, not a division.
    bucket_bits_log2: u32,
    /// Which arrival slice (`now / BUCKET_MS`) each bucket currently holds.
    slice_of_bucket: [u64; BUCKETS],
    inserted_in_bucket: [u32; BUCKETS],
    /// The latest time seen: a clock that steps back is read as this.
    high_water: Timestamp,
}

/// Why storage was refused by [`ReplayFilter::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadFilterStorage {
    /// The length that was supplied, in words.
    pub words: usize,
}

impl core::fmt::Display for BadFilterStorage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "replay filter storage of {} words is not {BUCKETS} × a power of two",
            self.words
        )
    }
}

/// The bucket a slice maps to. `BUCKETS` is a small constant, so the remainder fits.
const fn bucket_of(slice: u64) -> usize {
    (slice % BUCKETS as u64) as usize
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> ReplayFilter<S> {
    /// Wraps `storage` (zeroed first). Its length must be `BUCKETS × 2^j` words, `j ≥ 1`.
    pub fn new(mut storage: S) -> Result<Self, BadFilterStorage> {
        let words = storage.as_ref().len();
        let per_bucket = words / BUCKETS;
        if per_bucket < 2 || words % BUCKETS != 0 || !per_bucket.is_power_of_two() {
            return Err(BadFilterStorage { words });
        }
        storage.as_mut().fill(0);
        Ok(Self {
            words: storage,
            bucket_bits_log2: per_bucket.trailing_zeros() + 6,
            slice_of_bucket: [u64::MAX; BUCKETS],
            inserted_in_bucket: [0; BUCKETS],
            high_water: Timestamp(0),
        })
    }

    /// Checks `tag` for a packet expiring at `expiry`, arriving at `now`, and records it.
    ///
    /// Refuses an expiry off the grid, in the past or further ahead than
    /// [`MAX_PACKET_LIFETIME_MS`], then a tag already recorded in any bucket the packet
    /// could first have arrived in. A `now` earlier than one seen before counts as that
    /// one.
    pub fn check_and_insert(
        &mut self,
        tag: &ReplayTag,
        expiry: Timestamp,
        now: Timestamp,
    ) -> Result<(), ReplayError> {
        let now = self.advance(now);
        if !expiry.0.is_multiple_of(EXPIRY_GRID_MS) {
            return Err(ReplayError::OffGrid);
        }
        if expiry < now {
            return Err(ReplayError::Expired);
        }
        if expiry.millis_since(now) > MAX_PACKET_LIFETIME_MS {
            return Err(ReplayError::TooFarAhead);
        }
        let current = now.0 / BUCKET_MS;
        // The first copy arrived at or after `expiry − MAX_PACKET_LIFETIME_MS`, which is
        // at most BUCKETS − 1 slices back: every such slice still has its bucket.
        let earliest = expiry.0.saturating_sub(MAX_PACKET_LIFETIME_MS) / BUCKET_MS;
        for slice in earliest..current {
            if self.slice_of_bucket[bucket_of(slice)] == slice && self.holds(slice, tag) {
                return Err(ReplayError::Replayed);
            }
        }
        let bucket = bucket_of(current);
        if self.slice_of_bucket[bucket] != current {
            // The bucket holds a slice BUCKETS or more back: everything that arrived then
            // expired at most MAX_PACKET_LIFETIME_MS later, before `now`, so forgetting it
            // cannot admit a replay.
            self.recycle(bucket, current);
        }
        let base = bucket << (self.bucket_bits_log2 - 6);
        let mut all_set = true;
        for (word_index, mask) in self.probes(tag) {
            let word = &mut self.words.as_mut()[base + word_index];
            all_set &= *word & mask != 0;
            *word |= mask;
        }
        if all_set {
            return Err(ReplayError::Replayed);
        }
        self.inserted_in_bucket[bucket] = self.inserted_in_bucket[bucket].saturating_add(1);
        Ok(())
    }

    /// `now`, or the latest time seen if the clock stepped back.
    fn advance(&mut self, now: Timestamp) -> Timestamp {
        if now > self.high_water {
            self.high_water = now;
        }
        self.high_water
    }

    /// Whether every probe bit of `tag` is set in the bucket holding `slice`.
    fn holds(&self, slice: u64, tag: &ReplayTag) -> bool {
        let base = bucket_of(slice) << (self.bucket_bits_log2 - 6);
        let words = self.words.as_ref();
        self.probes(tag)
            .all(|(word_index, mask)| words[base + word_index] & mask != 0)
    }

    /// The (word within bucket, bit mask) pairs of `tag`'s Bloom probes:
    /// Kirsch–Mitzenmacher double hashing over the tag's already-uniform bits.
    fn probes(&self, tag: &ReplayTag) -> impl Iterator<Item = (usize, u64)> + use<S> {
        let bits_mask = (1u64 << self.bucket_bits_log2) - 1;
        let h1 = u64::from_le_bytes(crate::keys::fixed(&tag[..8]));
        let h2 = u64::from_le_bytes(crate::keys::fixed(&tag[8..])) | 1;
        (0..u64::from(PROBES)).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & bits_mask;
            // bit < 2^bucket_bits_log2, so bit / 64 indexes within one bucket's words.
            ((bit >> 6) as usize, 1u64 << (bit & 63))
        })
    }

    fn recycle(&mut self, bucket: usize, slice: u64) {
        let per_bucket = 1usize << (self.bucket_bits_log2 - 6);
        self.words.as_mut()[bucket * per_bucket..(bucket + 1) * per_bucket].fill(0);
        self.slice_of_bucket[bucket] = slice;
        self.inserted_in_bucket[bucket] = 0;
    }

    /// Tags recorded in the fullest live bucket divided by the bucket's designed capacity
    /// (`bits / 42`, the load at which the false-positive rate of one bucket reaches about
    /// 1e-8 with 16 probes). Above 1.0 fresh packets start to be refused more often; export
    /// it as a gauge.
    #[must_use]
    pub fn fill_ratio(&self) -> f32 {
        let capacity = (1u64 << self.bucket_bits_log2) / 42;
        let fullest = self.inserted_in_bucket.iter().copied().max().unwrap_or(0);
        fullest as f32 / capacity as f32
    }

    /// The latest time this filter has been given.
    #[must_use]
    pub fn high_water(&self) -> Timestamp {
        self.high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// SplitMix64's finalizer: a fixed, well-mixed stream, as uniform as HKDF output is
    /// for what the Bloom probes read (a plain multiply leaves the positions of nearby
    /// `n` correlated, and inflates the false positives).
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn tag(n: u64) -> ReplayTag {
        let a = mix(2 * n);
        let b = mix(2 * n + 1);
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&a.to_le_bytes());
        t[8..].copy_from_slice(&b.to_le_bytes());
        t
    }

    const SMALL: usize = BUCKETS * 64;

    #[test]
    fn replayed_tag_is_refused_within_window() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(1_000_000);
        let exp = now.plus_millis(30_000);
        assert_eq!(f.check_and_insert(&tag(1), exp, now), Ok(()));
        assert_eq!(
            f.check_and_insert(&tag(1), exp, now.plus_millis(29_000)),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            f.check_and_insert(&tag(1), exp, now),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn expired_far_future_and_off_grid_packets_are_refused() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(10_000_000);
        assert_eq!(
            f.check_and_insert(&tag(1), Timestamp(9_990_000), now),
            Err(ReplayError::Expired)
        );
        assert_eq!(
            f.check_and_insert(
                &tag(2),
                now.plus_millis(MAX_PACKET_LIFETIME_MS + EXPIRY_GRID_MS),
                now
            ),
            Err(ReplayError::TooFarAhead)
        );
        assert_eq!(
            f.check_and_insert(&tag(3), now.plus_millis(MAX_PACKET_LIFETIME_MS), now),
            Ok(())
        );
        for off in [1, 999, EXPIRY_GRID_MS / 2, EXPIRY_GRID_MS - 1] {
            assert_eq!(
                f.check_and_insert(&tag(4), now.plus_millis(20_000 + off), now),
                Err(ReplayError::OffGrid),
                "expiry {off} ms past the grid"
            );
        }
        assert_eq!(
            f.check_and_insert(&tag(4), now.plus_millis(20_000), now),
            Ok(()),
            "refusals off the grid recorded nothing"
        );
    }

    #[test]
    fn replay_is_refused_in_every_later_slice_and_even_under_churn() {
        // A tiny filter flooded far past its capacity must still refuse the replay: Bloom
        // filters have no false negatives, only false positives.
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(50_000_000);
        let exp = now.plus_millis(MAX_PACKET_LIFETIME_MS);
        f.check_and_insert(&tag(0), exp, now).unwrap();
        for i in 1..20_000u64 {
            let t = now.plus_millis(i * 3);
            let e = Timestamp((t.0 / EXPIRY_GRID_MS + 1 + i % 5) * EXPIRY_GRID_MS);
            let _ = f.check_and_insert(&tag(i), e, t);
        }
        for later in (0..=MAX_PACKET_LIFETIME_MS).step_by(1_000) {
            assert_eq!(
                f.check_and_insert(&tag(0), exp, now.plus_millis(later)),
                Err(ReplayError::Replayed),
                "{later} ms after the first copy"
            );
        }
    }

    #[test]
    fn entries_are_forgotten_after_expiry() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(100 * BUCKET_MS);
        let exp = now.plus_millis(EXPIRY_GRID_MS);
        f.check_and_insert(&tag(7), exp, now).unwrap();
        // Once the packet's bucket has been recycled for a later slice, its bits are gone.
        let later = now.plus_millis(BUCKETS as u64 * BUCKET_MS);
        f.check_and_insert(&tag(8), later.plus_millis(EXPIRY_GRID_MS), later)
            .unwrap();
        let bucket = bucket_of(now.0 / BUCKET_MS);
        assert_eq!(f.slice_of_bucket[bucket], later.0 / BUCKET_MS);
        assert_eq!(f.inserted_in_bucket[bucket], 1, "bucket was recycled");
        // And the old packet, were it replayed now, is refused as expired, not as a replay.
        assert_eq!(
            f.check_and_insert(&tag(7), exp, later),
            Err(ReplayError::Expired)
        );
    }

    #[test]
    fn a_clock_stepping_back_does_not_reopen_a_replay() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(70 * BUCKET_MS);
        let exp = now.plus_millis(MAX_PACKET_LIFETIME_MS);
        f.check_and_insert(&tag(1), exp, now).unwrap();
        // Ten minutes back: read as the latest time seen, so the replay is still caught
        // (and a packet that expired before the step stays expired).
        let back = Timestamp(now.0 - 10 * 60 * 1000);
        assert_eq!(
            f.check_and_insert(&tag(1), exp, back),
            Err(ReplayError::Replayed)
        );
        assert_eq!(f.check_and_insert(&tag(2), exp, back), Ok(()));
        assert_eq!(
            f.check_and_insert(&tag(3), Timestamp(now.0 - EXPIRY_GRID_MS), back),
            Err(ReplayError::Expired)
        );
        assert_eq!(f.high_water(), now);
    }

    /// Feeds `rate` fresh packets per second for `seconds` of simulated time and returns
    /// how many of these fresh packets were refused as replays, and how many were sent.
    /// Half carry the furthest expiry a hop accepts (an adversary pouring everything into
    /// one expiry), half the nearest (each checked against every live bucket).
    fn flood<S: AsRef<[u64]> + AsMut<[u64]>>(
        f: &mut ReplayFilter<S>,
        rate: u64,
        seconds: u64,
        first_tag: u64,
    ) -> (u64, u64) {
        let start = Timestamp(1_000 * BUCKET_MS);
        let total = rate * seconds;
        let mut refused = 0;
        for i in 0..total {
            let now = start.plus_millis(i * 1000 / rate);
            let expiry = if i % 2 == 0 {
                (now.0 + MAX_PACKET_LIFETIME_MS) / EXPIRY_GRID_MS * EXPIRY_GRID_MS
            } else {
                now.0.div_ceil(EXPIRY_GRID_MS) * EXPIRY_GRID_MS
            };
            if f.check_and_insert(&tag(first_tag + i), Timestamp(expiry), now)
                .is_err()
            {
                refused += 1;
            }
        }
        (refused, total)
    }

    #[test]
    fn a_flood_at_the_design_rate_with_one_chosen_expiry_stays_under_the_false_drop_bound() {
        // The default sizing, fed 10,000 packets/s for two minutes (every bucket filled
        // and recycled), all carrying the same chosen expiry per ten seconds.
        let mut f = ReplayFilter::new(vec![0u64; DEFAULT_FILTER_WORDS]).unwrap();
        let (refused, total) = flood(&mut f, DESIGN_RATE_PER_SECOND, 120, 1 << 40);
        assert!(
            f.fill_ratio() <= 1.01,
            "a bucket holds one slice of arrivals: fill {}",
            f.fill_ratio()
        );
        // Expected ≈ 7.3e-8 × 1.2M ≈ 0.09 false drops.
        let rate = refused as f64 / total as f64;
        std::eprintln!(
            "replay flood: {refused} of {total} fresh packets refused at {DESIGN_RATE_PER_SECOND}/s, fill {:.2}",
            f.fill_ratio()
        );
        assert!(
            refused <= 1,
            "{refused} of {total} fresh packets refused ({rate:e}); bound {DESIGN_FALSE_DROP_RATE:e}"
        );
    }

    #[test]
    fn the_false_drop_rate_follows_the_bloom_formula_at_any_load() {
        // 1/64 of the default bucket (1,024 words, 65,536 bits) at 7 tags per 100 bits per
        // ten seconds: the formula predicts what a flood measures, within a factor of two.
        let mut f = ReplayFilter::new(vec![0u64; BUCKETS * 1024]).unwrap();
        let rate = 460;
        let (refused, total) = flood(&mut f, rate, 120, 1 << 41);
        let n = (rate * BUCKET_MS / 1000) as f64;
        let one = (1.0 - (-(f64::from(PROBES)) * n / 65_536.0).exp()).powi(PROBES as i32);
        // A packet meets on average about half a full bucket per slice it checks, so the
        // predicted rate lies between one full bucket and all seven.
        let measured = refused as f64 / total as f64;
        std::eprintln!(
            "replay flood at 1/64 scale: measured {measured:e}, one full bucket {one:e}"
        );
        assert!(
            measured > one / 2.0 && measured < one * BUCKETS as f64 * 2.0,
            "measured {measured:e}, one full bucket {one:e}"
        );
    }

    impl<S: AsRef<[u64]> + AsMut<[u64]>> ReplayFilter<S> {
        /// Whether `tag` is in the bucket of the slice `now` falls in.
        fn contains(&self, tag: &ReplayTag, now: Timestamp) -> bool {
            self.holds(now.0 / BUCKET_MS, tag)
        }
    }

    #[test]
    fn false_positive_rate_matches_design_at_capacity() {
        // 1/128 scale of the default sizing: 512 words/bucket, 780 tags (the same load per
        // bit as 100,000 tags in the default bucket) → expected rate ~1e-8; allow 1e-3.
        let mut f = ReplayFilter::new(alloc_free_storage()).unwrap();
        let now = Timestamp(0);
        let exp = now.plus_millis(EXPIRY_GRID_MS);
        for i in 0..780u64 {
            let _ = f.check_and_insert(&tag(i), exp, now);
        }
        let fps = (1_000_000..1_010_000u64)
            .filter(|&i| f.contains(&tag(i), now))
            .count();
        assert!(fps <= 10, "{fps} false positives in 10,000");
    }

    fn alloc_free_storage() -> [u64; BUCKETS * 512] {
        [0u64; BUCKETS * 512]
    }

    #[test]
    fn storage_of_wrong_shape_is_refused() {
        assert!(ReplayFilter::new([0u64; BUCKETS * 3]).is_err());
        assert!(ReplayFilter::new([0u64; BUCKETS]).is_err());
        assert!(ReplayFilter::new([0u64; BUCKETS * 2 + 1]).is_err());
    }
}
