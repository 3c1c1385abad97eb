//! Multi-node behaviour by deterministic simulation: real node state machines, virtual
//! time, an in-memory network with delay, loss, partitions and crashes.
#![cfg(feature = "sim")]

use std::collections::{BTreeMap, BTreeSet};

use proto_core::keys::IdentityKey;
use proto_core::request::{Request, RequestError, Response, StoreRequest};
use proto_core::sim::{ClientOutcome, Sim, SimConfig};
use proto_core::store::message_hash;
use proto_core::{MessageHash, Namespace};

/// Virtual time for the network to discover itself through the seed.
const SETTLE_MS: u64 = 40_000;
/// The same for the mixed workload, whose nodes all announce to the seed at once.
const MIXED_SETTLE_MS: u64 = 20_000;

fn owner(i: u8) -> IdentityKey {
    IdentityKey::from_seed(&[i.wrapping_add(100); 32])
}

fn settled(nodes: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(
        SimConfig {
            nodes,
            ..SimConfig::default()
        },
        seed,
    );
    sim.run_for(SETTLE_MS);
    sim
}

fn hashes_at(sim: &mut Sim, at: usize, who: &IdentityKey) -> Option<BTreeSet<MessageHash>> {
    sim.retrieve_all(at, who)
        .ok()
        .map(|ms| ms.into_iter().map(|(_, h, _)| h).collect())
}

#[test]
fn three_hop_store_is_acknowledged_and_retrievable_from_another_swarm_member() {
    let mut sim = settled(5, 1);
    let alice = owner(1);
    let swarm = sim.swarm_of(&alice.recipient_id());
    assert_eq!(swarm.len(), 3);
    let delivery = sim
        .store(swarm[0], &alice, b"hello alice")
        .expect("acknowledged");
    assert!(delivery.ack.receipts.len() >= 2);
    assert_eq!(
        delivery.path.last().map(|d| d.node_id()),
        Some(sim.node_ids()[swarm[0]]),
        "the path ends at the member asked for first"
    );
    sim.run_for(2_000);
    let got = sim
        .retrieve_all(swarm[1], &alice)
        .expect("retrieve answered");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, b"hello alice");
    assert_eq!(
        got[0].1,
        message_hash(&alice.recipient_id(), Namespace::DIRECT, b"hello alice")
    );
}

#[test]
fn non_member_answers_with_a_redirect_to_the_swarm() {
    let mut sim = settled(5, 2);
    let bob = owner(2);
    let swarm = sim.swarm_of(&bob.recipient_id());
    let outsider = (0..5)
        .find(|i| !swarm.contains(i))
        .expect("5 nodes, swarm of 3");
    let relays: Vec<usize> = (0..5).filter(|&i| i != outsider).take(2).collect();
    let request = Request::Store(StoreRequest {
        recipient: bob.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: sim.now(),
        ttl_ms: 3_600_000,
        pow_nonce: 0,
        body: b"misrouted",
    });
    let op = sim.send_via(&[relays[0], relays[1], outsider], &request, None);
    let answer = sim.wait(op, 30_000);
    let ClientOutcome::Response(Response::Redirect { swarm: members }) = answer else {
        panic!("expected a redirect, got {answer:?}");
    };
    let ids = sim.node_ids();
    let expected: BTreeSet<_> = swarm.iter().map(|&i| ids[i]).collect();
    let got: BTreeSet<_> = members.iter().map(|d| d.node_id()).collect();
    assert_eq!(got, expected);
}

#[test]
fn client_learns_the_proof_of_work_difficulty_from_the_directory_and_pays_it() {
    let mut config = SimConfig {
        nodes: 5,
        ..SimConfig::default()
    };
    config.node.pow_difficulty = 10;
    let mut sim = Sim::new(config, 9);
    sim.run_for(SETTLE_MS);
    let dave = owner(4);
    let swarm = sim.swarm_of(&dave.recipient_id());

    // A store without work is refused: the difficulty is real.
    let relays: Vec<usize> = (0..5).filter(|i| *i != swarm[0]).take(2).collect();
    let unpaid = Request::Store(StoreRequest {
        recipient: dave.recipient_id(),
        namespace: Namespace::DIRECT,
        timestamp: sim.now(),
        ttl_ms: 3_600_000,
        pow_nonce: 0,
        body: b"no work done",
    });
    let op = sim.send_via(&[relays[0], relays[1], swarm[0]], &unpaid, None);
    let answer = sim.wait(op, 30_000);
    assert!(
        matches!(
            answer,
            ClientOutcome::Response(Response::Refused(RequestError::InsufficientPow))
        ),
        "expected insufficient_pow, got {answer:?}"
    );

    let delivery = sim
        .store(swarm[0], &dave, b"paid for")
        .expect("the client found the difficulty and solved it");
    assert!(delivery.ack.receipts.len() >= 2);
}

#[test]
fn swarm_member_crashed_after_the_ack_loses_nothing_acknowledged() {
    let mut sim = settled(5, 3);
    let carol = owner(3);
    let swarm = sim.swarm_of(&carol.recipient_id());
    let mut acked = Vec::new();
    for i in 0..10u8 {
        let body = [i; 40];
        if sim.store(swarm[0], &carol, &body).is_ok() {
            acked.push(message_hash(
                &carol.recipient_id(),
                Namespace::DIRECT,
                &body,
            ));
        }
    }
    assert_eq!(acked.len(), 10);
    // Crash the member that accepted the stores: only its durable writes survive.
    sim.crash(swarm[0]);
    sim.run_for(1_000);
    let elsewhere = hashes_at(&mut sim, swarm[1], &carol).expect("answered");
    let restarted = {
        sim.restart(swarm[0]);
        sim.run_for(SETTLE_MS);
        hashes_at(&mut sim, swarm[0], &carol).expect("answered")
    };
    for h in &acked {
        assert!(
            elsewhere.contains(h) || restarted.contains(h),
            "acknowledged message lost"
        );
        assert!(
            restarted.contains(h),
            "restarted node did not recover or re-converge"
        );
    }
}

#[test]
fn partitioned_node_converges_after_healing() {
    let mut sim = settled(5, 4);
    let dave = owner(4);
    let swarm = sim.swarm_of(&dave.recipient_id());
    sim.partition(swarm[2]);
    for i in 0..5u8 {
        sim.store(swarm[0], &dave, &[i; 10])
            .expect("W=2 still reachable");
    }
    assert_eq!(
        hashes_at(&mut sim, swarm[0], &dave)
            .expect("answered")
            .len(),
        5
    );
    sim.heal();
    sim.run_for(2 * 30_000 + 10_000);
    let healed = hashes_at(&mut sim, swarm[2], &dave).expect("answered");
    assert_eq!(healed.len(), 5, "the partitioned member did not converge");
}

#[test]
fn joined_node_receives_its_share() {
    let mut sim = settled(5, 5);
    let owners: Vec<IdentityKey> = (10..40).map(owner).collect();
    let mut stored: BTreeMap<usize, MessageHash> = BTreeMap::new();
    for (k, o) in owners.iter().enumerate() {
        let swarm = sim.swarm_of(&o.recipient_id());
        let body = [k as u8; 16];
        sim.store(swarm[0], o, &body).expect("acknowledged");
        stored.insert(k, message_hash(&o.recipient_id(), Namespace::DIRECT, &body));
    }
    let newcomer = sim.add_node();
    sim.run_for(SETTLE_MS + 3 * 30_000);
    let mut share = 0;
    for (k, o) in owners.iter().enumerate() {
        if sim.swarm_of(&o.recipient_id()).contains(&newcomer) {
            share += 1;
            let got = hashes_at(&mut sim, newcomer, o).expect("answered");
            assert!(
                got.contains(&stored[&k]),
                "newcomer lacks a message of its swarm"
            );
        }
    }
    assert!(
        share > 0,
        "with 6 nodes and K=3 the newcomer serves about half the owners"
    );
}

/// One random mixed workload; returns a description of the first violated property.
/// With `GHOST_SIM_TRACE` set, a failing run prints its last events.
fn mixed_workload(seed: u64) -> Result<(), String> {
    let mut sim = Sim::new(mixed_config(seed), seed);
    if std::env::var_os("GHOST_SIM_TRACE").is_some() {
        sim.enable_trace();
    }
    let result = run_mixed(&mut sim, seed);
    if result.is_err() && !sim.trace().is_empty() {
        let t = sim.trace();
        eprintln!("{}", t[t.len().saturating_sub(400)..].join("\n"));
    }
    result
}

fn mixed_config(seed: u64) -> SimConfig {
    let mut config = SimConfig {
        nodes: 5,
        loss_per_mille: (seed % 3) as u32 * 10,
        ..SimConfig::default()
    };
    // Background chatter (probes, gossip) is slowed to keep 10,000 runs affordable; the
    // store, replication and anti-entropy timers keep their defaults.
    config.node.directory.probe_interval_ms = 20_000;
    config.node.gossip_interval_ms = 30_000;
    config
}

fn run_mixed(sim: &mut Sim, seed: u64) -> Result<(), String> {
    sim.run_for(MIXED_SETTLE_MS);
    let owners: Vec<IdentityKey> = (0..3).map(|i| owner(i + (seed % 50) as u8)).collect();
    let mut acked: Vec<(usize, MessageHash)> = Vec::new();
    let mut crashed: Option<usize> = None;
    for step in 0..8u64 {
        let who = (seed.wrapping_mul(31).wrapping_add(step) % owners.len() as u64) as usize;
        let o = &owners[who];
        let swarm = sim.swarm_of(&o.recipient_id());
        let body = [(seed as u8) ^ (step as u8); 24];
        let entry = swarm[(step as usize) % swarm.len()];
        if let Ok(delivery) = sim.store(entry, o, &body) {
            if delivery.ack.hash != message_hash(&o.recipient_id(), Namespace::DIRECT, &body) {
                return Err(format!(
                    "step {step}: acknowledgement for the wrong message"
                ));
            }
            acked.push((who, delivery.ack.hash));
        }
        match (seed + step) % 5 {
            0 if crashed.is_none() => {
                let victim = swarm[1];
                sim.crash(victim);
                crashed = Some(victim);
            }
            1 => {
                if let Some(v) = crashed.take() {
                    sim.restart(v);
                }
            }
            _ => {}
        }
        sim.run_for(500);
    }
    if let Some(v) = crashed.take() {
        sim.restart(v);
    }
    // Long enough for a restarted node to rejoin and for two anti-entropy rounds.
    sim.run_for(MIXED_SETTLE_MS + 2 * 30_000 + 5_000);
    for (who, o) in owners.iter().enumerate() {
        let expected: BTreeSet<MessageHash> = acked
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, h)| *h)
            .collect();
        if expected.is_empty() {
            continue;
        }
        for member in sim.swarm_of(&o.recipient_id()) {
            let got = match sim.retrieve_all(member, o) {
                Ok(got) => got,
                Err(answer) => {
                    return Err(format!(
                        "owner {who}: node {member} did not answer a retrieve: {answer:?}"
                    ));
                }
            };
            let unique: BTreeSet<_> = got.iter().map(|(_, h, _)| *h).collect();
            if unique.len() != got.len() {
                return Err(format!(
                    "owner {who}: node {member} delivered a message twice"
                ));
            }
            let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
            if seqs.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("owner {who}: node {member} cursor order broken"));
            }
            if let Some(missing) = expected.iter().find(|h| !unique.contains(h)) {
                return Err(format!(
                    "owner {who}: node {member} lost acknowledged {missing:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Seeds to run: `GHOST_SIM_SEEDS` (default 10,000) starting at `GHOST_SIM_FIRST_SEED`.
fn seed_range() -> std::ops::Range<u64> {
    let n = std::env::var("GHOST_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let first = std::env::var("GHOST_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    first..first + n
}

#[test]
fn random_mixed_workloads_lose_no_acknowledged_message() {
    let seeds = seed_range();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let seeds: Vec<u64> = seeds.collect();
    let chunk = seeds.len().div_ceil(threads).max(1);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|&seed| {
                            mixed_workload(seed).err().map(|e| {
                                format!("seed {seed}: {e} (replay: GHOST_SIM_FIRST_SEED={seed} GHOST_SIM_SEEDS=1)")
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
