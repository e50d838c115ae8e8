//! Holds many idle mTLS connections open, for the side-by-side benchmark's scenario E.
//!
//! ```text
//! cargo run --release --example bench_idle -- ADDR N HOLD_SECONDS CA CERT KEY [PATH]
//! ```
//!
//! Opens `N` TLS connections to `ADDR` presenting the client certificate, sends one HTTP/1.1
//! keep-alive `GET PATH` (default `/bytes/16`) on each and reads the answer, so each
//! connection is a real idle keep-alive connection. Then prints `ready OPEN FAILED` and keeps
//! them all open for `HOLD_SECONDS` before closing them and exiting.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 6 {
        return Err("usage: bench_idle ADDR N HOLD_SECONDS CA CERT KEY [PATH]".into());
    }
    let addr: SocketAddr = args[0].parse()?;
    let n: usize = args[1].parse()?;
    let hold = Duration::from_secs(args[2].parse()?);
    let path = args.get(6).cloned().unwrap_or_else(|| "/bytes/16".into());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args[3])? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(&args[4])?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args[5])?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Open them 64 at a time: a burst of 10k handshakes would only measure the backlog.
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (gate, connector, path) = (gate.clone(), connector.clone(), path.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                tokio::time::timeout(Duration::from_secs(30), open(addr, &connector, &path))
                    .await
                    .ok()?
                    .ok()
            });
        }
        let mut held = Vec::with_capacity(n);
        let mut failed = 0usize;
        let mut first_error = true;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Some(s)) => held.push(s),
                _ => {
                    failed += 1;
                    if first_error {
                        first_error = false;
                        eprintln!("bench_idle: a connection failed (fd limit? listener cap?)");
                    }
                }
            }
        }
        println!("ready {} {failed}", held.len());
        tokio::time::sleep(hold).await;
        drop(held);
    });
    Ok(())
}

/// One connection: handshake, one keep-alive request, its whole answer read.
async fn open(addr: SocketAddr, connector: &TlsConnector, path: &str) -> Result<TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let k = tls.read(&mut chunk).await?;
        if k == 0 {
            return Err("closed before the answer".into());
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("answer: {}", head.lines().next().unwrap_or("")).into());
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(tls);
            }
        }
    }
}
