//! TLS session resumption: on by default, off with `listener.session_resumption = false` or
//! `session_lifetime = "0s"`, and never past `session_lifetime` after the full handshake that
//! authenticated the session, whether by a TLS 1.2 session id or a chain of TLS 1.3 tickets.
//! A resumed session's certificate is checked again (tests/revocation.rs: revoked, expired).

mod support;

use rustls::version::{TLS12, TLS13};
use rustls::{HandshakeKind, SupportedProtocolVersion};
use std::time::{Duration, Instant};
use support::*;

/// Two connections from one client config (which keeps a session cache); how the second went.
async fn second_handshake(config: impl FnOnce(GatewayConfig) -> GatewayConfig) -> HandshakeKind {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(pki.config().standard([up.url()]))).await;
    let client = gw.client_config(Some(&pki.client("A81001")), &[b"http/1.1"]);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (kind, answer) = gw.exchange(&client).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        kinds.push(kind.unwrap());
    }
    assert_eq!(kinds[0], HandshakeKind::Full);
    kinds[1]
}

#[tokio::test]
async fn sessions_resume_by_default() {
    assert_eq!(second_handshake(|c| c).await, HandshakeKind::Resumed);
}

#[tokio::test]
async fn resumption_off_means_a_full_handshake_every_time() {
    assert_eq!(
        second_handshake(|c| c.listener("session_resumption = false")).await,
        HandshakeKind::Full
    );
    assert_eq!(
        second_handshake(|c| c.listener(r#"session_lifetime = "0s""#)).await,
        HandshakeKind::Full
    );
}

/// With a lifetime of 3s, a client that keeps resuming (TLS 1.3: each resumed connection is
/// given new tickets, which it uses next) is resumed until 3s after its full handshake, and
/// then must do a full handshake again. Without the lifetime it would resume until 256 other
/// sessions pushed its own out of the cache.
async fn resumed_until_the_lifetime_passes(version: &'static SupportedProtocolVersion) {
    const LIFETIME: Duration = Duration::from_secs(3);
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki.config().standard([up.url()]).listener(r#"session_lifetime = "3s""#);
    let gw = Gw::start(&pki, config).await;
    let client = gw.client_config_for(&[version], Some(&pki.client("A81001")), &[b"http/1.1"]);

    let authenticated = Instant::now();
    let (first, answer) = gw.exchange(&client).await;
    assert_eq!(first, Some(HandshakeKind::Full));
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let mut resumed = 0;
    let full_again = loop {
        let (kind, answer) = gw.exchange(&client).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{version:?}");
        if kind == Some(HandshakeKind::Full) {
            break authenticated.elapsed();
        }
        resumed += 1;
        assert!(
            authenticated.elapsed() < LIFETIME * 5,
            "{version:?}: still resumed {:?} after the full handshake",
            authenticated.elapsed()
        );
        // The poll's interval: the condition is the handshake kind.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(resumed > 0, "{version:?}: resumed within the lifetime");
    assert!(
        full_again >= LIFETIME,
        "{version:?}: a full handshake only once the lifetime has passed, not after {full_again:?}"
    );
}

#[tokio::test]
async fn a_tls13_ticket_chain_ends_session_lifetime_after_its_full_handshake() {
    resumed_until_the_lifetime_passes(&TLS13).await;
}

#[tokio::test]
async fn a_tls12_session_id_is_not_resumed_past_session_lifetime() {
    resumed_until_the_lifetime_passes(&TLS12).await;
}
