//! What the workers do: 3-hop stores and fetches through the core client (each worker a
//! blocking [`Client`] over one shared connection pool), plain `GET`s for the `http`
//! scenario, and the replication probes of the `flow` scenario.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proto_core::client::{ClientConfig, ClientError as CoreError, FetchCursors, Problem};
use proto_core::keys::IdentityKey;
use proto_core::request::RequestError;
use proto_core::sealed::{Contact, EncryptionKey};
use proto_core::{MessageHash, NodeId};

use super::load::{Choices, Plan, Recorder, Ticket, new_histogram, record_into};
use crate::client::{Client, Http, Links, Listening, REQUEST_TIMEOUT, seal_message};

/// One recipient the bench writes to: keys made from the run's seed.
pub struct Recipient {
    /// Signs its retrieves.
    pub identity: IdentityKey,
    /// Where senders seal to.
    pub contact: Contact,
}

/// The recipients of a run, the same for the same seed.
#[must_use]
pub fn recipients(seed: u64, n: usize) -> Vec<Recipient> {
    let mut choices = Choices::for_op(seed, u64::MAX);
    (0..n)
        .map(|_| {
            let mut id_seed = [0u8; 32];
            let mut enc = [0u8; 32];
            choices.fill(&mut id_seed);
            choices.fill(&mut enc);
            let identity = IdentityKey::from_seed(&id_seed);
            let encryption = EncryptionKey::from_secret_bytes(enc);
            let contact = Contact {
                recipient: identity.recipient_id(),
                encryption: encryption.public(),
            };
            Recipient { identity, contact }
        })
        .collect()
}

/// A store the network acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Index into the recipients.
    pub recipient: usize,
    /// The message.
    pub hash: MessageHash,
    /// Members that signed a receipt.
    pub receipts: Vec<NodeId>,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// What the workers of a store-and-fetch scenario share.
pub struct Shared {
    /// The run's seed.
    pub seed: u64,
    /// The recipients.
    pub recipients: Vec<Recipient>,
    /// Plaintext bytes per message.
    pub payload: usize,
    /// Stores and retrieves per round of the mix (`flow` and `store`: `(1, 0)`).
    pub mix: (u32, u32),
    /// Every acknowledged store, warm-up included (kept for `flow`).
    pub acked: Option<Mutex<Vec<Acked>>>,
    /// Where sampled acknowledgements go to have their replication timed.
    pub probes: Mutex<Option<SyncSender<Acked>>>,
    /// Every how many acknowledgements one is probed.
    pub probe_every: u64,
    /// Most acknowledgements probed: probes are retrieves, load of their own.
    pub probe_limit: u64,
}

/// Builds the client configuration a run uses.
#[must_use]
pub fn client_config(write_quorum: usize, swarm_size: usize) -> ClientConfig {
    ClientConfig {
        write_quorum,
        swarm_size,
        ..ClientConfig::default()
    }
}

/// Connects a client for one worker, over the shared pool.
pub fn connect(seed: &str, config: &ClientConfig, http: &Http) -> Result<Client, String> {
    Client::with_transport(seed, config.clone(), http.clone())
        .map(|c| c.with_ttl_ms(3_600_000))
        .map_err(|e| e.0)
}

/// The shared connection pool for `workers` threads, over `links`.
#[must_use]
pub fn pool(workers: usize, links: Links) -> Http {
    Http::with_pool(REQUEST_TIMEOUT, workers.max(1), links)
}

/// A worker of the `store`, `flow` and `mixed` scenarios: takes operations from the
/// plan until it ends.
pub fn store_worker(client: &Client, shared: &Shared, plan: &Plan, recorder: &Recorder) {
    let mut cursors: HashMap<usize, FetchCursors> = HashMap::new();
    let (stores, retrieves) = shared.mix;
    let round = u64::from(stores) + u64::from(retrieves);
    while let Some(ticket) = plan.take() {
        let mut choices = Choices::for_op(shared.seed, ticket.index);
        let who = choices.below(shared.recipients.len());
        if ticket.index % round.max(1) < u64::from(stores) {
            let outcome = store_one(client, shared, &ticket, who, &mut choices);
            recorder.record(&ticket, "store", None, &outcome);
        } else {
            let kept = cursors.remove(&who).unwrap_or_default();
            let (kept, result) = client.fetch_op(&shared.recipients[who].identity, kept, None);
            cursors.insert(who, kept);
            let outcome = result.map(|_| ()).map_err(|e| failure_label(&e));
            recorder.record(&ticket, "retrieve", None, &outcome);
        }
    }
}

fn store_one(
    client: &Client,
    shared: &Shared,
    ticket: &Ticket,
    who: usize,
    choices: &mut Choices,
) -> Result<(), String> {
    let recipient = &shared.recipients[who];
    let mut text = vec![0u8; shared.payload];
    choices.fill(&mut text);
    // The operation number makes every body distinct, so every store is a new message.
    let tag = format!("ghost-bench {} {}", shared.seed, ticket.index);
    let n = tag.len().min(text.len());
    text[..n].copy_from_slice(&tag.as_bytes()[..n]);
    let mut bodies =
        seal_message(&recipient.contact, &text).map_err(|_| "cannot_seal".to_owned())?;
    // A message longer than one packet is stored as fragments, all acknowledged before
    // the message is; each fragment is a store of its own to check afterwards.
    let deliveries = if bodies.len() == 1 {
        let body = bodies.pop().expect("one body");
        vec![
            client
                .store_op(&recipient.contact.recipient, body)
                .map_err(|e| failure_label(&e))?,
        ]
    } else {
        client
            .store_parts(&recipient.contact.recipient, bodies)
            .map_err(|e| failure_label(&e))?
    };
    let Some(all) = &shared.acked else {
        return Ok(());
    };
    let mut all = all.lock().expect("no panics while held");
    for delivery in deliveries {
        let acked = Acked {
            recipient: who,
            hash: delivery.ack.hash,
            receipts: delivery.ack.receipts.iter().map(|r| r.node).collect(),
            at: Instant::now(),
        };
        let count = all.len() as u64;
        let every = shared.probe_every.max(1);
        if count.is_multiple_of(every)
            && count / every < shared.probe_limit
            && let Some(probes) = &*shared.probes.lock().expect("no panics while held")
        {
            // A full queue skips the sample: a delayed probe would time the queue.
            match probes.try_send(acked.clone()) {
                Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
        all.push(acked);
    }
    Ok(())
}

/// Replication delays measured by the probes.
pub struct ProbeResults {
    /// Acknowledgement to presence on every member that gave no receipt, microseconds.
    pub delay_us: Histogram<u64>,
    /// Messages probed.
    pub samples: u64,
    /// Probed messages not seen on every member before the deadline.
    pub unconfirmed: u64,
}

/// How often a probe asks a member again.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a probe waits for a copy before giving up on it.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// A probe thread: for each sampled acknowledgement, asks every swarm member that gave no
/// receipt (signed retrieves through 3-hop paths, `PROBE_INTERVAL` apart) until the
/// message is there or `PROBE_DEADLINE` passes.
pub fn probe_worker(
    client: &Client,
    shared: &Shared,
    queue: &Mutex<Receiver<Acked>>,
    results: &Mutex<ProbeResults>,
) {
    loop {
        let next = queue.lock().expect("no panics while held").recv();
        let Ok(acked) = next else { return };
        let recipient = &shared.recipients[acked.recipient];
        let Ok(swarm) = client.swarm(&recipient.contact.recipient) else {
            continue;
        };
        let mut confirmed = true;
        for member in swarm
            .iter()
            .filter(|m| !acked.receipts.contains(&m.node_id()))
        {
            let found = loop {
                let (_, result) = client.fetch_op(
                    &recipient.identity,
                    FetchCursors::default(),
                    Some(member.node_id()),
                );
                if result.is_ok_and(|f| f.messages.iter().any(|m| m.hash == acked.hash)) {
                    break true;
                }
                if acked.at.elapsed() >= PROBE_DEADLINE {
                    break false;
                }
                std::thread::sleep(PROBE_INTERVAL);
            };
            confirmed &= found;
        }
        let mut r = results.lock().expect("no panics while held");
        r.samples += 1;
        if confirmed {
            record_into(&mut r.delay_us, acked.at.elapsed());
        } else {
            r.unconfirmed += 1;
        }
    }
}

impl ProbeResults {
    /// No samples yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            delay_us: new_histogram(),
            samples: 0,
            unconfirmed: 0,
        }
    }
}

impl Default for ProbeResults {
    fn default() -> Self {
        Self::new()
    }
}

/// One `GET` target of the `http` scenario.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// `host:port`.
    pub address: String,
    /// `/health` or `/metrics`.
    pub path: String,
    /// The public listener (pinned) or the admin one.
    pub listening: Listening,
}

impl HttpTarget {
    /// How the report names it.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{} {}", self.address, self.path)
    }
}

/// A worker of the `http` scenario: `GET`s the targets in turn, one per operation.
pub fn http_worker(http: &Http, targets: &Arc<Vec<HttpTarget>>, plan: &Plan, recorder: &Recorder) {
    while let Some(ticket) = plan.take() {
        let index = usize::try_from(ticket.index % targets.len() as u64).expect("below len");
        let target = &targets[index];
        let outcome = match http.get_status(&target.address, &target.path, target.listening) {
            Ok(200..=299) => Ok(()),
            Ok(status) => Err(format!("http_{status}")),
            Err(label) => Err(label.to_owned()),
        };
        recorder.record(&ticket, "http", Some(&target.name()), &outcome);
    }
}

/// A short label for why an operation failed, for the report's failure table.
#[must_use]
pub fn failure_label(e: &CoreError) -> String {
    match e {
        CoreError::NoDirectory { .. } => "no_directory".into(),
        CoreError::TooFewNodes { .. } => "too_few_nodes".into(),
        CoreError::Refused { error, .. } => format!("refused_{}", request_error_label(*error)),
        CoreError::BodyTooLarge { .. } => "body_too_large".into(),
        CoreError::PowUnsolved { .. } => "pow_unsolved".into(),
        CoreError::BadConfig(_) => "bad_config".into(),
        // The cause is what matters; which fragment it hit is not.
        CoreError::PartFailed { error, .. } => failure_label(error),
        CoreError::Failed { attempts } => match attempts.last().map(|a| &a.problem) {
            None => "failed".into(),
            Some(Problem::FirstHopUnreachable { error, .. }) => {
                format!("first_hop_{}", snake(&format!("{error:?}")))
            }
            Some(Problem::HopFailed { failure, .. }) => {
                format!("hop_failed_{}", snake(&format!("{failure:?}")))
            }
            Some(p) => snake(&format!("{p:?}")),
        },
        _ => "other".into(),
    }
}

fn request_error_label(e: RequestError) -> String {
    snake(&format!("{e:?}"))
}

/// `SomeVariant(…)` or `SomeVariant { … }` → `some_variant`; `Status(503)` →
/// `status_503`; `Malformed(BadLength)` → `malformed_bad_length`.
fn snake(debug: &str) -> String {
    let head = debug.split([' ', '{']).next().unwrap_or_default();
    let mut out = String::new();
    for c in head.chars() {
        match c {
            ')' => break,
            '(' => out.push('_'),
            c if c.is_ascii_uppercase() => {
                if !out.is_empty() && !out.ends_with('_') {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    out.trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_core::client::TransportError;

    #[test]
    fn failure_labels_are_short_and_name_the_cause() {
        assert_eq!(snake("Timeout"), "timeout");
        assert_eq!(snake("Status(503)"), "status_503");
        assert_eq!(snake("QuorumNotReached"), "quorum_not_reached");
        assert_eq!(
            snake("BodyHashMismatch { claimed: 1 }"),
            "body_hash_mismatch"
        );
        let e = CoreError::Failed {
            attempts: vec![proto_core::client::AttemptFailure {
                member: NodeId([1; 32]),
                problem: Problem::FirstHopUnreachable {
                    address: proto_core::keys::Address::new("127.0.0.1:1").unwrap(),
                    error: TransportError::Status(429),
                },
            }],
        };
        assert_eq!(failure_label(&e), "first_hop_status_429");
        assert_eq!(
            failure_label(&CoreError::TooFewNodes {
                nodes: 2,
                needed: 3
            }),
            "too_few_nodes"
        );
    }

    #[test]
    fn recipients_are_the_same_for_the_same_seed() {
        let a = recipients(5, 3);
        let b = recipients(5, 3);
        let c = recipients(6, 3);
        let ids = |r: &[Recipient]| r.iter().map(|x| x.contact.recipient).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&c));
        assert_ne!(a[0].contact.recipient, a[1].contact.recipient);
    }
}
