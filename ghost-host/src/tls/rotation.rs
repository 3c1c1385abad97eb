//! TLS key rotation with overlap.
//!
//! A node makes a new TLS key every `http.tls_key_rotation_ms` and publishes its hash in
//! a new descriptor at once. For `http.tls_key_overlap_ms` after that it still presents
//! the previous key to clients whose SNI names it (they pinned the previous descriptor),
//! and the core signs its peer envelopes, because a peer holding the previous descriptor
//! would not recognise a session on the new key. Then the previous key is dropped, which
//! wipes it. Both keys live in one file, `tls.key`, replaced atomically, so a restart
//! within an overlap keeps serving both.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto_core::{Timestamp, TlsKeyHash};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::{TlsKey, TlsLinks};

/// After a failed write of the key file, how long before the rotation is tried again.
const RETRY_AFTER_MS: u64 = 60_000;

/// The contents of `tls.key`: the current key and when it was made, and during an overlap
/// the previous key and until when it is served.
///
/// On disk (docs/OPERATING.md): the current key's 32-byte Ed25519 seed, then its creation
/// time (u64, big-endian ms since the Unix epoch), then, during an overlap only, the
/// previous key's seed and the end of the overlap (u64 ms): 40 or 80 bytes. A 32-byte
/// file (a seed alone, as written before rotation existed) is read with the file's
/// modification time as the creation time.
pub struct KeyFile {
    /// The key presented to every new connection.
    pub current: TlsKey,
    /// When [`KeyFile::current`] was made.
    pub since: Timestamp,
    /// The previous key and the end of its overlap.
    pub previous: Option<(TlsKey, Timestamp)>,
}

impl KeyFile {
    /// Reads `path`, or creates it with a fresh key (mode 0600). A previous key whose
    /// overlap ended by `now` is dropped.
    pub fn load_or_create<R: CryptoRng + ?Sized>(
        path: &Path,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Self, String> {
        match fs::read(path).map(Zeroizing::new) {
            Ok(bytes) => {
                let modified = fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(now, |d| {
                        Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    });
                let mut file = Self::decode(&bytes, modified).ok_or_else(|| {
                    format!(
                        "{} is not a TLS key file (32, 40 or 80 bytes, docs/OPERATING.md): \
                         move it away to generate a new key",
                        path.display()
                    )
                })?;
                if file
                    .previous
                    .as_ref()
                    .is_some_and(|(_, until)| *until <= now)
                {
                    file.previous = None;
                }
                // A clock that stepped back must not postpone the next rotation for long.
                file.since = file.since.min(now);
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = Self {
                    current: TlsKey::generate(rng),
                    since: now,
                    previous: None,
                };
                file.save(path)?;
                Ok(file)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn decode(bytes: &[u8], modified: Timestamp) -> Option<Self> {
        let seed = |at: usize| -> Option<Zeroizing<[u8; 32]>> {
            Some(Zeroizing::new(bytes.get(at..at + 32)?.try_into().ok()?))
        };
        let time = |at: usize| -> Option<Timestamp> {
            Some(Timestamp(u64::from_be_bytes(
                bytes.get(at..at + 8)?.try_into().ok()?,
            )))
        };
        let current = TlsKey::from_secret_bytes(&*seed(0)?);
        match bytes.len() {
            32 => Some(Self {
                current,
                since: modified,
                previous: None,
            }),
            40 => Some(Self {
                current,
                since: time(32)?,
                previous: None,
            }),
            80 => Some(Self {
                current,
                since: time(32)?,
                previous: Some((TlsKey::from_secret_bytes(&*seed(40)?), time(72)?)),
            }),
            _ => None,
        }
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(80));
        out.extend_from_slice(&self.current.secret_bytes()[..]);
        out.extend_from_slice(&self.since.0.to_be_bytes());
        if let Some((key, until)) = &self.previous {
            out.extend_from_slice(&key.secret_bytes()[..]);
            out.extend_from_slice(&until.0.to_be_bytes());
        }
        out
    }

    /// Replaces `path` with this file atomically: written beside it (mode 0600), synced,
    /// renamed over it, and the directory synced, so a crash leaves the old file or the
    /// new one, never a torn one.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        crate::start::replace_private(path, &self.encode())
    }
}

/// What [`TlsRotation::run`] did that the core must learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// The hash of the key now presented, for the new descriptor.
    pub tls_key_hash: TlsKeyHash,
    /// Until when the previous key is served and peer envelopes must be signed.
    pub overlap_until: Timestamp,
}

/// The schedule of a node's TLS key: when to make a new key, when to retire the previous
/// one; the key file and the links' presented keys follow every change.
pub struct TlsRotation {
    path: PathBuf,
    keys: KeyFile,
    links: Arc<TlsLinks>,
    period_ms: u64,
    overlap_ms: u64,
    retry_at: Option<Timestamp>,
}

impl TlsRotation {
    /// Rotates the keys of `links` (already presenting `keys`) every `period_ms` (0:
    /// never; a previous key in `keys` is still retired at the end of its overlap),
    /// keeping each previous key for `overlap_ms`, and writing every change to `path`.
    #[must_use]
    pub fn new(
        path: PathBuf,
        keys: KeyFile,
        links: Arc<TlsLinks>,
        period_ms: u64,
        overlap_ms: u64,
    ) -> Self {
        Self {
            path,
            keys,
            links,
            period_ms,
            overlap_ms,
            retry_at: None,
        }
    }

    /// When [`TlsRotation::run`] has something to do next.
    #[must_use]
    pub fn next_due(&self) -> Option<Timestamp> {
        let retire = self.keys.previous.as_ref().map(|(_, until)| *until);
        let rotate = (self.period_ms > 0).then(|| {
            let due = self.keys.since.plus_millis(self.period_ms);
            self.retry_at.map_or(due, |retry| due.max(retry))
        });
        [retire, rotate].into_iter().flatten().min()
    }

    /// Retires the previous key if its overlap is over, and makes a new key if the current
    /// one served its period: written to the key file first, then presented. Returns what
    /// the core must publish, or `None` if no new key was made.
    pub fn run<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> Option<Rotated> {
        if self
            .keys
            .previous
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            self.retire_previous();
        }
        let due = self
            .next_due()
            .is_some_and(|t| t <= now && self.keys.previous.is_none());
        // With rotation off, `next_due` names only the end of an overlap.
        if !due {
            return None;
        }
        let overlap_until = now.plus_millis(self.overlap_ms);
        let fresh = KeyFile {
            current: TlsKey::generate(rng),
            since: now,
            previous: Some((self.keys.current.duplicate(), overlap_until)),
        };
        if let Err(problem) = fresh.save(&self.path) {
            tracing::error!(%problem, "TLS key rotation postponed: the new key could not be stored");
            self.retry_at = Some(now.plus_millis(RETRY_AFTER_MS));
            return None;
        }
        self.retry_at = None;
        if let Err(problem) = self
            .links
            .install(&fresh.current, fresh.previous.as_ref().map(|(k, _)| k))
        {
            // The file holds the new key: a restart presents and publishes it.
            tracing::error!(%problem, "the new TLS key is stored but not presented");
            self.keys = fresh;
            return None;
        }
        let tls_key_hash = TlsKeyHash(fresh.current.key_hash());
        self.keys = fresh;
        tracing::info!(%tls_key_hash, overlap_ms = self.overlap_ms, "TLS key rotated");
        Some(Rotated {
            tls_key_hash,
            overlap_until,
        })
    }

    /// Stops presenting the previous key and drops it (wiping it), then rewrites the key
    /// file without it. A failed rewrite leaves an expired key in the file, which is
    /// ignored at the next start.
    fn retire_previous(&mut self) {
        if let Err(problem) = self.links.install(&self.keys.current, None) {
            tracing::error!(%problem, "cannot retire the previous TLS key");
            return;
        }
        self.keys.previous = None;
        match self.keys.save(&self.path) {
            Ok(()) => tracing::info!("previous TLS key retired"),
            Err(problem) => {
                tracing::warn!(%problem, "previous TLS key retired, but not removed from its file");
            }
        }
    }
}

impl std::fmt::Debug for TlsRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRotation")
            .field("path", &self.path)
            .field("period_ms", &self.period_ms)
            .field("overlap_ms", &self.overlap_ms)
            .field("next_due", &self.next_due())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(9)
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("the file").permissions().mode() & 0o777
    }

    #[test]
    fn the_key_file_keeps_both_keys_through_a_restart_and_forgets_an_expired_one() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("tls.key");
        let created = KeyFile::load_or_create(&path, T0, &mut rng()).expect("created");
        assert_eq!(fs::read(&path).expect("written").len(), 40);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let again = KeyFile::load_or_create(&path, T0.plus_millis(5), &mut rng()).expect("read");
        assert_eq!(again.current.key_hash(), created.current.key_hash());
        assert_eq!(again.since, T0);

        let with_previous = KeyFile {
            current: TlsKey::from_secret_bytes(&[2; 32]),
            since: T0,
            previous: Some((TlsKey::from_secret_bytes(&[1; 32]), T0.plus_millis(1000))),
        };
        with_previous.save(&path).expect("saved");
        assert_eq!(fs::read(&path).expect("written").len(), 80);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let within = KeyFile::load_or_create(&path, T0.plus_millis(999), &mut rng()).expect("read");
        let (previous, until) = within.previous.expect("still in its overlap");
        assert_eq!(
            previous.public_key(),
            TlsKey::from_secret_bytes(&[1; 32]).public_key()
        );
        assert_eq!(until, T0.plus_millis(1000));
        let after = KeyFile::load_or_create(&path, T0.plus_millis(1000), &mut rng()).expect("read");
        assert!(
            after.previous.is_none(),
            "an overlap that ended is not resumed"
        );
        assert!(!dir.path().join("tls.key.new").exists());
    }

    #[test]
    fn a_seed_alone_is_read_as_made_when_written_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("tls.key");
        fs::write(&path, [7u8; 32]).expect("written");
        let far_later = Timestamp(u64::MAX / 2);
        let file = KeyFile::load_or_create(&path, far_later, &mut rng()).expect("read");
        assert_eq!(
            file.current.public_key(),
            TlsKey::from_secret_bytes(&[7; 32]).public_key()
        );
        assert!(
            file.since < far_later,
            "the file's time, not the time of reading"
        );
        fs::write(&path, [7u8; 33]).expect("written");
        let e = KeyFile::load_or_create(&path, T0, &mut rng())
            .err()
            .expect("refused");
        assert!(e.contains("not a TLS key file"), "{e}");
    }

    #[test]
    fn the_schedule_rotates_stores_presents_and_then_retires() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("tls.key");
        let mut rng = rng();
        let keys = KeyFile::load_or_create(&path, T0, &mut rng).expect("created");
        let first = TlsKeyHash(keys.current.key_hash());
        let links = Arc::new(TlsLinks::for_node(keys.current.duplicate()).expect("links"));
        let mut schedule = TlsRotation::new(path.clone(), keys, links.clone(), 10_000, 4_000);

        assert_eq!(schedule.next_due(), Some(T0.plus_millis(10_000)));
        assert_eq!(schedule.run(T0.plus_millis(9_999), &mut rng), None);

        let at = T0.plus_millis(10_000);
        let rotated = schedule.run(at, &mut rng).expect("rotated");
        assert_ne!(rotated.tls_key_hash, first);
        assert_eq!(rotated.overlap_until, at.plus_millis(4_000));
        assert_eq!(links.key_hash(), Some(rotated.tls_key_hash));
        assert_eq!(links.generation(), 1);
        let stored = KeyFile::load_or_create(&path, at, &mut rng).expect("read");
        assert_eq!(TlsKeyHash(stored.current.key_hash()), rotated.tls_key_hash);
        assert_eq!(stored.since, at);
        let (previous, until) = stored.previous.expect("the previous key is stored");
        assert_eq!(TlsKeyHash(previous.key_hash()), first);
        assert_eq!(until, rotated.overlap_until);

        // The end of the overlap is the next thing to do; then the file drops the old key.
        assert_eq!(schedule.next_due(), Some(rotated.overlap_until));
        assert_eq!(schedule.run(rotated.overlap_until, &mut rng), None);
        assert_eq!(fs::read(&path).expect("rewritten").len(), 40);
        assert_eq!(links.key_hash(), Some(rotated.tls_key_hash));
        assert_eq!(schedule.next_due(), Some(at.plus_millis(10_000)));
    }

    #[test]
    fn a_key_that_cannot_be_stored_is_not_used_and_the_rotation_is_retried() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("tls.key");
        let keys = KeyFile::load_or_create(&path, T0, &mut rng()).expect("created");
        let first = TlsKeyHash(keys.current.key_hash());
        let links = Arc::new(TlsLinks::for_node(keys.current.duplicate()).expect("links"));
        let gone = dir.path().join("gone").join("tls.key");
        let mut schedule = TlsRotation::new(gone, keys, links.clone(), 10_000, 4_000);
        let at = T0.plus_millis(10_000);
        assert_eq!(schedule.run(at, &mut rng()), None);
        assert_eq!(
            links.key_hash(),
            Some(first),
            "the unstored key is not presented"
        );
        assert_eq!(schedule.next_due(), Some(at.plus_millis(RETRY_AFTER_MS)));
    }
}
