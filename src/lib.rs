//! caregate: a mutual-TLS gateway for clinical data sharing between health and care networks.
//!
//! One request goes through these phases, and the modules read in the same order:
//!
//! ```text
//! accept ─► TLS (client cert verified) ─► identity (ODS code) ─► path normalised ─► route
//!        ─► policy ─► limits ─► audit `access` durable ─► forward + stream ─► audit `complete`
//! ```
//!
//! - [`config`]: the TOML file, validated once; every error names its key.
//! - [`tls`]: rustls server config, client-cert verification (CA, CRL, key usage), handshakes.
//! - [`h1guard`]: HTTP/1 framing that hyper resolves silently, caught for refusal.
//! - [`identity`]: verified leaf certificate → organisation code, subject, fingerprint.
//! - [`directory`]: organisations, groups and registered endpoints (config and ODS CSV).
//! - [`path`]: the one normalised path that is both matched and forwarded.
//! - [`route`]: path + host → route (longest prefix).
//! - [`clinical`]: FHIR / DICOMweb / Spine facts for policy and audit.
//! - [`policy`]: deny by default; the rule that allowed or the reason it refused.
//! - [`limit`]: per-(organisation, class) rate, concurrency and bandwidth.
//! - [`reject`]: refusals → status codes and bodies, in one place.
//! - [`proxy`]: the pipeline for one request, phase by phase.
//! - [`forward`]: upstream pools, header hygiene, streaming bodies.
//! - [`body`]: request bytes counted; the response body that completes its audit record.
//! - [`audit`]: the tamper-evident trail: writer, verify, query, export.
//! - [`metrics`]: Prometheus series for the admin listener.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`state`]: everything reloadable, built from a config, swapped atomically.
//! - [`server`]: listeners, accept loop, connection cap, reload, drain.
//! - [`cli`]: `check`, `explain` and the auditor's commands, as text.
//! - [`pki`], [`demo`]: the development PKI and the embedded demo.

pub mod admin;
pub mod audit;
pub mod body;
pub mod cli;
pub mod clinical;
pub mod config;
pub mod demo;
pub mod directory;
pub mod forward;
pub mod h1guard;
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
