//! The `flow` scenario's checks after its stores: every acknowledged message is on every
//! one of its K swarm members (a signed retrieve from each member, through a fresh 3-hop
//! path), and a recipient fetching the way a user does gets it exactly once.
//!
//! Members are asked first, again every [`RETRY_INTERVAL`] until the deadline, so that
//! replication still in flight when the stores end is waited for rather than counted as a
//! loss. Then each recipient fetches twice as a user would (any member, then again with
//! the cursors the first fetch left): each acknowledged message must come out of the two
//! exactly once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proto_core::MessageHash;
use proto_core::client::FetchCursors;

use super::work::{Acked, Recipient};
use crate::client::Client;

/// Pause between two rounds of asking a member that lacked a message.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// What the checks found, summed over recipients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged messages.
    pub acknowledged: u64,
    /// Returned exactly once by the user's fetches.
    pub retrieved_once: u64,
    /// Returned by no fetch.
    pub missing: u64,
    /// Returned more than once.
    pub duplicated: u64,
    /// Held by every member.
    pub on_all_members: u64,
    /// (message, member) pairs missing at the deadline.
    pub member_copies_missing: u64,
    /// Recipients whose fetches failed outright.
    pub recipients_unreadable: u64,
}

impl Verdict {
    fn add(&mut self, o: &Self) {
        self.acknowledged += o.acknowledged;
        self.retrieved_once += o.retrieved_once;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.on_all_members += o.on_all_members;
        self.member_copies_missing += o.member_copies_missing;
        self.recipients_unreadable += o.recipients_unreadable;
    }
}

/// Checks every acknowledged message with `clients` (one thread each), waiting for
/// replication until `deadline`.
#[must_use]
pub fn verify(
    clients: Vec<Client>,
    recipients: &[Recipient],
    acked: &[Acked],
    deadline: Instant,
) -> Verdict {
    let mut by_recipient: BTreeMap<usize, Vec<MessageHash>> = BTreeMap::new();
    for a in acked {
        by_recipient.entry(a.recipient).or_default().push(a.hash);
    }
    let work: Vec<(usize, Vec<MessageHash>)> = by_recipient.into_iter().collect();
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Verdict::default());
    std::thread::scope(|s| {
        for client in clients {
            let (next, work, total) = (&next, &work, &total);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((who, hashes)) = work.get(i) else {
                        return;
                    };
                    let v = check_recipient(&client, &recipients[*who], hashes, deadline);
                    total.lock().expect("no panics while held").add(&v);
                }
            });
        }
    });
    total.into_inner().expect("no panics while held")
}

fn check_recipient(
    client: &Client,
    recipient: &Recipient,
    hashes: &[MessageHash],
    deadline: Instant,
) -> Verdict {
    let mut v = Verdict {
        acknowledged: hashes.len() as u64,
        ..Verdict::default()
    };
    let Ok(swarm) = client.swarm(&recipient.contact.recipient) else {
        v.recipients_unreadable = 1;
        v.missing = v.acknowledged;
        return v;
    };
    let wanted: HashSet<MessageHash> = hashes.iter().copied().collect();
    // How many members hold each message.
    let mut held: BTreeMap<MessageHash, u64> = BTreeMap::new();
    for member in &swarm {
        let mut seen: HashSet<MessageHash> = HashSet::new();
        loop {
            let (_, result) = client.fetch_op(
                &recipient.identity,
                FetchCursors::default(),
                Some(member.node_id()),
            );
            if let Ok(f) = result {
                seen = f.messages.iter().map(|m| m.hash).collect();
            }
            if wanted.is_subset(&seen) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(RETRY_INTERVAL);
        }
        for h in wanted.intersection(&seen) {
            *held.entry(*h).or_default() += 1;
        }
    }
    let k = swarm.len() as u64;
    v.on_all_members = wanted
        .iter()
        .filter(|h| held.get(h).copied() == Some(k))
        .count() as u64;
    v.member_copies_missing = wanted
        .iter()
        .map(|h| k - held.get(h).copied().unwrap_or(0))
        .sum();

    // As a user: any member, then again with the cursors the first fetch left.
    let mut times: BTreeMap<MessageHash, u64> = BTreeMap::new();
    let mut cursors = FetchCursors::default();
    let mut failed = 0;
    for _ in 0..2 {
        let (kept, result) = client.fetch_op(&recipient.identity, cursors, None);
        cursors = kept;
        match result {
            Ok(f) => {
                for m in f.messages.iter().filter(|m| wanted.contains(&m.hash)) {
                    *times.entry(m.hash).or_default() += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    if failed == 2 {
        v.recipients_unreadable = 1;
    }
    for h in &wanted {
        match times.get(h).copied().unwrap_or(0) {
            0 => v.missing += 1,
            1 => v.retrieved_once += 1,
            _ => v.duplicated += 1,
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_of_recipients_add_up_field_by_field() {
        let one = Verdict {
            acknowledged: 3,
            retrieved_once: 2,
            missing: 1,
            duplicated: 0,
            on_all_members: 2,
            member_copies_missing: 1,
            recipients_unreadable: 0,
        };
        let mut sum = one;
        sum.add(&Verdict {
            duplicated: 4,
            recipients_unreadable: 1,
            ..one
        });
        assert_eq!(
            sum,
            Verdict {
                acknowledged: 6,
                retrieved_once: 4,
                missing: 2,
                duplicated: 4,
                on_all_members: 4,
                member_copies_missing: 2,
                recipients_unreadable: 1,
            }
        );
    }
}
