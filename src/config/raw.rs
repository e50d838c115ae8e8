//! The config file as written: serde structs with `deny_unknown_fields`, which `validate`
//! turns into [`super::Config`], naming the key of the first problem. A file serde refuses is
//! reported by [`toml_error`], which finds the key it stopped at.

use super::{Class, ConfigError, CrlExpired, Durability};
use serde::Deserialize;
use std::ops::Range;
use std::path::PathBuf;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listener: RawListener,
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    pub(super) organisation: Vec<RawOrganisation>,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimits,
    pub(super) audit: RawAudit,
    pub(super) console: Option<RawConsole>,
    #[serde(default)]
    pub(super) alerts: RawAlerts,
}

/// `[alerts]`: read by the process that computes alerts (the console, `audit serve`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) bulk_multiplier: Option<f64>,
    pub(super) bulk_floor: Option<u64>,
    pub(super) history: Option<String>,
    pub(super) lookback: Option<String>,
    pub(super) refusal_spike: Option<u64>,
    pub(super) tls_rejection_spike: Option<u64>,
    pub(super) checkpoint_grace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) bind: String,
    pub(super) server_cert: PathBuf,
    pub(super) server_key: PathBuf,
    pub(super) client_ca: Vec<PathBuf>,
    #[serde(default)]
    pub(super) crl: Vec<PathBuf>,
    pub(super) max_connections: Option<usize>,
    pub(super) handshake_timeout: Option<String>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_header_bytes: Option<String>,
    pub(super) max_inspect_bytes: Option<String>,
    pub(super) drain_timeout: Option<String>,
    pub(super) crl_expired: Option<CrlExpired>,
    pub(super) session_resumption: Option<bool>,
    pub(super) session_lifetime: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) body_idle_timeout: Option<String>,
    pub(super) max_connections_per_address: Option<usize>,
    pub(super) max_connections_per_org: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) bind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) bind: String,
    #[serde(default)]
    pub(super) auditors: Vec<String>,
    pub(super) db: Option<PathBuf>,
    #[serde(default)]
    pub(super) plain_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) org_from: Vec<String>,
    pub(super) organisations_csv: Option<PathBuf>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            org_from: vec!["san_uri:urn:nhs:ods:".into(), "subject:OU".into(), "endpoint".into()],
            organisations_csv: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) fqdn: String,
    pub(super) org: String,
    pub(super) asid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganisation {
    pub(super) code: String,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: String,
    pub(super) urls: Vec<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    pub(super) path_prefix: String,
    pub(super) host: Option<String>,
    pub(super) upstream: String,
    pub(super) class: Option<Class>,
    pub(super) provider_host: Option<String>,
    #[serde(default)]
    pub(super) require_ssp_headers: bool,
    #[serde(default)]
    pub(super) check_token_org: bool,
    #[serde(default = "yes")]
    pub(super) check_nhs_number: bool,
    pub(super) inspect_body: Option<bool>,
    pub(super) inspect_body_limit: Option<String>,
    #[serde(default = "yes")]
    pub(super) patient_ids_are_nhs_numbers: bool,
    #[serde(default)]
    pub(super) allow_path_params: bool,
    #[serde(default)]
    pub(super) allow: Vec<RawAllow>,
    #[serde(default)]
    pub(super) break_glass: Vec<RawBreakGlass>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    #[serde(default)]
    pub(super) orgs: Vec<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    #[serde(default)]
    pub(super) interactions: Vec<String>,
    #[serde(default)]
    pub(super) spine_interactions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreakGlass {
    #[serde(default)]
    pub(super) orgs: Vec<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) methods: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimits {
    pub(super) epr: Option<RawLimit>,
    pub(super) image: Option<RawLimit>,
    pub(super) other: Option<RawLimit>,
    #[serde(default, rename = "override")]
    pub(super) overrides: Vec<RawOverride>,
    pub(super) refusals_per_second: Option<f64>,
    pub(super) refusal_burst: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) requests_per_second: Option<f64>,
    pub(super) burst: Option<u32>,
    pub(super) max_concurrent: Option<u32>,
    pub(super) bytes_per_second: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    pub(super) org: String,
    pub(super) class: Class,
    pub(super) requests_per_second: Option<f64>,
    pub(super) burst: Option<u32>,
    pub(super) max_concurrent: Option<u32>,
    pub(super) bytes_per_second: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) dir: PathBuf,
    pub(super) durability: Option<Durability>,
    pub(super) rotate_bytes: Option<String>,
    pub(super) signing_key: Option<PathBuf>,
    pub(super) checkpoint_every: Option<u64>,
    pub(super) checkpoint_interval: Option<String>,
    pub(super) max_record_bytes: Option<String>,
    pub(super) min_free_bytes: Option<String>,
    pub(super) stall_timeout: Option<String>,
    pub(super) max_queue_records: Option<u64>,
    pub(super) max_queue_bytes: Option<String>,
}

/// One sentence from a TOML error: the key serde stopped at, what it said, and the line.
/// Serde's own errors know the place but not the key (`unknown field `port``), so the key is
/// found again from that place in the file; without one the line stands in for it.
pub(super) fn toml_error(file: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', " ");
    let (key, message) = match e.span() {
        None => ("(file)".to_string(), message),
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            match key_at(text, span) {
                Some(key) => (key, format!("{message} (line {line})")),
                None => (format!("line {line}"), message),
            }
        }
    };
    ConfigError {
        file: file.to_string(),
        key,
        message,
    }
}

/// The key whose name or value holds the bytes `at` of a TOML document, spelt as the config's
/// errors spell keys (`route[0].allow[1].methods`); the narrowest, when tables nest. `None`
/// when the text does not parse or no key holds them: an error about the whole file (a missing
/// `[audit]`) has the document's empty span.
pub(super) fn key_at(text: &str, at: Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    if at.is_empty() || at == doc.span() {
        return None;
    }
    let mut best = None;
    in_table(doc.get_ref(), &at, "", &mut best);
    best.map(|(_, key)| key)
}

/// The narrowest span holding the place so far: its width and its key.
type Best = Option<(usize, String)>;

fn in_table(table: &DeTable<'_>, at: &Range<usize>, path: &str, best: &mut Best) {
    for (k, v) in table {
        let key = if path.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{path}.{}", k.get_ref())
        };
        consider(k.span(), at, &key, best);
        in_value(v, at, key, best);
    }
}

fn in_value(v: &Spanned<DeValue<'_>>, at: &Range<usize>, key: String, best: &mut Best) {
    match v.get_ref() {
        DeValue::Table(t) => in_table(t, at, &key, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                in_value(item, at, format!("{key}[{i}]"), best);
            }
        }
        _ => {}
    }
    consider(v.span(), at, &key, best);
}

fn consider(span: Range<usize>, at: &Range<usize>, key: &str, best: &mut Best) {
    let width = span.end - span.start;
    if span.start <= at.start && at.end <= span.end && best.as_ref().is_none_or(|(w, _)| width < *w) {
        *best = Some((width, key.to_string()));
    }
}
