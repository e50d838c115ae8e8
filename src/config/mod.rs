//! The TOML config: serde structs that refuse unknown keys (`raw`), validated once into
//! [`Config`] by one function per section (`validate`).
//!
//! Every error names the key it is about (`route[2].upstream: no [[upstream]] named "pacs"`),
//! because the person reading it is editing that file at 3am. What serde itself refuses (an
//! unknown key, a wrong type, a `class` that is no class) is named by the key serde stopped at,
//! with its line.

mod enums;
mod raw;
#[cfg(test)]
mod tests;
pub mod units;
mod validate;

pub use enums::{Class, CrlExpired, Durability, OrgSource};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config error: which file, which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// What is wrong with one key, before it is known which file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error, saying which config file it is in.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.display().to_string(),
            key: self.key,
            message: self.message,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; relative paths inside were resolved against its folder.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (hex), recorded in `lifecycle` audit records.
    pub sha256: String,
    pub listener: Listener,
    pub admin: Option<Admin>,
    pub identity: Identity,
    pub endpoints: Vec<Endpoint>,
    pub organisations: Vec<Organisation>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub rate_limits: RateLimits,
    /// `[rate_limit] refusals_per_second` and `refusal_burst`.
    pub refusal_budget: RefusalBudget,
    pub audit: Audit,
    /// The auditor's console (`[console]`), when configured.
    pub console: Option<Console>,
    /// `[alerts]`: what the auditor's alerts (`audit::alerts`) count as unusual.
    pub alerts: AlertSettings,
}

/// `[alerts]`: the thresholds of `audit::alerts::evaluate`. Defaults: [`AlertSettings::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Bulk access: an organisation's distinct patients in an hour above this many times its
    /// hourly 99th percentile over `history`…
    pub bulk_multiplier: f64,
    /// …and above this many (so a quiet organisation's first busy hour is not an alert).
    pub bulk_floor: u64,
    /// The history an hour is compared with: 28 days.
    pub history: Duration,
    /// Alerts are raised for this much of the recent trail (hours, break-glass uses): 24 hours.
    pub lookback: Duration,
    /// Refused requests from one organisation (or address) in an hour that make a spike.
    pub refusal_spike: u64,
    /// Refused TLS handshakes from one address in an hour that make a spike.
    pub tls_rejection_spike: u64,
    /// A checkpoint is overdue this long after its predecessor's `next_due`.
    pub checkpoint_grace: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            bulk_multiplier: 3.0,
            bulk_floor: 50,
            history: Duration::from_secs(28 * 86400),
            lookback: Duration::from_secs(86400),
            refusal_spike: 100,
            tls_rejection_spike: 100,
            checkpoint_grace: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub bind: SocketAddr,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: Vec<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// The most bytes of request bodies held at once for inspection, across all requests;
    /// a request that would go over is refused (503 `overloaded`).
    pub max_inspect_bytes: u64,
    pub drain_timeout: Duration,
    pub crl_expired: CrlExpired,
    /// TLS session resumption (TLS 1.3 tickets into a server-side cache, TLS 1.2 session ids).
    /// On by default; off makes every new connection a full handshake with certificate checks.
    pub session_resumption: bool,
    /// How long a TLS session can be resumed after the full handshake that authenticated it
    /// (a chain of TLS 1.3 tickets included); zero turns resumption off.
    pub session_lifetime: Duration,
    /// Threads that serve connections, each with its own runtime and upstream pools; by
    /// default one per CPU.
    pub workers: usize,
    /// A request body whose client sends nothing, or a response whose client reads nothing, for
    /// this long is cut off.
    pub body_idle_timeout: Duration,
    /// Open connections from one IP address, checked at accept (before the handshake).
    pub max_connections_per_address: usize,
    /// Open connections of one organisation (or, for a certificate that names none, of one
    /// certificate), checked once the handshake has said who it is.
    pub max_connections_per_org: usize,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub bind: SocketAddr,
}

/// `[console]`: the auditor's web console (`console`).
#[derive(Debug, Clone)]
pub struct Console {
    pub bind: SocketAddr,
    /// Organisation codes allowed to use it (upper case). With `groups`, deny by default: both
    /// empty lets nobody in.
    pub auditor_orgs: Vec<String>,
    /// Directory groups (`group:NAME` in `auditors`) whose members may use it.
    pub auditor_groups: Vec<String>,
    /// The index the console reads (and the in-process follower writes).
    pub db: PathBuf,
    /// Plain HTTP instead of mutual TLS, allowed only on a loopback `bind`.
    pub plain_http: bool,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub org_from: Vec<OrgSource>,
    pub organisations_csv: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub fqdn: String,
    pub org: String,
    pub asid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Organisation {
    pub code: String,
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub urls: Vec<http::Uri>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    pub host: Option<String>,
    pub upstream: String,
    pub class: Class,
    pub provider_host: Option<String>,
    pub require_ssp_headers: bool,
    pub check_token_org: bool,
    pub check_nhs_number: bool,
    /// Read request bodies that may name a patient (FHIR JSON, form posts) before the access
    /// record is made: default true on `epr` routes.
    pub inspect_body: bool,
    /// The largest body read for inspection; a larger one is refused (413 `body_too_large`).
    pub inspect_body_limit: u64,
    /// A 10-digit Patient id that passes the check digit is an NHS number (PDS-style APIs);
    /// false where ids are opaque.
    pub patient_ids_are_nhs_numbers: bool,
    /// Accept `;` parameters in path segments: cut before matching (and forwarding), recorded.
    pub allow_path_params: bool,
    pub allow: Vec<AllowRule>,
    /// Who may override a `not_allowed` refusal in an emergency, with `X-Break-Glass-Reason`.
    pub break_glass: Vec<BreakGlass>,
}

impl Route {
    /// The default of `inspect_body_limit`.
    pub const INSPECT_BODY_LIMIT: u64 = 1 << 20;
}

#[derive(Debug, Clone, Default)]
pub struct AllowRule {
    /// Organisation codes; `"*"` means any organisation known to the gateway.
    pub orgs: Vec<String>,
    pub groups: Vec<String>,
    /// Upper-case methods; empty means any method.
    pub methods: Vec<String>,
    pub resources: Vec<String>,
    pub interactions: Vec<String>,
    pub spine_interactions: Vec<String>,
}

/// A `[[route.break_glass]]` entry: organisations or groups (never `"*"`: break-glass names
/// who may use it) that may override a `not_allowed` refusal with `X-Break-Glass-Reason`.
#[derive(Debug, Clone, Default)]
pub struct BreakGlass {
    /// Organisation codes, upper case.
    pub orgs: Vec<String>,
    pub groups: Vec<String>,
    /// Upper-case methods; empty means any method.
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassLimit {
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub bytes_per_second: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitOverride {
    pub org: String,
    pub class: Class,
    pub limit: ClassLimit,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Per class; a class that is absent is not limited.
    pub classes: HashMap<Class, ClassLimit>,
    pub overrides: Vec<LimitOverride>,
}

impl RateLimits {
    /// The limit for this organisation and class: the class table with the organisation's
    /// override fields laid over it.
    pub fn for_org(&self, org: &str, class: Class) -> Option<ClassLimit> {
        let base = self.classes.get(&class).copied();
        let over = self.overrides.iter().find(|o| o.org == org && o.class == class);
        match (base, over) {
            (b, None) => b,
            (None, Some(o)) => Some(o.limit),
            (Some(b), Some(o)) => Some(ClassLimit {
                requests_per_second: o.limit.requests_per_second.or(b.requests_per_second),
                burst: o.limit.burst.or(b.burst),
                max_concurrent: o.limit.max_concurrent.or(b.max_concurrent),
                bytes_per_second: o.limit.bytes_per_second.or(b.bytes_per_second),
            }),
        }
    }
}

/// How many refused requests an organisation (or an unknown organisation's certificate) may
/// have recorded one by one: `burst` at once, `per_second` sustained. Past it they are answered
/// 429 `refusal_budget` and counted (`audit::refusals`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefusalBudget {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RefusalBudget {
    /// Far above what a well-behaved client is refused: a GP system that gets ten refusals a
    /// second is broken or hostile.
    fn default() -> Self {
        RefusalBudget {
            per_second: 10.0,
            burst: 50,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub dir: PathBuf,
    pub durability: Durability,
    pub rotate_bytes: u64,
    pub signing_key: Option<PathBuf>,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// No record is longer than this: longer string and list fields are cut, keeping a prefix,
    /// `<field>_len` and `<field>_sha256` (`audit::cut`).
    pub max_record_bytes: u64,
    /// Below this much free space in `dir`, new durable records are refused (503, not ready);
    /// completions and checkpoints are still written.
    pub min_free_bytes: u64,
    /// A durable append not answered within this fails (503), and `/readyz` reports not
    /// ready while a write or sync has taken longer.
    pub stall_timeout: Duration,
    /// The writer's queue: at most this many records…
    pub max_queue_records: u64,
    /// …and this many bytes of encoded fields.
    pub max_queue_bytes: u64,
}

/// `audit.max_record_bytes`: 8 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 8 << 10;
/// `audit.min_free_bytes`: 256 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;
/// `audit.stall_timeout`: 10 s.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `audit.max_queue_records`: 100,000.
pub const DEFAULT_MAX_QUEUE_RECORDS: u64 = 100_000;
/// `audit.max_queue_bytes`: 64 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 << 20;
/// The smallest `audit.max_record_bytes`: room for any record cut to its summary.
pub const MIN_MAX_RECORD_BYTES: u64 = 1 << 10;

impl Audit {
    /// Defaults for an audit trail in `dir` (used by tests and tools that write trails).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Audit {
        Audit {
            dir: dir.into(),
            durability: Durability::Fsync,
            rotate_bytes: 256 << 20,
            signing_key: None,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_queue_records: DEFAULT_MAX_QUEUE_RECORDS,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a config file. Files it names are not opened here: the
    /// runtime state does that (see `state::State::build`), so `check` exercises both.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::from_bytes(path, &bytes)
    }

    /// Parses config text as if it were the file at `path` (relative paths resolve there).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| err("(file)", "the config file is not UTF-8".into()))?;
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| raw::toml_error(&file, text, e))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let sha256 = crate::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        raw.validate(&base)
            .map(|mut c| {
                c.path = path.to_path_buf();
                c.sha256 = sha256;
                c
            })
            .map_err(|e| e.in_file(path))
    }
}
