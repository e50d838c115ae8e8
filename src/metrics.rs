//! Prometheus metrics (SPEC §6), through prometheus-client. Labels never carry a path, query or
//! anything else that could hold a patient identifier.

use crate::audit::alerts::{Alert, AlertKind};
use crate::audit::record::Word;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Shared with the route and the records (no copy per request); `""` when none matched.
    pub route: Option<Arc<str>>,
    pub class: Option<Word>,
    pub decision: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Option<Arc<str>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakGlassLabels {
    pub org: String,
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: u64,
}

/// Every series the gateway exports. Cheap to clone (each metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub tls_rejections: Family<ReasonLabels, Counter>,
    pub rate_limited: Counter,
    /// Refusals past their budget, counted into `refusals_coalesced` records rather than
    /// written one by one: `handshake` (per address) or `request` (per organisation).
    pub refusals_coalesced: Family<SourceLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub active_connections: Gauge,
    /// Open client connections on each worker thread (`listener.workers`).
    pub worker_connections: Family<WorkerLabels, Gauge>,
    pub in_flight: Gauge,
    /// Connections closed at once by `listener.max_connections_per_address` (`per_address`, at
    /// accept) or `max_connections_per_org` (`per_org`, after the handshake).
    pub connections_refused: Family<ReasonLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub audit_healthy: Gauge,
    pub audit_queue_depth: Gauge,
    pub audit_fsync_seconds: Gauge<f64, AtomicU64>,
    pub server_cert_expiry_seconds: Gauge,
    pub crl_next_update_seconds: Family<FileLabels, Gauge>,
    /// 1 from SIGTERM until exit.
    pub draining: Gauge,
    /// Requests a `[[route.break_glass]]` entry let through, by organisation and route.
    pub break_glass: Family<BreakGlassLabels, Counter>,
    /// Alerts raised by this process (the one that evaluates them), each counted once.
    pub alerts: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            tls_rejections: Family::default(),
            rate_limited: Counter::default(),
            refusals_coalesced: Family::default(),
            upstream_errors: Family::default(),
            active_connections: Gauge::default(),
            worker_connections: Family::default(),
            in_flight: Gauge::default(),
            connections_refused: Family::default(),
            reloads: Family::default(),
            audit_healthy: Gauge::default(),
            audit_queue_depth: Gauge::default(),
            audit_fsync_seconds: Gauge::default(),
            server_cert_expiry_seconds: Gauge::default(),
            crl_next_update_seconds: Family::default(),
            draining: Gauge::default(),
            break_glass: Family::default(),
            alerts: Family::default(),
        }
    }
}

impl Metrics {
    /// A registry holding every series, for `/metrics`.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("caregate");
        r.register(
            "requests",
            "Requests by route, class, decision and status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the end of the response, by route",
            self.latency.clone(),
        );
        r.register(
            "request_bytes",
            "Request body bytes received from clients",
            self.bytes_in.clone(),
        );
        r.register(
            "response_bytes",
            "Response body bytes sent to clients",
            self.bytes_out.clone(),
        );
        r.register(
            "tls_rejections",
            "Refused TLS handshakes by reason",
            self.tls_rejections.clone(),
        );
        r.register("rate_limited", "Requests refused with 429", self.rate_limited.clone());
        r.register(
            "refusals_coalesced",
            "Refusals past their budget, counted in refusals_coalesced records instead of written one by one, by source (handshake, request)",
            self.refusals_coalesced.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream connect, request and timeout failures",
            self.upstream_errors.clone(),
        );
        r.register(
            "active_connections",
            "Open client connections",
            self.active_connections.clone(),
        );
        r.register(
            "worker_connections",
            "Open client connections on each worker thread",
            self.worker_connections.clone(),
        );
        r.register("in_flight_requests", "Requests being served", self.in_flight.clone());
        r.register(
            "connections_refused",
            "Connections closed at once because one address or organisation had too many open",
            self.connections_refused.clone(),
        );
        r.register("reloads", "Config reloads by result", self.reloads.clone());
        r.register(
            "audit_healthy",
            "1 while the audit trail can be written",
            self.audit_healthy.clone(),
        );
        r.register(
            "audit_queue_depth",
            "Audit records waiting to be written",
            self.audit_queue_depth.clone(),
        );
        r.register(
            "audit_fsync_seconds",
            "Duration of the latest audit fsync",
            self.audit_fsync_seconds.clone(),
        );
        r.register(
            "server_cert_expiry_seconds",
            "Seconds until the server certificate expires",
            self.server_cert_expiry_seconds.clone(),
        );
        r.register(
            "crl_next_update_seconds",
            "Seconds until each CRL's nextUpdate (negative: stale)",
            self.crl_next_update_seconds.clone(),
        );
        r.register("draining", "1 while draining for shutdown", self.draining.clone());
        r.register(
            "break_glass",
            "Requests let through by break-glass (X-Break-Glass-Reason), by organisation and route",
            self.break_glass.clone(),
        );
        r.register(
            "alerts",
            "Auditor's alerts raised by this process, by kind, each counted once",
            self.alerts.clone(),
        );
        r
    }

    pub fn observe_start(&self) {
        self.in_flight.inc();
    }

    pub fn observe_end(
        &self,
        route: Option<Arc<str>>,
        class: Option<Word>,
        decision: &'static str,
        status: u16,
        started: Instant,
    ) {
        self.in_flight.dec();
        self.latency
            .get_or_create(&RouteLabels { route: route.clone() })
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                class,
                decision,
                status,
            })
            .inc();
    }

    pub fn observe_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    pub fn upstream_error(&self, upstream: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .inc();
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// `source`: `handshake` or `request`.
    pub fn refusal_coalesced(&self, source: &'static str) {
        self.refusals_coalesced.get_or_create(&SourceLabels { source }).inc();
    }

    pub fn tls_rejected(&self, reason: &str) {
        self.tls_rejections
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn break_glass(&self, org: &str, route: &Arc<str>) {
        self.break_glass
            .get_or_create(&BreakGlassLabels {
                org: org.to_string(),
                route: route.clone(),
            })
            .inc();
    }

    /// `reason`: `per_address` or `per_org`.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabels { result: result.into() })
            .inc();
    }

    /// Renders the Prometheus text format.
    pub fn encode(&self) -> String {
        self.render(self.registry())
    }

    /// Renders the Prometheus text format with the audit writer's own figures (kept by the
    /// writer, read at scrape time): records written and fsyncs, whose rate beside
    /// `audit_fsync_seconds` shows how well group commit is batching, and the fsyncs'
    /// durations.
    pub fn encode_with(&self, audit: &crate::audit::AuditStats, fsync_durations: &Histogram) -> String {
        let mut r = self.registry();
        r.register(
            "audit_fsync_duration_seconds",
            "Duration of each audit fsync (group commit)",
            fsync_durations.clone(),
        );
        r.register(
            "audit_records",
            "Audit records written",
            ConstCounter::new(audit.records_written),
        );
        r.register(
            "audit_fsyncs",
            "Audit fsyncs (group commits)",
            ConstCounter::new(audit.fsyncs),
        );
        r.register(
            "audit_records_dropped",
            "tls_rejected and refusals_coalesced records dropped: audit queue full or disk below min_free_bytes",
            ConstCounter::new(audit.records_dropped),
        );
        self.render(r)
    }

    fn render(&self, registry: Registry) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The alerts this process has raised, so that each is counted in `caregate_alerts_total` and
/// logged once however often `audit::alerts::evaluate` runs. It holds the last evaluation's
/// keys only: an alert that leaves the evaluated window cannot come back, so memory stays the
/// size of one evaluation.
#[derive(Debug, Default)]
pub struct RaisedAlerts {
    keys: HashSet<(AlertKind, String, i64)>,
}

impl RaisedAlerts {
    /// Counts and logs the alerts of this evaluation not raised before; answers them.
    pub fn raise<'a>(&mut self, metrics: &Metrics, alerts: &'a [Alert]) -> Vec<&'a Alert> {
        let mut keys = HashSet::with_capacity(alerts.len());
        let mut new = Vec::new();
        for a in alerts {
            let key = (a.kind, a.subject.clone(), a.at);
            if !self.keys.contains(&key) && !keys.contains(&key) {
                metrics
                    .alerts
                    .get_or_create(&KindLabels { kind: a.kind.as_str() })
                    .inc();
                // The summary names organisations, addresses and counts, never a patient.
                tracing::warn!(kind = a.kind.as_str(), subject = %a.subject, at_us = a.at, "alert: {}", a.summary);
                new.push(a);
            }
            keys.insert(key);
        }
        self.keys = keys;
        new
    }
}
