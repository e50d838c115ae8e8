//! The gateway every request shares: the reloadable state behind one `ArcSwap` (a request takes
//! one snapshot at its start and uses it throughout), the audit log, metrics, drain status and
//! request ids; reloads, certificate gauges and the minute's housekeeping.

use crate::audit::record::{self, Event};
use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::forward::headers::X_REQUEST_ID;
use crate::state::State;
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::watch;

/// What every request shares.
pub struct Gateway {
    pub state: ArcSwap<State>,
    pub audit: AuditLog,
    pub draining: AtomicBool,
    pub metrics: crate::metrics::Metrics,
    /// The state's generation, for connections that re-check their certificate on reload.
    pub generation: watch::Sender<u64>,
    /// Bytes of request bodies held for inspection now (`listener.max_inspect_bytes`).
    pub inspecting: Arc<crate::admit::body::Held>,
    /// Refused handshakes counted per address, past a budget (`audit::refusals`).
    pub refusals: Arc<crate::audit::refusals::Refusals<std::net::IpAddr>>,
    /// Refused requests counted per organisation (or certificate), past its refusal budget.
    pub refused_requests: Arc<crate::audit::refusals::Refusals<crate::audit::refusals::Requester>>,
}

impl Gateway {
    pub fn new(state: State, audit: AuditLog) -> Gateway {
        Gateway {
            state: ArcSwap::from_pointee(state),
            audit,
            draining: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
            generation: watch::Sender::new(0),
            inspecting: Arc::default(),
            refusals: Arc::default(),
            refused_requests: Arc::default(),
        }
    }

    /// Reloads the config file at `path` and everything it names (SIGHUP). A config that fails
    /// to load leaves the running one in place; either way the attempt is logged and audited.
    /// Callers serialise reloads.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        let previous = self.state.load_full();
        let result = Config::load(path).and_then(|c| State::reload(c, &previous));
        match result {
            Ok(state) => {
                let (sha, generation) = (state.config.sha256.clone(), state.generation);
                warn_restart_only(&previous.config, &state.config);
                drop(previous);
                self.state.store(Arc::new(state));
                self.generation.send_replace(generation);
                self.metrics.reload(true);
                self.check_cert_expiry();
                self.warn_about_state();
                tracing::info!(generation, config_sha256 = %sha, "config reloaded");
                self.lifecycle("reload", sha);
                Ok(())
            }
            Err(e) => {
                self.metrics.reload(false);
                tracing::error!(error = %e, "reload refused; the running config stays");
                let sha = std::fs::read(path)
                    .map(|b| crate::hex(ring::digest::digest(&ring::digest::SHA256, &b).as_ref()))
                    .unwrap_or_default();
                self.lifecycle("reload_failed", sha);
                Err(e)
            }
        }
    }

    /// Appends a `lifecycle` record (start, reload, reload_failed, stop).
    pub fn lifecycle(&self, action: &'static str, config_sha256: String) {
        self.audit.append(Event::Lifecycle(record::Lifecycle {
            action: action.into(),
            config_sha256,
        }));
    }

    /// Sets the gauges of seconds until the server certificate expires and each CRL's next
    /// update (on every `/metrics` scrape). Logs nothing: see [`Gateway::check_cert_expiry`].
    pub fn refresh_cert_metrics(&self) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let state = self.state.load();
        let m = &self.metrics;
        m.server_cert_expiry_seconds.set(state.tls.server_not_after - now);
        // Cleared first, so that a CRL removed by a reload stops being reported.
        m.crl_next_update_seconds.clear();
        for (file, next) in &state.tls.crl_next_update {
            if let Some(next) = next {
                m.crl_next_update_seconds
                    .get_or_create(&crate::metrics::FileLabels { file: file.clone() })
                    .set(next - now);
            }
        }
    }

    /// Logs what `caregate check` warns about in the loaded state. At start and on reload.
    pub fn warn_about_state(&self) {
        for w in &self.state.load().tls.warnings {
            tracing::warn!("{w}");
        }
    }

    /// Refreshes the expiry gauges and warns in the logs about a server certificate that
    /// expires within 14 days and a CRL past its nextUpdate. At start, on reload and once a
    /// minute.
    pub fn check_cert_expiry(&self) {
        self.refresh_cert_metrics();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let state = self.state.load();
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
}

/// Once a minute until `shutdown`: forget limiter state of organisations not seen lately
/// (bounded memory with many organisations), and refresh certificate expiry gauges and warnings.
pub async fn housekeeping(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        gw.state.load().limits.retain_recent();
        gw.check_cert_expiry();
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
        (
            "console.bind or console.plain_http",
            old.console.as_ref().map(|c| (c.bind, c.plain_http))
                != new.console.as_ref().map(|c| (c.bind, c.plain_http)),
        ),
        ("listener.workers", old.listener.workers != new.listener.workers),
        ("audit", format!("{:?}", old.audit) != format!("{:?}", new.audit)),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        tracing::warn!(key, "this setting changed but only takes effect after a restart");
    }
}

// === request ids ===

/// A new request id: caregate's own, unique and unpredictable (a UUIDv4: 122 random bits), so
/// that no client can make two requests look like one in the trail, or guess another's id.
pub fn request_id() -> Arc<str> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}

/// The client's own `X-Request-Id`, when it is sane (at most 128 of `[A-Za-z0-9-_.:]`), for the
/// record's `client_request_id`: a GP system can find its requests by it, but it is never a key.
pub fn client_request_id(headers: &http::HeaderMap) -> Option<String> {
    let b = headers.get(X_REQUEST_ID)?.as_bytes();
    let sane = !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c));
    // Checked ASCII above.
    sane.then(|| String::from_utf8_lossy(b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::headers::request_id_header;
    use http::HeaderValue;

    #[test]
    fn request_ids_are_random_uuids_and_the_clients_own_is_kept_apart() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        // A sane client id is kept for the record, never used as the id.
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("gp-42"));
        assert_eq!(client_request_id(&h).as_deref(), Some("gp-42"));
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(client_request_id(&h), None);
        let long = "a".repeat(129);
        h.insert("x-request-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(client_request_id(&h), None);
    }

    /// HTTP/2 sends a sensitive value as a literal never indexed: each id is new, and indexed
    /// ids would only fill the HPACK table that every response's lookup then walks.
    #[test]
    fn request_id_headers_are_never_indexed() {
        let id = request_id();
        let v = request_id_header(&id);
        assert_eq!(v.to_str().unwrap(), &*id);
        assert!(v.is_sensitive());
    }
}
