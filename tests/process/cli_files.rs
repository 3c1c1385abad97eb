//! `ghost send --file PATH`, `ghost send -` (standard input) and `ghost fetch --out DIR`
//! against a real network: any bytes go in, the same bytes come out as one file per
//! message (readable by the owner only), what a stranger forged into the inbox never
//! becomes a file, a second fetch writes nothing new, and bad input gets a message that
//! says what to fix.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

mod common;
use common::{Runtime, run_ghost, run_ghost_with_input, wait_for};
use ghost_cli::client;
use proto_core::fragment::MAX_MESSAGE_LEN;
use proto_core::sealed::Contact;

const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ghost keygen --out PATH`: the contact it prints.
fn keygen(path: &Path) -> String {
    let out = run_ghost(&["keygen", "--out", path.to_str().unwrap()], CLI_TIMEOUT);
    assert!(out.status.success(), "keygen failed: {out:?}");
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("contact:"))
        .map(|c| c.trim().to_owned())
        .expect("keygen prints the contact")
}

/// The `*.msg` files of `dir`, by name.
fn messages_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable message"))
        })
        .collect()
}

/// Fetches into `out` until it holds `files` messages and the fetches reported
/// `unopened` messages that did not open; returns the files and everything printed.
fn fetch_until(
    seed: &str,
    key: &str,
    out: &Path,
    files: usize,
    unopened: usize,
) -> (BTreeMap<String, Vec<u8>>, String) {
    let out_arg = out.to_str().unwrap();
    let mut printed = String::new();
    let found = wait_for(
        "ghost fetch --out writes the messages",
        FETCH_TIMEOUT,
        || {
            let fetched = run_ghost(
                &["fetch", "--via", seed, "--key", key, "--out", out_arg],
                CLI_TIMEOUT,
            );
            assert!(
                fetched.status.success(),
                "fetch failed: {}{}",
                text(&fetched.stdout),
                text(&fetched.stderr)
            );
            printed.push_str(&text(&fetched.stdout));
            let found = messages_in(out);
            let refused = printed.matches("could not be opened").count();
            (found.len() >= files && refused >= unopened).then_some(found)
        },
    );
    (found, printed)
}

#[test]
fn files_and_stdin_in_byte_identical_files_out() {
    let root = tempfile::tempdir().unwrap();
    let net = common::start_network(Runtime::Mixed, root.path(), 3);
    let seed = net.nodes[0].address.clone();
    let key_path = root.path().join("alice.key");
    let key = key_path.to_str().unwrap();
    let contact = keygen(&key_path);

    // Every byte value, not UTF-8, near the one-packet limit.
    let binary: Vec<u8> = (0..1300u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = root.path().join("binary.bin");
    std::fs::write(&file, &binary).unwrap();
    let sent = run_ghost(
        &[
            "send",
            "--via",
            &seed,
            "--to",
            &contact,
            "--file",
            file.to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert!(sent.status.success(), "send --file failed: {sent:?}");
    assert!(
        text(&sent.stdout).contains("delivered 1300 bytes"),
        "{sent:?}"
    );

    let piped = b"from standard input\0\xff\n".to_vec();
    let sent = run_ghost_with_input(
        &["send", "--via", &seed, "--to", &contact, "-"],
        Some(&piped),
        CLI_TIMEOUT,
    );
    assert!(sent.status.success(), "send - failed: {sent:?}");

    // Anyone may store to a recipient: a stranger writes a message sealed to someone
    // else and bytes sealed to nobody into alice's inbox. Neither opens with her key, so
    // neither becomes a file; both are reported, and the cursors move past them.
    let alice = Contact::parse(&contact).expect("keygen printed a contact");
    let bob = Contact::parse(&keygen(&root.path().join("bob.key"))).expect("a contact");
    let stranger = client::Client::connect(&seed).expect("the directory");
    let forged = [
        client::seal_for(&bob, b"sealed to bob, stored for alice").expect("fits"),
        vec![0x5a; 512],
    ];
    for body in &forged {
        stranger
            .store(&alice.recipient, body)
            .expect("the swarm stores any body for any recipient");
    }

    let out = root.path().join("inbox").join("alice");
    let (found, printed) = fetch_until(&seed, key, &out, 2, forged.len());
    assert_eq!(
        printed.matches("could not be opened").count(),
        forged.len(),
        "each forged message is reported once: {printed}"
    );
    let mut bodies: Vec<&Vec<u8>> = found.values().collect();
    bodies.sort_by_key(|b| b.len());
    assert_eq!(
        bodies,
        [&piped, &binary],
        "the files hold exactly what was sent"
    );
    for name in found.keys() {
        let hash = name.strip_suffix(".msg").unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700, "the --out directory is private");
        for name in found.keys() {
            assert_eq!(mode(&out.join(name)), 0o600, "{name} is private");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".msg"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // The cursors moved past both: a second fetch writes nothing and removes nothing.
    assert_a_second_fetch_finds_nothing(&seed, key, &out, &found);
}

#[test]
fn large_messages_from_files_and_stdin_come_back_whole() {
    let root = tempfile::tempdir().unwrap();
    let net = common::start_network(Runtime::Mixed, root.path(), 3);
    let seed = net.nodes[0].address.clone();
    let key_path = root.path().join("alice.key");
    let key = key_path.to_str().unwrap();
    let contact = keygen(&key_path);

    let pattern = |len: usize, salt: usize| -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + salt) % 251) as u8).collect()
    };
    let mut sent = Vec::new();
    for (n, len) in [1024, 16 * 1024, 64 * 1024, MAX_MESSAGE_LEN]
        .into_iter()
        .enumerate()
    {
        let message = pattern(len, n);
        let file = root.path().join(format!("m{len}.bin"));
        std::fs::write(&file, &message).unwrap();
        let args = [
            "send",
            "--via",
            &seed,
            "--to",
            &contact,
            "--file",
            file.to_str().unwrap(),
        ];
        let out = run_ghost(&args, CLI_TIMEOUT);
        assert!(
            out.status.success(),
            "send --file of {len} bytes failed: {out:?}"
        );
        let said = text(&out.stdout);
        assert!(said.contains(&format!("delivered {len} bytes")), "{said}");
        if len > 1340 {
            assert!(
                said.contains(" fragments, each through its own 3-hop path"),
                "{said}"
            );
        }
        sent.push(message);
    }
    for (n, len) in [1024, 16 * 1024, 64 * 1024, MAX_MESSAGE_LEN]
        .into_iter()
        .enumerate()
    {
        let message = pattern(len, 10 + n);
        let args = ["send", "--via", &seed, "--to", &contact, "-"];
        let out = run_ghost_with_input(&args, Some(&message), CLI_TIMEOUT);
        assert!(
            out.status.success(),
            "send - of {len} bytes failed: {out:?}"
        );
        sent.push(message);
    }

    let out = root.path().join("inbox");
    let (found, printed) = fetch_until(&seed, key, &out, sent.len(), 0);
    assert!(!printed.contains("could not be opened"), "{printed}");
    assert!(!printed.contains("incomplete"), "{printed}");
    let mut got: Vec<&Vec<u8>> = found.values().collect();
    got.sort();
    let mut want: Vec<&Vec<u8>> = sent.iter().collect();
    want.sort();
    assert!(
        got == want,
        "the files hold exactly the messages sent, once each"
    );
    // Fragmented messages are named by their 32-digit message id, the 1 KiB ones by their
    // 64-digit store hash.
    let mut name_lengths: Vec<usize> = found.keys().map(|n| n.len() - ".msg".len()).collect();
    name_lengths.sort_unstable();
    assert_eq!(name_lengths, [32, 32, 32, 32, 32, 32, 64, 64]);

    // Everything was handed out: nothing waits, and a second fetch has nothing new.
    assert_a_second_fetch_finds_nothing(&seed, key, &out, &found);
}

/// `ghost fetch --out OUT` again finds nothing new, and `OUT` still holds exactly `found`.
fn assert_a_second_fetch_finds_nothing(
    seed: &str,
    key: &str,
    out: &Path,
    found: &BTreeMap<String, Vec<u8>>,
) {
    let out_dir = out.to_str().unwrap();
    let args = ["fetch", "--via", seed, "--key", key, "--out", out_dir];
    let again = run_ghost(&args, CLI_TIMEOUT);
    assert!(again.status.success(), "{again:?}");
    assert!(text(&again.stdout).contains("no new messages"), "{again:?}");
    assert_eq!(&messages_in(out), found);
}

/// `ghost send --file PATH` with no node at the seed: what it says before any network.
fn send_file_to_nowhere(contact: &str, path: &Path) -> Output {
    let path = path.to_str().unwrap();
    let args = [
        "send",
        "--via",
        "127.0.0.1:9",
        "--to",
        contact,
        "--file",
        path,
    ];
    run_ghost(&args, CLI_TIMEOUT)
}

#[test]
fn bad_files_are_refused_with_what_to_fix() {
    let root = tempfile::tempdir().unwrap();
    let key_path = root.path().join("bob.key");
    let contact = keygen(&key_path);

    // Refused before any network is asked: no node listens at the seed.
    let missing = root.path().join("missing.txt");
    let out = send_file_to_nowhere(&contact, &missing);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("cannot read --file {}", missing.display())),
        "{out:?}"
    );

    // One byte over the documented maximum.
    let large = root.path().join("large.bin");
    std::fs::write(&large, vec![b'x'; MAX_MESSAGE_LEN + 1]).unwrap();
    let out = send_file_to_nowhere(&contact, &large);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!(
            "the message is {} bytes; at most {MAX_MESSAGE_LEN} (128 KiB) can be sent",
            MAX_MESSAGE_LEN + 1
        )),
        "{out:?}"
    );

    let both = run_ghost(
        &[
            "send",
            "--to",
            &contact,
            "--file",
            large.to_str().unwrap(),
            "text",
        ],
        CLI_TIMEOUT,
    );
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    assert!(
        text(&both.stderr).contains("cannot be used with"),
        "{both:?}"
    );

    // --out naming a file, not a directory.
    let not_a_dir = root.path().join("plain-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let out = run_ghost(
        &[
            "fetch",
            "--via",
            "127.0.0.1:9",
            "--key",
            key_path.to_str().unwrap(),
            "--out",
            not_a_dir.to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot create --out directory"),
        "{out:?}"
    );
}
