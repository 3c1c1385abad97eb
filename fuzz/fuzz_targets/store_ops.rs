//! Random operation sequences against the message store and a simple model, with the
//! fuzz input driving the clock: both must agree on every observable result.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

use proto_core::store::{
    MemoryBackend, MessageBackend, MessageStore, NewMessage, StoreConfig, StoreError,
    message_hash,
};
use proto_core::{Namespace, RecipientId, Timestamp};

#[derive(Arbitrary, Debug)]
enum Op {
    Store { who: u8, body: u8, ttl: u16 },
    Retrieve { who: u8, limit: u8 },
    Delete { who: u8, body: u8 },
    Expire { max: u8 },
    Tick { ms: u16 },
    Commit,
    Crash,
}

fn r(who: u8) -> RecipientId {
    RecipientId([who % 4; 32])
}

fuzz_target!(|ops: Vec<Op>| {
    let config = StoreConfig {
        recipient_max_messages: 20,
        ..StoreConfig::default()
    };
    let mut store = MessageStore::open(MemoryBackend::default(), config.clone()).expect("opens");
    // Model: (who, body, expiry, committed) in insertion order, and the durable copy.
    let mut live: Vec<(u8, u8, Timestamp, bool)> = Vec::new();
    let mut durable = live.clone();
    // Tombstones: (who, body) → until; and the durable copy.
    let mut tombs: BTreeMap<(u8, u8), Timestamp> = BTreeMap::new();
    let mut durable_tombs = tombs.clone();
    let mut now = Timestamp(1_000_000);
    for op in ops.into_iter().take(200) {
        match op {
            Op::Store { who, body, ttl } => {
                let who = who % 4;
                let expiry = now.plus_millis(1 + u64::from(ttl));
                let count = live.iter().filter(|(w, ..)| *w == who).count();
                let exists = live.iter().any(|(w, b, ..)| (*w, *b) == (who, body));
                let deleted = tombs.get(&(who, body)).is_some_and(|until| *until > now);
                let result = store.insert(
                    NewMessage::unsigned(r(who), Namespace::DIRECT, &[body], now, expiry),
                    now,
                );
                if deleted {
                    assert_eq!(result.map(|_| ()), Err(StoreError::Deleted));
                    continue;
                }
                match result {
                    Ok(ins) => {
                        assert_eq!(ins.new, !exists);
                        if ins.new {
                            live.push((who, body, expiry, false));
                        }
                    }
                    Err(_) => assert!(!exists && count >= 20, "refused a store the model accepts"),
                }
            }
            Op::Retrieve { who, limit } => {
                let who = who % 4;
                let limit = usize::from(limit % 8) + 1;
                let mut after = 0;
                let mut got = Vec::new();
                loop {
                    let page = store
                        .retrieve(&r(who), Namespace::DIRECT, after, limit, now)
                        .expect("memory");
                    assert!(page.messages.len() <= limit);
                    got.extend(page.messages.iter().map(|m| m.body[0]));
                    after = page.messages.last().map_or(after, |m| m.seq);
                    if !page.more {
                        break;
                    }
                }
                let expected: Vec<u8> = live
                    .iter()
                    .filter(|(w, _, e, c)| *w == who && *e > now && *c)
                    .map(|(_, b, ..)| *b)
                    .collect();
                assert_eq!(got, expected);
            }
            Op::Delete { who, body } => {
                let who = who % 4;
                let h = message_hash(&r(who), Namespace::DIRECT, &[body]);
                let n = store
                    .delete_hashes(&r(who), Namespace::DIRECT, [h].into_iter(), now)
                    .expect("memory");
                let before = live.len();
                let until = live
                    .iter()
                    .find(|(w, b, ..)| (*w, *b) == (who, body))
                    .map_or(now.plus_millis(config.max_ttl_ms + 60_000), |m| m.2);
                tombs.insert((who, body), until);
                live.retain(|(w, b, ..)| (*w, *b) != (who, body));
                assert_eq!(n, before - live.len());
            }
            Op::Expire { max } => {
                let due = live.iter().filter(|(_, _, e, _)| *e <= now).count();
                let n = store.expire(now, usize::from(max)).expect("memory");
                assert_eq!(n, due.min(usize::from(max)));
                live.retain(|(w, b, ..)| {
                    store
                        .backend()
                        .get(&message_hash(&r(*w), Namespace::DIRECT, &[*b]))
                        .ok()
                        .flatten()
                        .is_some()
                });
            }
            Op::Tick { ms } => now = now.plus_millis(u64::from(ms)),
            Op::Commit => {
                store.backend_mut().commit();
                live.iter_mut().for_each(|e| e.3 = true);
                durable = live.clone();
                durable_tombs = tombs.clone();
            }
            Op::Crash => {
                let mut backend = std::mem::take(store.backend_mut());
                backend.crash();
                store = MessageStore::open(backend, config.clone()).expect("reopens");
                live = durable.clone();
                tombs = durable_tombs.clone();
            }
        }
        assert_eq!(store.totals().0, live.len() as u64);
    }
});
