//! `listener.session_resumption`: rustls resumes sessions by default; off, every new connection
//! is a full handshake with the client certificate checked again.

mod support;

use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two connections from one client config (which keeps a session cache); how the second went.
async fn second_handshake(config: impl FnOnce(GatewayConfig) -> GatewayConfig) -> HandshakeKind {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let gw = Gw::start(&pki, config(pki.config().standard([up.url()]))).await;
    let leaf = pki.client("A81001");
    let connector = tokio_rustls::TlsConnector::from(gw.client_config(Some(&leaf), &[b"http/1.1"]));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(gw.addr()).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        // Reading the answer also reads any TLS 1.3 session tickets sent after the handshake.
        tls.write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        kinds.push(tls.get_ref().1.handshake_kind().unwrap());
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
}
