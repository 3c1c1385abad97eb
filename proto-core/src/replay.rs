//! Replay filter: refuses a packet whose replay tag this hop has already seen while that
//! packet is still valid.
//!
//! The filter owns a fixed block of memory chosen by the caller (an array for `no_std`
//! users, a boxed slice for runtimes) and never allocates. It is a ring of time-bucketed
//! Bloom filters: a packet's expiry picks the bucket, so a replay (same packet, same
//! authenticated expiry) always lands in the bucket that holds its first copy. A bucket is
//! wiped and reused only once every packet it could hold has expired, which is how entries
//! past expiry are forgotten without a scan.
//!
//! Invariants: no false negatives — a tag inserted for an expiry `e` is reported as seen
//! for as long as `now <= e`, however many other tags arrive ("under churn"). The price of
//! a fixed size is false positives: when a bucket holds more tags than it was sized for,
//! a fresh packet may be refused as a replay. Failing closed that way keeps the security
//! property and costs only availability, which the `fill_ratio` gauge lets operators watch.
//! The trade-off, with numbers, is in `docs/PROTOCOL.md` ("Replay").
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
/// `now` is dropped, which bounds how long the filter must remember a tag (10 minutes).
pub const MAX_PACKET_LIFETIME_MS: u64 = 10 * 60 * 1000;

/// Width of one time bucket of the filter (1 minute).
pub const BUCKET_MS: u64 = 60 * 1000;

/// Number of time buckets: enough that every expiry a hop can accept
/// (`now ..= now + MAX_PACKET_LIFETIME_MS`) maps to its own bucket, plus one being
/// recycled.
pub const BUCKETS: usize = (MAX_PACKET_LIFETIME_MS / BUCKET_MS) as usize + 2;

/// Bloom probes per tag. With `m` bits per bucket and `n` tags in it, the false-positive
/// rate is about `(1 - e^(-k·n/m))^k`.
pub const PROBES: u32 = 16;

/// Default words (`u64`) per bucket: 2^15 words = 2 Mbit = 256 KiB. At 16 probes a bucket
/// holds 60,000 tags (1,000 packets/s for a minute) at a false-positive rate of about
/// 1e-7, and 100,000 tags at about 1e-4.
pub const DEFAULT_WORDS_PER_BUCKET: usize = 1 << 15;

/// Total `u64` words of the default filter (`BUCKETS × DEFAULT_WORDS_PER_BUCKET`, 3 MiB).
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
}

/// Time-bucketed Bloom filter over caller-provided storage `S` (`[u64; N]`, `Box<[u64]>`,
/// `Vec<u64>`, ...). The storage length must be a multiple of [`BUCKETS`] and a power of two
/// words per bucket.
pub struct ReplayFilter<S> {
    words: S,
    /// `log2` of the bits per bucket, so a probe index is a mask, not a division.
    bucket_bits_log2: u32,
    /// Which expiry slice (`expiry / BUCKET_MS`) each bucket currently holds.
    slice_of_bucket: [u64; BUCKETS],
    inserted_in_bucket: [u32; BUCKETS],
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
        })
    }

    /// Checks `tag` for a packet expiring at `expiry` and records it.
    ///
    /// Refuses expired packets and packets valid for longer than
    /// [`MAX_PACKET_LIFETIME_MS`], then refuses a tag already recorded for that expiry.
    pub fn check_and_insert(
        &mut self,
        tag: &ReplayTag,
        expiry: Timestamp,
        now: Timestamp,
    ) -> Result<(), ReplayError> {
        if expiry < now {
            return Err(ReplayError::Expired);
        }
        if expiry.millis_since(now) > MAX_PACKET_LIFETIME_MS {
            return Err(ReplayError::TooFarAhead);
        }
        let slice = expiry.0 / BUCKET_MS;
        // BUCKETS is a small constant; the remainder fits any usize.
        let bucket = (slice % BUCKETS as u64) as usize;
        if self.slice_of_bucket[bucket] != slice {
            // Every accepted expiry is within MAX_PACKET_LIFETIME_MS of now, and BUCKETS
            // covers that span plus one, so a bucket holding another slice holds only
            // expiries already in the past: forgetting them cannot admit a replay.
            self.recycle(bucket, slice);
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
    /// (`bits / 35`, the load at which the false-positive rate reaches about 1e-7 with 16
    /// probes). Above 1.0 fresh packets start to be refused more often; export it as a
    /// gauge.
    #[must_use]
    pub fn fill_ratio(&self) -> f32 {
        let capacity = (1u64 << self.bucket_bits_log2) / 35;
        let fullest = self.inserted_in_bucket.iter().copied().max().unwrap_or(0);
        fullest as f32 / capacity as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u64) -> ReplayTag {
        // Spread n over both halves the way HKDF output would be spread.
        let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let b = n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(31);
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
    }

    #[test]
    fn expired_and_far_future_packets_are_refused() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(10_000_000);
        assert_eq!(
            f.check_and_insert(&tag(1), Timestamp(9_999_999), now),
            Err(ReplayError::Expired)
        );
        assert_eq!(
            f.check_and_insert(&tag(2), now.plus_millis(MAX_PACKET_LIFETIME_MS + 1), now),
            Err(ReplayError::TooFarAhead)
        );
        assert_eq!(
            f.check_and_insert(&tag(3), now.plus_millis(MAX_PACKET_LIFETIME_MS), now),
            Ok(())
        );
    }

    #[test]
    fn replay_is_refused_even_under_churn() {
        // A tiny filter flooded far past its capacity must still refuse the replay: Bloom
        // filters have no false negatives, only false positives.
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(50_000_000);
        let exp = now.plus_millis(120_000);
        f.check_and_insert(&tag(0), exp, now).unwrap();
        for i in 1..20_000u64 {
            let t = now.plus_millis(i % 100_000);
            let _ = f.check_and_insert(&tag(i), t.plus_millis(i % MAX_PACKET_LIFETIME_MS), t);
        }
        assert_eq!(
            f.check_and_insert(&tag(0), exp, now.plus_millis(110_000)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn entries_are_forgotten_after_expiry() {
        let mut f = ReplayFilter::new([0u64; SMALL]).unwrap();
        let now = Timestamp(100 * BUCKET_MS);
        let exp = now.plus_millis(1);
        f.check_and_insert(&tag(7), exp, now).unwrap();
        // Once the packet's bucket has been recycled for a later slice, its bits are gone.
        let later = now.plus_millis(BUCKETS as u64 * BUCKET_MS);
        f.check_and_insert(&tag(8), exp.plus_millis(BUCKETS as u64 * BUCKET_MS), later)
            .unwrap();
        let bucket = ((exp.0 / BUCKET_MS) % BUCKETS as u64) as usize;
        assert_eq!(f.inserted_in_bucket[bucket], 1, "bucket was recycled");
        // And the old packet, were it replayed now, is refused as expired, not as a replay.
        assert_eq!(
            f.check_and_insert(&tag(7), exp, later),
            Err(ReplayError::Expired)
        );
    }

    #[test]
    fn false_positive_rate_matches_design_at_capacity() {
        // 1/64 scale of the default sizing: 512 words/bucket, 935 tags (the same load per
        // bit as 60,000 tags in the default bucket) → expected rate ~1e-7; allow 1e-3.
        let mut f = ReplayFilter::new(alloc_free_storage()).unwrap();
        let now = Timestamp(0);
        let exp = now.plus_millis(1000);
        for i in 0..935u64 {
            let _ = f.check_and_insert(&tag(i), exp, now);
        }
        let fps = (1_000_000..1_010_000u64)
            .filter(|&i| f.contains(&tag(i), exp))
            .count();
        assert!(fps <= 10, "{fps} false positives in 10,000");
    }

    impl<S: AsRef<[u64]> + AsMut<[u64]>> ReplayFilter<S> {
        fn contains(&self, tag: &ReplayTag, expiry: Timestamp) -> bool {
            let bucket = ((expiry.0 / BUCKET_MS) % BUCKETS as u64) as usize;
            let base = bucket << (self.bucket_bits_log2 - 6);
            self.probes(tag)
                .all(|(w, mask)| self.words.as_ref()[base + w] & mask != 0)
        }
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
