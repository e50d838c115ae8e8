//! caregate: a mutual-TLS gateway for clinical data sharing between health and care networks.
//!
//! One request goes through these phases:
//!
//! ```text
//! accept ─► TLS (client cert verified) ─► identity (ODS code) ─► admit: framing, path, route,
//!        policy, clinical checks, limits ─► audit `access` durable (Permit) ─► forward + stream
//!        ─► audit `complete`
//! ```
//!
//! The modules, in layer order: each uses only those above it (`.ci/layers.py` checks it;
//! `docs/architecture.md` says what each is for).
//!
//! - [`worker`]: the worker threads, and which one this is.
//! - [`config`]: the TOML file, validated once; every error names its key.
//! - [`audit`]: the tamper-evident trail: records, writer, verify, query, export.
//! - [`metrics`]: Prometheus series for the admin listener.
//! - [`directory`]: organisations, groups and registered endpoints (config and ODS CSV).
//! - [`identity`]: verified leaf certificate → organisation code, subject, fingerprint.
//! - [`tls`]: rustls server config, client-cert verification (CA, CRL, key usage); the
//!   upstreams' client config.
//! - [`framing`]: HTTP/1 and HTTP/2 framing that hyper resolves silently, caught for refusal.
//! - [`path`]: the one normalised path that is both matched and forwarded.
//! - [`route`]: path + host → route (longest prefix).
//! - [`clinical`]: FHIR / DICOMweb / Spine facts for policy and audit.
//! - [`policy`]: deny by default; the rule that allowed.
//! - [`limit`]: per-(organisation, class) rate, concurrency and bandwidth.
//! - [`reject`]: refusals → status codes and bodies, in one place.
//! - [`admit`]: every check in pipeline order → `Admitted`; `Permit`.
//! - [`forward`]: upstream pools, every header set or removed, streaming.
//! - [`body`]: request bytes counted; the response body that completes its audit record.
//! - [`state`]: everything reloadable, built from a config.
//! - [`gateway`]: what every request shares; reload, request ids, housekeeping.
//! - [`proxy`]: one request: admit → record → forward → complete, rendered once.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`console`]: the auditor's web console over the audit index (`[console]`).
//! - [`server`]: listeners, accept loop, connection cap, drain.
//! - [`pki`], [`demo`]: the development PKI and the embedded demo.
//! - [`cli`]: `check`, `explain` and the auditor's commands, as text.
pub mod admin;
pub mod admit;
pub mod audit;
pub mod body;
pub mod cli;
pub mod clinical;
pub mod config;
pub mod console;
pub mod demo;
pub mod directory;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod identity;
pub mod limit;
pub mod metrics;
pub mod path;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod reject;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod worker;

/// The error of a body or connection on its way through the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
