//! The auditor's console (`[console]`): server-rendered HTML over the audit index, on its own
//! listener, for the organisations and groups `console.auditors` names and nobody else.
//!
//! It speaks mutual TLS with the gateway's own server certificate and client-CA verification
//! (the listener's rustls config, CRLs included) and finds who is calling as the proxy does
//! (`identity::identify` against the directory), so an auditor's certificate is an ordinary
//! client certificate of an organisation the directory knows. Plain HTTP is allowed only on a
//! loopback address, and only when configured (`console.plain_http`).
//!
//! Every page that reads the trail writes an `audit_access` record first (who, which filters,
//! how many rows) and is answered only once the record is durable: a console that cannot
//! record its own use shows nothing. A certificate that is not an auditor's gets 403 on every
//! request, and one `audit_access` record with `decision: deny` per connection.
//!
//! `html` escapes (the one place), `svg` draws charts, `pages` renders each page from the index.

pub mod html;
mod pages;
mod svg;

use crate::audit::record::{self, AuditAccess, Event};
use crate::gateway::Gateway;
use crate::metrics::RaisedAlerts;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The console's connections at once: a handful of auditors, never the gateway's traffic.
const MAX_CONNECTIONS: usize = 64;

/// Who is using the console: as an `audit_access` record names them.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub client: record::Client,
}

/// Binds `console.bind` and serves the console until `shutdown`; answers the bound address.
/// `None` when the config has no `[console]`.
pub async fn start(gw: Arc<Gateway>, shutdown: watch::Receiver<bool>) -> std::io::Result<Option<SocketAddr>> {
    let Some(c) = gw.state.load().config.console.clone() else {
        return Ok(None);
    };
    let bind_err = |e: std::io::Error| std::io::Error::other(format!("console.bind: cannot listen on {}: {e}", c.bind));
    let listener = TcpListener::bind(c.bind).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    // The index follows the trail on a thread of its own (SQLite blocks), stopped with the
    // console.
    let dir = gw.state.load().config.audit.dir.clone();
    // Created (or migrated) once here, before the follower and the pages open it: two first
    // openers at once would both try to create its tables.
    crate::audit::index::open(&c.db)
        .map_err(|e| std::io::Error::other(format!("console.db: {}: {e}", c.db.display())))?;
    let stop = crate::audit::index::Stop::new();
    crate::audit::index::spawn_follower(dir, c.db.clone(), stop.clone())?;
    let mut stopped = shutdown.clone();
    tokio::spawn(async move {
        let _ = stopped.changed().await;
        stop.stop();
    });
    let raised = Arc::new(Mutex::new(RaisedAlerts::default()));
    tokio::spawn(alerts_every_minute(
        gw.clone(),
        c.db.clone(),
        raised.clone(),
        shutdown.clone(),
    ));
    tracing::info!(%addr, plain_http = c.plain_http, db = %c.db.display(), "console listening");
    // Plain HTTP is decided here, with the address bound: a reload that turned it on could
    // otherwise serve plain HTTP on a socket bound to a non-loopback address.
    tokio::spawn(accept_loop(listener, gw, raised, c.plain_http, shutdown));
    Ok(Some(addr))
}

/// Alerts are evaluated every minute whether or not anyone is looking, so that each is counted
/// in `caregate_alerts_total` and logged when it arises.
async fn alerts_every_minute(
    gw: Arc<Gateway>,
    db: PathBuf,
    raised: Arc<Mutex<RaisedAlerts>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (db, settings) = (db.clone(), gw.state.load().config.alerts.clone());
        let evaluated = tokio::task::spawn_blocking(move || {
            let store = crate::audit::index::open(&db)?;
            crate::audit::alerts::evaluate(&store, pages::now_micros(), &settings)
        })
        .await;
        match evaluated {
            Ok(Ok(alerts)) => raise(&gw, &raised, &alerts),
            Ok(Err(e)) => tracing::warn!(error = %e, "alerts could not be evaluated"),
            Err(_) => {}
        }
    }
}

fn raise(gw: &Gateway, raised: &Mutex<RaisedAlerts>, alerts: &[crate::audit::alerts::Alert]) {
    if let Ok(mut r) = raised.lock() {
        r.raise(&gw.metrics, alerts);
    }
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    raised: Arc<Mutex<RaisedAlerts>>,
    plain_http: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "console accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (gw, raised) = (gw.clone(), raised.clone());
        tokio::spawn(async move {
            connection(tcp, peer, gw, raised, plain_http).await;
            drop(permit);
        });
    }
}

/// One connection: the handshake, who it is, then HTTP/1.1 or HTTP/2 as ALPN chose.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    raised: Arc<Mutex<RaisedAlerts>>,
    plain_http: bool,
) {
    let state = gw.state.load_full();
    let Some(console) = state.config.console.clone() else {
        return;
    };
    let timeout = state.config.listener.handshake_timeout;
    if plain_http {
        // Only ever on loopback (validated with the address bound): whoever can connect is on
        // this host.
        let viewer = Viewer {
            client: record::Client {
                subject: Some("plain_http (loopback)".into()),
                ip: peer.ip().to_string().into(),
                port: peer.port(),
                ..Default::default()
            },
        };
        let dir = state.config.audit.dir.clone();
        drop(state);
        return serve(
            TokioIo::new(tcp),
            Arc::new(Console::new(gw, viewer, true, console.db, dir, raised)),
        )
        .await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.server_config.clone());
    // With the handshake's note, as on the proxy's listener: the session cache stamps the
    // tickets it gives with the full handshake's time, and a resumed session is re-checked.
    let (accepted, mut note) = crate::tls::with_note(tokio::time::timeout(timeout, acceptor.accept(tcp))).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        // Not recorded in the trail: nobody is authenticated yet, and the console's port must
        // not be a way to fill the audit disk. The proxy listener records its own.
        Ok(Err(e)) => return tracing::info!(%peer, error = %e, "console: TLS handshake refused"),
        Err(_) => return tracing::info!(%peer, "console: no TLS handshake in time"),
    };
    let session = tls.get_ref().1;
    let Some(chain) = session.peer_certificates().filter(|c| !c.is_empty()) else {
        return;
    };
    // A resumed session skipped the client verifier: its certificate may have expired or been
    // revoked by a reloaded CRL since the session was made.
    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        if let Err(e) = state.tls.recheck(chain, &mut note) {
            return tracing::info!(%peer, error = %e, "console: resumed session refused");
        }
    }
    let leaf = &chain[0];
    let Ok(identity) = crate::identity::identify(leaf, &state.config.identity.org_from, &state.directory) else {
        return tracing::info!(%peer, "console: client certificate could not be parsed");
    };
    let org = identity.org.as_deref().and_then(|o| state.directory.organisation(o));
    let allowed = identity
        .org
        .as_deref()
        .is_some_and(|o| console.auditor_orgs.iter().any(|a| a == o))
        || org.is_some_and(|o| o.groups.iter().any(|g| console.auditor_groups.contains(g)));
    let viewer = Viewer {
        client: record::Client {
            org: identity.org.clone(),
            org_name: org.map(|o| o.name.clone()),
            subject: Some(identity.subject.clone()),
            fingerprint: Some(identity.fingerprint.clone()),
            serial: Some(identity.serial.clone()),
            ip: peer.ip().to_string().into(),
            port: peer.port(),
        },
    };
    let dir = state.config.audit.dir.clone();
    drop(state);
    if !allowed {
        tracing::warn!(%peer, org = identity.org.as_deref().unwrap_or("-"), "console: refused a certificate that is not an auditor's");
        gw.audit.append(Event::AuditAccess(Box::new(AuditAccess {
            client: viewer.client.clone(),
            action: "console".into(),
            decision: "deny".into(),
            filters: BTreeMap::new(),
            rows: 0,
        })));
    }
    serve(
        TokioIo::new(tls),
        Arc::new(Console::new(gw, viewer, allowed, console.db, dir, raised)),
    )
    .await;
}

async fn serve<I>(io: TokioIo<I>, console: Arc<Console>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let console = console.clone();
        async move { Ok::<_, std::convert::Infallible>(console.answer(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let _ = builder.serve_connection(io, service).await;
}

/// One connection's view of the console.
pub struct Console {
    gw: Arc<Gateway>,
    viewer: Viewer,
    allowed: bool,
    db: PathBuf,
    audit_dir: PathBuf,
    raised: Arc<Mutex<RaisedAlerts>>,
}

pub type Answer = Response<Full<Bytes>>;

impl Console {
    fn new(
        gw: Arc<Gateway>,
        viewer: Viewer,
        allowed: bool,
        db: PathBuf,
        audit_dir: PathBuf,
        raised: Arc<Mutex<RaisedAlerts>>,
    ) -> Console {
        Console {
            gw,
            viewer,
            allowed,
            db,
            audit_dir,
            raised,
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        if !self.allowed {
            return page(
                StatusCode::FORBIDDEN,
                &html_page(
                    "Not an auditor",
                    &self.viewer,
                    "<h1>Not an auditor</h1><p>This certificate's organisation is not one of <code>console.auditors</code>. This attempt has been recorded in the audit trail.</p>",
                ),
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let path = req.uri().path().to_string();
        if path == "/style.css" {
            let mut r = Response::new(Full::new(Bytes::from_static(html::CSS.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/css; charset=utf-8"),
            );
            return secure(r);
        }
        let query: Vec<(String, String)> = html::form_pairs(req.uri().query().unwrap_or("")).collect();
        let Some(view) = pages::View::parse(&path, &query) else {
            return text(StatusCode::NOT_FOUND, "no such page\n");
        };
        // The index is SQLite: its reads block, so they run off the async threads.
        let (db, dir, viewer) = (self.db.clone(), self.audit_dir.clone(), self.viewer.clone());
        let settings = self.gw.state.load().config.alerts.clone();
        let rendered = tokio::task::spawn_blocking(move || pages::render(&db, &dir, &settings, &viewer, &view)).await;
        let rendered = match rendered {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "console: the index could not be read");
                return text(StatusCode::SERVICE_UNAVAILABLE, "the audit index could not be read\n");
            }
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
        };
        if let Some(access) = rendered.access {
            // Recorded before anything is shown: no record, no answer.
            let event = Event::AuditAccess(Box::new(AuditAccess {
                client: self.viewer.client.clone(),
                action: access.action.into(),
                decision: "allow".into(),
                filters: access.filters,
                rows: access.rows,
            }));
            if let Err(e) = self.gw.audit.append_durable(event).await {
                tracing::error!(error = %e, "console: cannot record this use of the trail; not answering");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this use of the audit trail could not be recorded\n",
                );
            }
        }
        raise(&self.gw, &self.raised, &rendered.alerts);
        let mut r = Response::new(Full::new(rendered.body));
        r.headers_mut().insert(header::CONTENT_TYPE, rendered.content_type);
        if let Some(name) = rendered.download {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, name);
        }
        secure(r)
    }
}

/// What an `audit_access` record says of a page.
pub struct Access {
    pub action: &'static str,
    pub filters: BTreeMap<String, String>,
    pub rows: u64,
}

/// A rendered page or export.
pub struct Rendered {
    pub body: Bytes,
    pub content_type: header::HeaderValue,
    pub download: Option<header::HeaderValue>,
    /// `None` for pages that read nothing of the trail.
    pub access: Option<Access>,
    /// The alerts the page evaluated (the overview), to be counted and logged once.
    pub alerts: Vec<crate::audit::alerts::Alert>,
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(r)
}

fn page(status: StatusCode, body: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(r)
}

/// Headers on every answer: no script of any origin, no framing, no caching (pages hold patient
/// identifiers), no referrer (URLs hold them too).
fn secure(mut r: Answer) -> Answer {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    r
}

/// The page around `body`: the header with the navigation and who is looking.
pub fn html_page(title: &str, viewer: &Viewer, body: &str) -> String {
    use html::esc;
    let who = match (&viewer.client.org, &viewer.client.subject) {
        (Some(o), Some(s)) => format!("{o} · {s}"),
        (None, Some(s)) => s.to_string(),
        _ => String::new(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{} · caregate console</title><link rel="stylesheet" href="/style.css"></head><body><header><a href="/">caregate console</a><a href="/search">Search</a><span class="who">{}</span></header><main>{body}</main></body></html>"#,
        esc(title),
        esc(&who)
    )
}

/// `caregate audit serve --config FILE`: the console (and the index follower) of a gateway's
/// config without its proxy listener, until `stop`. Its own uses are recorded in the config's
/// audit trail, so that trail must not be in use by a running gateway (the folder's lock says
/// so): a gateway with `[console]` serves the console itself.
pub async fn serve_alone(
    config: crate::config::Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if config.console.is_none() {
        anyhow::bail!("{}: no [console] section", config.path.display());
    }
    let state = crate::state::State::build(config, 0)?;
    let audit = crate::audit::AuditLog::open(&state.config.audit).context("audit.dir")?;
    let gw = Arc::new(Gateway::new(state, audit));
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = start(gw.clone(), stop_rx).await?;
    tracing::info!(
        addr = addr.map(tracing::field::display),
        "caregate audit serve: console running"
    );
    stop.await;
    let _ = stop_tx.send(true);
    gw.audit.close().await?;
    Ok(())
}
