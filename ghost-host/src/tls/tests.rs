//! Handshakes over real loopback sockets (`rustls::StreamOwned` on `std::net::TcpStream`),
//! each bounded by socket timeouts; no sleeps.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use proto_core::TlsKeyHash;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, ServerConfig,
    ServerConnection, StreamOwned,
};
use sha2::{Digest, Sha256};

use super::der::ED25519_SPKI_PREFIX;
use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

fn key(seed: u64) -> TlsKey {
    TlsKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

fn socket(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream
}

/// What the server saw on its one connection.
#[derive(Debug)]
struct Served {
    client_hash: Option<[u8; 32]>,
    request: Vec<u8>,
}

/// Accepts one connection, completes the handshake, reads one request head and answers
/// it. Returns the handshake or I/O error instead if there is one.
fn serve_one(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<io::Result<Served>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept()?;
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, socket(sock));
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let client_hash = tls.conn.peer_certificates().and_then(peer_key_hash);
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            if tls.read(&mut byte)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            request.push(byte[0]);
        }
        tls.write_all(RESPONSE)?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(Served {
            client_hash,
            request,
        })
    });
    (addr, handle)
}

fn client_stream(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = socket(TcpStream::connect(addr).expect("connect"));
    // The name is ignored by the pinned verifier (and not sent: SNI is off).
    let conn = ClientConnection::new(config, ServerName::IpAddress(addr.ip().into()))
        .expect("client connection");
    StreamOwned::new(conn, sock)
}

/// Sends one HTTP/1.1 request and reads the response to the server's close_notify.
fn exchange(tls: &mut StreamOwned<ClientConnection, TcpStream>) -> io::Result<Vec<u8>> {
    tls.write_all(REQUEST)?;
    tls.flush()?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)?;
    Ok(response)
}

fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A server presenting `cert` but signing with `signer`'s key: an impostor that copied a
/// node's (public) certificate.
fn impostor_server(cert: CertificateDer<'static>, signer: &TlsKey) -> Arc<ServerConfig> {
    let certified = CertifiedKey::new(vec![cert], signer.signing_key());
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

#[test]
fn pinned_handshake_carries_http11() {
    let server_key = key(1);
    let config = server_config(&server_key, ClientAuth::Optional).expect("server config");
    let (addr, server) = serve_one(config);
    let mut tls = client_stream(
        client_config(server_key.key_hash(), None).expect("client config"),
        addr,
    );
    let response = exchange(&mut tls).expect("exchange");
    assert_eq!(response, RESPONSE);
    assert_eq!(tls.conn.alpn_protocol(), Some(ALPN_HTTP11));
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        tls.conn.negotiated_cipher_suite(),
        Some(TLS13_CHACHA20_POLY1305_SHA256)
    );
    assert_eq!(
        tls.conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519)
    );
    let served = server.join().expect("server thread").expect("server");
    assert_eq!(served.request, REQUEST);
    assert_eq!(served.client_hash, None, "no client certificate was sent");
}

#[test]
fn server_with_another_key_is_refused() {
    let (expected, actual) = (key(1), key(2));
    let (addr, server) = serve_one(server_config(&actual, ClientAuth::Optional).expect("server"));
    let mut tls = client_stream(
        client_config(expected.key_hash(), None).expect("client"),
        addr,
    );
    let err = exchange(&mut tls).expect_err("must be refused");
    let tls_err = rustls_error(&err).expect("a rustls error");
    assert!(
        matches!(tls_err, rustls::Error::InvalidCertificate(CertificateError::Other(o))
            if o.0.downcast_ref::<CertRejected>() == Some(&CertRejected::KeyHashMismatch)),
        "{tls_err:?}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");
    let server_err = server
        .join()
        .expect("thread")
        .expect_err("server sees the refusal");
    assert_eq!(
        rustls_error(&server_err),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::CertificateUnknown
        ))
    );
}

/// An interposed relay that terminates TLS with its own key (to read and forward the
/// traffic) is refused at its handshake, before the client sends anything.
#[test]
fn man_in_the_middle_with_own_certificate_is_refused() {
    let node = key(1);
    let mitm = key(66);
    let (node_addr, node_server) =
        serve_one(server_config(&node, ClientAuth::Optional).expect("server"));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let mitm_addr = listener.local_addr().expect("addr");
    let mitm_config = server_config(&mitm, ClientAuth::Optional).expect("mitm config");
    let relay = thread::spawn(move || -> io::Result<usize> {
        let (sock, _) = listener.accept()?;
        // The relay's own upstream leg to the real node works (the node does not care).
        let _upstream = socket(TcpStream::connect(node_addr)?);
        let mut tls = StreamOwned::new(
            ServerConnection::new(mitm_config).map_err(io::Error::other)?,
            socket(sock),
        );
        let mut buf = [0u8; 256];
        tls.read(&mut buf) // would be the client's plaintext request
    });
    let mut tls = client_stream(
        client_config(node.key_hash(), None).expect("client"),
        mitm_addr,
    );
    let err = exchange(&mut tls).expect_err("must be refused");
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{err:?}"
    );
    assert!(relay.join().expect("thread").is_err(), "relay read nothing");
    // The real node saw a bare TCP connection close, no handshake.
    assert!(node_server.join().expect("thread").is_err());
}

/// Copying the node's certificate does not help: the handshake signature must be made
/// with the certificate's key.
#[test]
fn impostor_replaying_the_genuine_certificate_is_refused() {
    let node = key(1);
    let impostor = key(66);
    let config = impostor_server(node.certificate().expect("cert"), &impostor);
    let (addr, server) = serve_one(config);
    let mut tls = client_stream(client_config(node.key_hash(), None).expect("client"), addr);
    let err = exchange(&mut tls).expect_err("must be refused");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
        ))
    );
    assert!(server.join().expect("thread").is_err());
}

#[test]
fn mutual_auth_exposes_client_key_hash() {
    let (server_key, client_key) = (key(1), key(2));
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let (addr, server) = serve_one(server_config(&server_key, auth).expect("server"));
        let config = client_config(server_key.key_hash(), Some(&client_key)).expect("client");
        let mut tls = client_stream(config, addr);
        assert_eq!(exchange(&mut tls).expect("exchange"), RESPONSE);
        let served = server.join().expect("thread").expect("server");
        assert_eq!(served.client_hash, Some(client_key.key_hash()), "{auth:?}");
    }
}

#[test]
fn required_client_auth_refuses_anonymous_client() {
    let server_key = key(1);
    let (addr, server) = serve_one(server_config(&server_key, ClientAuth::Required).expect("s"));
    let mut tls = client_stream(client_config(server_key.key_hash(), None).expect("c"), addr);
    // TLS 1.3: the client finishes first, then learns of the refusal from an alert.
    assert!(exchange(&mut tls).is_err());
    let err = server.join().expect("thread").expect_err("refused");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::NoCertificatesPresented)
    );
}

/// A client presenting another node's certificate without its key cannot claim that
/// node's hash on the server.
#[test]
fn client_replaying_another_certificate_is_refused() {
    let (server_key, victim, impostor) = (key(1), key(2), key(3));
    let (addr, server) = serve_one(server_config(&server_key, ClientAuth::Optional).expect("s"));
    let certified = CertifiedKey::new(
        vec![victim.certificate().expect("cert")],
        impostor.signing_key(),
    );
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
            server_key.key_hash(),
        )))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    let mut tls = client_stream(Arc::new(config), addr);
    assert!(exchange(&mut tls).is_err());
    let err = server.join().expect("thread").expect_err("refused");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
        ))
    );
}

/// Sends `bytes` over plain TCP to a TLS server; returns the server's error and what it
/// sent back before closing.
fn raw_to_tls_server(bytes: &[u8]) -> (io::Error, Vec<u8>) {
    let (addr, server) = serve_one(server_config(&key(1), ClientAuth::Optional).expect("s"));
    let mut sock = socket(TcpStream::connect(addr).expect("connect"));
    sock.write_all(bytes).expect("write");
    let mut reply = Vec::new();
    // The server closes after its alert; a reset instead of FIN is fine too.
    let _ = sock.read_to_end(&mut reply);
    let err = server
        .join()
        .expect("no panic")
        .expect_err("handshake fails");
    (err, reply)
}

#[test]
fn plaintext_http_to_tls_server_fails_handshake() {
    let (err, reply) = raw_to_tls_server(REQUEST);
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::InvalidMessage(_))),
        "{err:?}"
    );
    // Whatever came back is a TLS alert record, never HTTP.
    assert!(reply.is_empty() || reply[0] == 0x15, "{reply:?}");
}

/// A ClientHello as a TLS 1.2-only client sends it: legacy_version 1.2 and no
/// supported_versions extension, offering ECDHE-ECDSA/RSA-CHACHA20-POLY1305, X25519,
/// Ed25519.
fn tls12_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03]; // client_version TLS 1.2
    body.extend([0x42; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xcc, 0xa9, 0xcc, 0xa8]); // cipher suites
    body.extend([0x01, 0x00]); // null compression
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, // supported_groups: x25519
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x08, 0x07, // signature_algorithms: ed25519
    ];
    body.extend(u16::try_from(extensions.len()).expect("len").to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![0x01, 0x00]; // ClientHello, 24-bit length
    handshake.extend(u16::try_from(body.len()).expect("len").to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend(handshake);
    record
}

#[test]
fn tls12_only_client_is_refused() {
    let (err, reply) = raw_to_tls_server(&tls12_client_hello());
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::PeerIncompatible(_))),
        "{err:?}"
    );
    // A fatal alert record: type 21, then level 2 and protocol_version (70).
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert_eq!(reply.get(5..7), Some(&[2u8, 70][..]), "{reply:?}");
}

#[test]
fn certificate_and_key_round_trip() {
    let k = key(7);
    let cert = k.certificate().expect("cert");
    assert_eq!(cert, k.certificate().expect("cert"), "deterministic");
    assert_eq!(ed25519_key_from_cert(&cert), Some(k.public_key()));
    assert_eq!(
        peer_key_hash(std::slice::from_ref(&cert)),
        Some(k.key_hash())
    );
    assert_eq!(peer_key_hash(&[]), None);
    assert_eq!(
        k.key_hash(),
        <[u8; 32]>::from(Sha256::digest(k.public_key()))
    );
    // webpki's independent parse of the same certificate finds the same SPKI.
    let parsed = ParsedCertificate::try_from(&cert).expect("webpki parses it");
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend(k.public_key());
    assert_eq!(parsed.subject_public_key_info().as_ref(), &spki[..]);
    // Secret bytes and PKCS#8 reload to the same key, through the provider.
    assert_eq!(
        TlsKey::from_secret_bytes(&k.secret_bytes()).public_key(),
        k.public_key()
    );
    let loaded = provider()
        .key_provider
        .load_private_key(k.private_key_der())
        .expect("pkcs8 loads");
    assert_eq!(
        loaded.public_key().expect("spki").as_ref(),
        &spki[..],
        "loaded key matches"
    );
    let bad = rustls::pki_types::PrivateKeyDer::Pkcs8(vec![0x30, 0x00].into());
    assert!(provider().key_provider.load_private_key(bad).is_err());
}

#[test]
fn der_extraction_refuses_truncated_and_garbage_certificates() {
    let k = key(7);
    let cert = k.certificate().expect("cert");
    let der: &[u8] = cert.as_ref();
    // Every proper prefix, and the certificate with trailing bytes.
    for len in 0..der.len() {
        assert_eq!(ed25519_key_from_cert(&der[..len]), None, "prefix {len}");
    }
    let mut longer = der.to_vec();
    longer.push(0);
    assert_eq!(ed25519_key_from_cert(&longer), None);
    // Another algorithm OID in the SPKI (1.3.101.113 = Ed448).
    let spki_at = der
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)
        .expect("spki");
    let mut other_alg = der.to_vec();
    other_alg[spki_at + 8] = 0x71;
    assert_eq!(ed25519_key_from_cert(&other_alg), None);

    let mut rng = ChaCha20Rng::seed_from_u64(0x0067_686f_7374);
    for i in 0..400 {
        // Random bytes; half of them start like a certificate, to get past the first TLV.
        let len = (rng.next_u32() % 600) as usize;
        let mut garbage = vec![0u8; len];
        rng.fill_bytes(&mut garbage);
        if i % 2 == 0 && len > 4 {
            garbage[..4].copy_from_slice(&[0x30, 0x82, 0x01, 0x00]);
        }
        assert_eq!(ed25519_key_from_cert(&garbage), None, "garbage {i}");
    }
    for _ in 0..400 {
        // One corrupted byte: must not panic; a key can only come out unchanged or from
        // a flipped key byte.
        let mut bad = der.to_vec();
        let at = (rng.next_u32() as usize) % bad.len();
        bad[at] ^= 1 + (rng.next_u32() % 255) as u8;
        if let Some(found) = ed25519_key_from_cert(&bad) {
            let key_at = spki_at + ED25519_SPKI_PREFIX.len();
            assert!((key_at..key_at + 32).contains(&at) || found == k.public_key());
        }
    }
    // And the handshake verifiers refuse a garbage certificate the same way.
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(
        PinnedServerVerifier::new(k.key_hash())
            .verify_server_cert(
                &garbage,
                &[],
                &ServerName::IpAddress(IpAddr::from(Ipv4Addr::LOCALHOST).into()),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .is_err()
    );
}

/// One request from `dial` to a fresh one-connection server of `server`: the hash of the
/// key the server presented and of the certificate the client presented, or the client's
/// error.
fn dial_once(
    server: Arc<ServerConfig>,
    dial: Dial,
) -> Result<([u8; 32], Option<[u8; 32]>), io::Error> {
    let (addr, handle) = serve_one(server);
    let sock = socket(TcpStream::connect(addr).expect("connect"));
    let conn = ClientConnection::new(dial.config, dial.name).expect("client connection");
    let mut tls = StreamOwned::new(conn, sock);
    let answer = exchange(&mut tls);
    let served = handle.join().expect("thread");
    answer?;
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(peer_key_hash)
        .expect("the server presented a certificate");
    Ok((presented, served.expect("served").client_hash))
}

#[test]
fn during_an_overlap_a_node_presents_the_key_each_client_pinned_and_then_only_the_new_one() {
    let (old, new) = (key(40), key(41));
    let pin = |k: &TlsKey| Some(TlsKeyHash(k.key_hash()));
    let node = TlsLinks::for_node(old.duplicate()).expect("links");
    let server = node.server_config().expect("a node serves");
    let client = TlsLinks::for_client();
    let presented = |p| dial_once(server.clone(), client.dial(p)).map(|(key, _)| key);
    assert_eq!(presented(pin(&old)).expect("pinned"), old.key_hash());
    assert_eq!(presented(None).expect("unpinned"), old.key_hash());
    assert_eq!(node.generation(), 0);

    // Rotation: the new key for everyone, the old one for clients whose SNI names it.
    node.install(&new, Some(&old)).expect("installed");
    assert_eq!(node.generation(), 1);
    assert_eq!(node.key_hash(), pin(&new));
    assert_eq!(presented(pin(&old)).expect("old pin"), old.key_hash());
    assert_eq!(presented(pin(&new)).expect("new pin"), new.key_hash());
    assert_eq!(presented(None).expect("unpinned"), new.key_hash());

    // The node's own new links present the new certificate to the peers it calls.
    let peer = key(42);
    let peer_server = server_config(&peer, ClientAuth::Required).expect("peer");
    let (_, shown) = dial_once(peer_server, node.dial(pin(&peer))).expect("peer link");
    assert_eq!(shown, Some(new.key_hash()));

    // Installing the same keys again changes nothing.
    node.install(&new, Some(&old)).expect("installed");
    assert_eq!(node.generation(), 1);

    // End of the overlap: a client still pinned to the old key is refused by name.
    node.install(&new, None).expect("retired");
    let refused = presented(pin(&old)).expect_err("the old key is gone");
    assert!(
        matches!(rustls_error(&refused), Some(rustls::Error::InvalidCertificate(CertificateError::Other(o)))
            if o.0.downcast_ref::<CertRejected>() == Some(&CertRejected::KeyHashMismatch)),
        "{refused}"
    );
    assert_eq!(presented(pin(&new)).expect("new pin"), new.key_hash());
}

#[test]
fn a_pin_names_its_key_in_sni_and_a_seed_link_sends_no_name() {
    let pin = TlsKeyHash([0xab; 32]);
    assert_eq!(
        server_name(Some(pin)).to_str(),
        "abababababababab.pin.ghost"
    );
    assert!(client_config(pin.0, None).expect("pinned").enable_sni);
    assert!(!unpinned_client_config(None).expect("unpinned").enable_sni);
}
