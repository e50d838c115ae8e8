//! Listeners and the life of the gateway: a bounded accept loop (a permit before `accept`),
//! handshakes under a deadline, connections served by hyper-util, reload, drain.

use crate::audit::record::{self, Event};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::proxy::{Conn, Gateway};
use crate::state::State;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    /// Stops the admin listener once the drain is over (it answers `/readyz` 503 meanwhile).
    admin_stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    config_path: PathBuf,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

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
    check_cert_expiry(&gateway);
    warn_about_state(&gateway);

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
                admin_stop_rx,
            ));
            Some(admin_addr)
        }
        None => None,
    };

    audit.append(Event::Lifecycle(record::Lifecycle {
        action: "start".into(),
        config_sha256: cfg.sha256.clone(),
    }));
    tracing::info!(%addr, workers = cfg.listener.workers, admin = admin_addr.map(tracing::field::display), config_sha256 = %cfg.sha256, "caregate listening");
    tokio::spawn(housekeeping(gateway.clone(), shutdown_rx.clone()));
    let task = tokio::spawn(accept_loop(listener, workers, gateway.clone(), accepting, shutdown_rx));
    Ok(Running {
        addr,
        admin_addr,
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
        let sha = g.state.load().config.sha256.clone();
        g.audit.append(Event::Lifecycle(record::Lifecycle {
            action: "stop".into(),
            config_sha256: sha,
        }));
        let closed = g.audit.close().await;
        let _ = self.admin_stop.send(true);
        closed
    }

    /// Reloads the config file and everything it names (SIGHUP). A config that fails to load
    /// leaves the running one in place; either way the attempt is logged and audited.
    pub async fn reload(&self) -> Result<(), crate::config::ConfigError> {
        let _guard = self.reload_lock.lock().await;
        let g = &self.gateway;
        let previous = g.state.load_full();
        let result = Config::load(&self.config_path).and_then(|c| State::reload(c, &previous));
        match result {
            Ok(state) => {
                let (sha, generation) = (state.config.sha256.clone(), state.generation);
                warn_restart_only(&previous.config, &state.config);
                drop(previous);
                g.state.store(Arc::new(state));
                g.generation.send_replace(generation);
                g.metrics.reload(true);
                check_cert_expiry(g);
                warn_about_state(g);
                tracing::info!(generation, config_sha256 = %sha, "config reloaded");
                g.audit.append(Event::Lifecycle(record::Lifecycle {
                    action: "reload".into(),
                    config_sha256: sha,
                }));
                Ok(())
            }
            Err(e) => {
                g.metrics.reload(false);
                tracing::error!(error = %e, "reload refused; the running config stays");
                let sha = std::fs::read(&self.config_path)
                    .map(|b| crate::hex(ring::digest::digest(&ring::digest::SHA256, &b).as_ref()))
                    .unwrap_or_default();
                g.audit.append(Event::Lifecycle(record::Lifecycle {
                    action: "reload_failed".into(),
                    config_sha256: sha,
                }));
                Err(e)
            }
        }
    }
}

/// Settings a reload cannot change (sockets and the audit writer are set up once): say so
/// rather than pretend.
fn warn_restart_only(old: &Config, new: &Config) {
    let admin = |c: &Config| c.admin.as_ref().map(|a| a.bind);
    let changed = [
        ("listener.bind", old.listener.bind != new.listener.bind),
        (
            "listener.max_connections",
            old.listener.max_connections != new.listener.max_connections,
        ),
        ("admin.bind", admin(old) != admin(new)),
        ("listener.workers", old.listener.workers != new.listener.workers),
        ("audit", format!("{:?}", old.audit) != format!("{:?}", new.audit)),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        tracing::warn!(key, "this setting changed but only takes effect after a restart");
    }
}

/// Sets the gauges of seconds until the server certificate expires and each CRL's next update
/// (on every `/metrics` scrape). Logs nothing: see [`check_cert_expiry`].
pub fn refresh_cert_metrics(g: &Gateway) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let state = g.state.load();
    g.metrics
        .server_cert_expiry_seconds
        .set(state.tls.server_not_after - now);
    // Cleared first, so that a CRL removed by a reload stops being reported.
    g.metrics.crl_next_update_seconds.clear();
    for (file, next) in &state.tls.crl_next_update {
        if let Some(next) = next {
            g.metrics
                .crl_next_update_seconds
                .get_or_create(&crate::metrics::FileLabels { file: file.clone() })
                .set(next - now);
        }
    }
}

/// Logs what `caregate check` warns about in the loaded state. At start and on reload.
fn warn_about_state(g: &Gateway) {
    for w in &g.state.load().tls.warnings {
        tracing::warn!("{w}");
    }
}

/// Refreshes the expiry gauges and warns in the logs about a server certificate that expires
/// within 14 days and a CRL past its nextUpdate. At start, on reload and once a minute.
pub fn check_cert_expiry(g: &Gateway) {
    refresh_cert_metrics(g);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let state = g.state.load();
    let left = state.tls.server_not_after - now;
    if left < 14 * 86400 {
        tracing::warn!(
            seconds_left = left,
            days_left = left / 86400,
            "the server certificate expires within 14 days"
        );
    }
    let refuse = state.config.listener.crl_expired == crate::config::CrlExpired::Refuse;
    for (file, next) in &state.tls.crl_next_update {
        match next {
            Some(next) if *next < now => {
                let consequence = if refuse {
                    "its CA's client certificates are refused"
                } else {
                    "accepted (crl_expired = \"warn\")"
                };
                tracing::warn!(crl = %file, seconds_past = now - next, consequence, "a CRL is past its nextUpdate");
            }
            None => tracing::warn!(crl = %file, "a CRL has no nextUpdate"),
            _ => {}
        }
    }
}

/// Once a minute: forget limiter state of organisations not seen lately (bounded memory with
/// many organisations), and refresh certificate expiry gauges and warnings.
async fn housekeeping(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        gw.state.load().limits.retain_recent();
        check_cert_expiry(&gw);
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
        workers.spawn(async move {
            let tcp = match TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(e) => return tracing::warn!(%peer, error = %e, "a worker cannot take the connection"),
            };
            let worker = crate::metrics::WorkerLabels {
                worker: crate::worker::index() as u64,
            };
            let on_worker = gw.metrics.worker_connections.get_or_create(&worker).clone();
            gw.metrics.active_connections.inc();
            on_worker.inc();
            serve_connection(tcp, peer, &gw, shutdown).await;
            on_worker.dec();
            gw.metrics.active_connections.dec();
            drop(permit);
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

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, gw: &Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let state = gw.state.load_full();
    let l = &state.config.listener;
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.server_config.clone());
    let (result, note) = crate::tls::with_note(tokio::time::timeout(l.handshake_timeout, acceptor.accept(tcp))).await;
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
    let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
        return tls_rejected(gw, peer, note, "no_certificate", &"no client certificate");
    };
    let identity = match crate::identity::identify(leaf, &state.config.identity.org_from, &state.directory) {
        Ok(i) => Arc::new(i),
        Err(e) => return tls_rejected(gw, peer, note, "other", &e),
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    // Kept for the reload watch below; the service takes `conn`.
    let who = identity.clone();
    let verified_in = state.generation;
    let mut reloads = gw.generation.subscribe();
    let (io, framing) = crate::h1guard::Guarded::new(tls, !h2, l.max_header_bytes, l.header_timeout);
    let conn = Arc::new(Conn::new(peer, identity, (!h2).then_some(framing)));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for its next request, so
        // it is the idle timeout; the head's own deadline is kept by h1guard.
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
    let service = service_fn(move |req| {
        let (g, conn) = (g.clone(), conn.clone());
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
            crate::proxy::handle(g, conn, req).await.map_err(|e| match e {})
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
                }
                break;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
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
fn tls_rejected(
    gw: &Gateway,
    peer: SocketAddr,
    note: crate::tls::HandshakeNote,
    reason: &str,
    error: &dyn std::fmt::Display,
) {
    gw.metrics.tls_rejected(reason);
    tracing::info!(%peer, reason, error = %error, "TLS handshake refused");
    gw.audit.append(Event::TlsRejected(record::TlsRejected {
        client: record::Client {
            ip: peer.ip().to_string().into(),
            port: peer.port(),
            subject: note.subject.map(Into::into),
            fingerprint: note.fingerprint.map(Into::into),
            ..Default::default()
        },
        sni: note.sni,
        reason: reason.to_string(),
    }));
}
