//! Listeners and the life of the gateway: a bounded accept loop (a permit before `accept`, a
//! cap per address), handshakes under a deadline, a cap per organisation, connections served by
//! hyper-util with deadlines on idle bodies, reload, drain.

use crate::audit::record::{self, Event};
use crate::audit::refusals;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::proxy::Conn;
use crate::state::State;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("audit.dir: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("listener.workers: cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    /// `[console]`: its address or its index (the message names the key).
    #[error("{0}")]
    Console(std::io::Error),
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway that is running: its bound addresses and the handles to reload and stop it.
pub struct Running {
    /// The TLS listener's address (useful when `listener.bind` had port 0).
    pub addr: SocketAddr,
    /// The admin listener's address, if `[admin]` is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The auditor's console's address, if `[console]` is configured.
    pub console_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    /// Stops the admin listener once the drain is over (it answers `/readyz` 503 meanwhile).
    admin_stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    config_path: PathBuf,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

mod delivered;
mod open;
mod parse_refusal;

use open::{Open, OpenCounts};

/// Loads everything the config names, binds the listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let config_path = config.path.clone();
    let state = State::build(config, 0)?;
    let cfg = state.config.clone();
    let audit = AuditLog::open(&cfg.audit)?;
    let listener = TcpListener::bind(cfg.listener.bind)
        .await
        .map_err(|source| StartError::Bind {
            key: "listener.bind",
            addr: cfg.listener.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        key: "listener.bind",
        addr: cfg.listener.bind,
        source,
    })?;
    let workers = crate::worker::Workers::start(cfg.listener.workers).map_err(StartError::Workers)?;
    workers.spawn_on_each(|i| audit.postbox(i));
    let gateway = Arc::new(Gateway::new(state, audit.clone()));
    gateway.metrics.audit_healthy.set(1);
    gateway.check_cert_expiry();
    gateway.warn_about_state();

    // True while the TLS listener accepts: `/readyz` is 503 before and after (drain).
    let accepting = Arc::new(AtomicBool::new(false));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_addr = match &cfg.admin {
        Some(a) => {
            let l = TcpListener::bind(a.bind).await.map_err(|source| StartError::Bind {
                key: "admin.bind",
                addr: a.bind,
                source,
            })?;
            let admin_addr = l.local_addr().map_err(|source| StartError::Bind {
                key: "admin.bind",
                addr: a.bind,
                source,
            })?;
            tokio::spawn(crate::admin::serve(
                l,
                gateway.clone(),
                accepting.clone(),
                admin_stop_rx.clone(),
            ));
            Some(admin_addr)
        }
        None => None,
    };
    // The console stops with the admin listener, once the drain is over.
    let console_addr = crate::console::start(gateway.clone(), admin_stop_rx.clone())
        .await
        .map_err(StartError::Console)?;

    gateway.lifecycle("start", cfg.sha256.clone());
    tracing::info!(%addr, workers = cfg.listener.workers, admin = admin_addr.map(tracing::field::display), config_sha256 = %cfg.sha256, "caregate listening");
    tokio::spawn(crate::gateway::housekeeping(gateway.clone(), shutdown_rx.clone()));
    let task = tokio::spawn(accept_loop(listener, workers, gateway.clone(), accepting, shutdown_rx));
    Ok(Running {
        addr,
        admin_addr,
        console_addr,
        gateway,
        shutdown,
        admin_stop,
        task,
        config_path,
        reload_lock: Default::default(),
    })
}

impl Running {
    /// Starts a graceful drain (as SIGTERM does): stop accepting, answer new requests 503
    /// `shutting_down`, close idle keep-alive connections, let in-flight requests finish.
    pub fn shutdown(&self) {
        // Before the signal, so that no request admitted after this point is forwarded.
        self.gateway.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }

    /// Waits until the gateway has drained and stopped, with the final audit records written.
    pub async fn wait(self) -> Result<(), crate::audit::AuditError> {
        let _ = self.task.await;
        let g = &self.gateway;
        g.lifecycle("stop", g.state.load().config.sha256.clone());
        let closed = g.audit.close().await;
        let _ = self.admin_stop.send(true);
        closed
    }

    /// Reloads the config file and everything it names (SIGHUP), one reload at a time; see
    /// [`Gateway::reload`].
    pub async fn reload(&self) -> Result<(), crate::config::ConfigError> {
        let _guard = self.reload_lock.lock().await;
        self.gateway.reload(&self.config_path)
    }
}

/// Accepts connections and hands each to the least busy worker; on shutdown, drains and then
/// stops the workers.
async fn accept_loop(
    listener: TcpListener,
    workers: crate::worker::Workers,
    gw: Arc<Gateway>,
    accepting: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = gw.state.load().config.listener.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let by_address = OpenCounts::<IpAddr>::new();
    let by_org = OpenCounts::<Arc<str>>::new();
    accepting.store(true, Ordering::Relaxed);
    loop {
        // Take a permit before accepting: at the cap, new connections wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // Before the handshake costs anything: closed at once (the permit goes back with it).
        let per_address = gw.state.load().config.listener.max_connections_per_address;
        let Some(address) = by_address.take(peer.ip(), per_address) else {
            gw.metrics.connection_refused("per_address");
            tracing::debug!(%peer, "connection closed: listener.max_connections_per_address");
            continue;
        };
        // Moved to the worker's runtime on its first poll there.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let gw = gw.clone();
        let shutdown = shutdown.clone();
        let by_org = by_org.clone();
        workers.spawn(async move {
            // Dropped however the connection ends, a worker stopping at the drain deadline too.
            let _open = Open::new(&gw, permit, address);
            let tcp = match TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(e) => return tracing::warn!(%peer, error = %e, "a worker cannot take the connection"),
            };
            serve_connection(tcp, peer, &gw, &by_org, shutdown).await;
        });
    }
    drop(listener);
    accepting.store(false, Ordering::Relaxed);
    // Drain: stop accepting, refuse new requests, let in-flight ones finish until the deadline.
    gw.draining.store(true, Ordering::Relaxed);
    let deadline = gw.state.load().config.listener.drain_timeout;
    let open = max - permits.available_permits();
    tracing::info!(connections = open, drain_timeout = ?deadline, "draining");
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(deadline, permits.acquire_many(all)).await.is_ok();
    if drained {
        tracing::info!("drained: every connection closed");
    } else {
        let open = max - permits.available_permits();
        tracing::warn!(
            connections = open,
            "drain deadline passed with connections still open; closing them"
        );
    }
    workers.stop().await;
}

/// Ticks of the HTTP/2 body watch; never for HTTP/1.
async fn tick(watch: &mut Option<tokio::time::Interval>) {
    match watch {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    gw: &Arc<Gateway>,
    by_org: &Arc<OpenCounts<Arc<str>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let state = gw.state.load_full();
    let l = &state.config.listener;
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.server_config.clone());
    let (result, mut note) =
        crate::tls::with_note(tokio::time::timeout(l.handshake_timeout, acceptor.accept(tcp))).await;
    let tls = match result {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = crate::tls::rejection_reason(&e, &note);
            return tls_rejected(gw, peer, note, reason, &e);
        }
        Err(_) => {
            return tls_rejected(
                gw,
                peer,
                note,
                "other",
                &"no handshake within listener.handshake_timeout",
            )
        }
    };
    let (_, session) = tls.get_ref();
    let Some(chain) = session.peer_certificates().filter(|c| !c.is_empty()) else {
        return tls_rejected(gw, peer, note, "no_certificate", &"no client certificate");
    };
    // A resumed session skipped the client verifier: its certificate was checked when the
    // session was made, and may have expired or been revoked by a reloaded CRL since.
    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        if let Err(e) = state.tls.recheck(chain, &mut note) {
            // The verifier names the reason (`expired`, `revoked`…) as in a handshake.
            let reason = note.reason.unwrap_or("other");
            return tls_rejected(gw, peer, note, reason, &format_args!("resumed session refused: {e}"));
        }
    }
    let leaf = &chain[0];
    let identity = match crate::identity::identify(leaf, &state.config.identity.org_from, &state.directory) {
        Ok(i) => Arc::new(i),
        Err(e) => return tls_rejected(gw, peer, note, "other", &e),
    };
    // A certificate that names no organisation counts as its own (its requests are refused).
    let org = identity.org.clone().unwrap_or_else(|| identity.fingerprint.clone());
    let Some(_org_open) = by_org.take(org.clone(), l.max_connections_per_org) else {
        gw.metrics.connection_refused("per_org");
        tracing::info!(%peer, %org, "connection closed after the handshake: listener.max_connections_per_org");
        return;
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    // Kept for the reload watch below; the service takes `conn`.
    let who = identity.clone();
    let verified_in = state.generation;
    let mut reloads = gw.generation.subscribe();
    let deadlines = crate::framing::h1::Deadlines {
        header: l.header_timeout,
        write_idle: l.body_idle_timeout,
    };
    let (io, framing) = crate::framing::h1::Guarded::new(tls, !h2, l.max_header_bytes, deadlines);
    let delivery = Arc::new(crate::body::Delivery::default());
    let io = delivered::Flushed::new(io, delivery.clone());
    let conn = Arc::new(Conn::new(peer, identity, (!h2).then_some(framing), delivery));
    // HTTP/2 response bodies report their progress, checked every half body_idle_timeout.
    let body_idle = l.body_idle_timeout;
    let progress = h2.then(|| Arc::new(crate::body::Progress::default()));
    let mut body_watch = h2.then(|| {
        let every = (body_idle / 2).max(Duration::from_millis(10));
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for its next request, so
        // it is the idle timeout; the head's own deadline is kept by framing::h1.
        .header_read_timeout(l.idle_timeout + l.header_timeout)
        .max_buf_size(l.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(l.idle_timeout / 2))
        .keep_alive_timeout(l.idle_timeout / 2);
    // ALPN decided the protocol; don't let a client switch to the other one behind it.
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let g = gw.clone();
    let watched = progress.clone();
    let for_service = conn.clone();
    let service = service_fn(move |req| {
        let (g, conn, watched) = (g.clone(), for_service.clone(), watched.clone());
        // Boxed: the request's future is kilobytes, and HTTP/2 runs each stream as a task of
        // its own, whose spawn and completion would otherwise copy all of it several times.
        Box::pin(async move {
            // A request that races the reload below: refused before it reaches the pipeline
            // (hyper closes the HTTP/1 connection, resets the HTTP/2 stream).
            let now = g.state.load();
            if now.generation != verified_in && now.tls.is_revoked(&conn.identity.issuer, &conn.identity.serial) {
                return Err(CertRevoked);
            }
            drop(now);
            let handled = crate::proxy::handle(g, conn, req).await;
            let resp = handled.map_err(|e| match e {})?;
            Ok(resp.map(|b| crate::body::Watched::new(b, watched)))
        })
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    drop(state);

    // Watch for drain and for reloads whose CRL revokes this connection's certificate: either
    // way, finish the current exchange and close (HTTP/1: no keep-alive; HTTP/2: GOAWAY).
    let mut closing = false;
    loop {
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                    // A head hyper could not parse, answered by hyper itself: recorded here.
                    if let Some(status) = parse_refusal::status_of(&*e) {
                        parse_refusal::record(gw, &conn, status);
                    }
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tick(&mut body_watch) => {
                if progress.as_ref().is_some_and(|p| p.stalled(body_idle)) {
                    tracing::info!(%peer, "closing an HTTP/2 connection whose client read nothing within listener.body_idle_timeout");
                    break;
                }
            }
            Ok(()) = reloads.changed(), if !closing => {
                if gw.state.load().tls.is_revoked(&who.issuer, &who.serial) {
                    tracing::info!(%peer, "closing a connection whose certificate a reloaded CRL revokes");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A request on a connection whose certificate a reload revoked.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate was revoked by a reloaded CRL")]
struct CertRevoked;

/// `error` says what the audit's `reason` cannot: `other` covers a wrong key usage, a name
/// constraint, a bad encoding… (rustls' words; never a patient identifier).
///
/// Nobody is authenticated yet, so this costs the trail a bounded amount: the first
/// `refusals::PER_SECOND` refusals per address per second are written, the rest counted into
/// one `refusals_coalesced` record (`audit::refusals`), and what the certificate says is a
/// bounded summary (`tls::HandshakeNote`).
fn tls_rejected(
    gw: &Gateway,
    peer: SocketAddr,
    note: crate::tls::HandshakeNote,
    reason: &'static str,
    error: &dyn std::fmt::Display,
) {
    let write = gw.refusals.spend(&gw.audit, peer.ip(), reason, refusals::HANDSHAKES);
    if !write {
        gw.metrics.refusal_coalesced("handshake");
    }
    // Last, so that whoever sees a refusal in the metrics sees how it was counted.
    gw.metrics.tls_rejected(reason);
    if !write {
        return tracing::debug!(%peer, reason, error = %error, "TLS handshake refused (counted)");
    }
    tracing::info!(%peer, reason, error = %error, "TLS handshake refused");
    let (subject, sni) = (note.subject, note.sni);
    gw.audit.append(Event::TlsRejected(record::TlsRejected {
        client: record::RejectedClient {
            ip: peer.ip().to_string().into(),
            port: peer.port(),
            subject_len: subject.as_ref().and_then(|s| s.whole_len()),
            subject_sha256: subject.as_ref().and_then(|s| s.sha256()),
            subject: subject.map(|s| s.text),
            fingerprint: note.fingerprint,
        },
        sni_len: sni.as_ref().and_then(|s| s.whole_len()),
        sni_sha256: sni.as_ref().and_then(|s| s.sha256()),
        sni: sni.map(|s| s.text),
        reason: reason.to_string(),
    }));
}
