//! From the file as written ([`RawConfig`]) to a [`Config`]: one function per section, then the
//! checks across sections (`references`). Each returns the first problem as a [`KeyError`]
//! naming its key; paths are resolved against the config file's folder here.

mod alerts;
mod references;
mod traffic;

use super::raw::{RawAdmin, RawAudit, RawConfig, RawConsole, RawEndpoint, RawIdentity, RawListener, RawOrganisation};
use super::units::{parse_duration, parse_size};
use super::{Admin, Audit, Config, Console, Endpoint, Identity, KeyError, Listener, OrgSource, Organisation};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl RawConfig {
    pub(super) fn validate(self, base: &Path) -> Result<Config, KeyError> {
        let base = Base(base);
        let config = Config {
            path: PathBuf::new(),
            sha256: String::new(),
            listener: listener(self.listener, &base)?,
            admin: self.admin.map(admin).transpose()?,
            identity: identity(self.identity, &base)?,
            endpoints: endpoints(self.endpoint)?,
            organisations: organisations(self.organisation)?,
            upstreams: traffic::upstreams(self.upstream, &base)?,
            routes: traffic::routes(self.route)?,
            refusal_budget: traffic::refusal_budget(&self.rate_limit)?,
            rate_limits: traffic::rate_limits(self.rate_limit)?,
            audit: audit(self.audit, &base)?,
            alerts: alerts::alerts(self.alerts)?,
            console: None,
        };
        let config = Config {
            console: self.console.map(|c| console(c, &config.audit, &base)).transpose()?,
            ..config
        };
        references::check(&config)?;
        Ok(config)
    }
}

/// The config file's folder, which relative paths in it are relative to.
struct Base<'a>(&'a Path);

impl Base<'_> {
    fn path(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.0.join(path)
        }
    }
}

// === sections ===

/// `[listener]`: addresses, certificates, connection limits and timeouts.
fn listener(l: RawListener, base: &Base) -> Result<Listener, KeyError> {
    if l.client_ca.is_empty() {
        return Err(KeyError::new("listener.client_ca", "needs at least one CA file"));
    }
    let max_connections = match l.max_connections {
        Some(0) => return Err(KeyError::new("listener.max_connections", "must be at least 1")),
        Some(n) => n,
        None => 20_000,
    };
    // One client may not take every connection: by default a quarter of them per address, half
    // per organisation.
    let per = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(KeyError::new(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default.max(1)),
    };
    let listener = Listener {
        bind: addr("listener.bind", &l.bind)?,
        server_cert: base.path(l.server_cert),
        server_key: base.path(l.server_key),
        client_ca: l.client_ca.into_iter().map(|p| base.path(p)).collect(),
        crl: l.crl.into_iter().map(|p| base.path(p)).collect(),
        max_connections,
        handshake_timeout: dur(
            "listener.handshake_timeout",
            &l.handshake_timeout,
            Duration::from_secs(10),
        )?,
        header_timeout: dur("listener.header_timeout", &l.header_timeout, Duration::from_secs(10))?,
        idle_timeout: dur("listener.idle_timeout", &l.idle_timeout, Duration::from_secs(75))?,
        max_header_bytes: size("listener.max_header_bytes", &l.max_header_bytes, 64 << 10)? as usize,
        max_inspect_bytes: size("listener.max_inspect_bytes", &l.max_inspect_bytes, 64 << 20)?,
        drain_timeout: dur("listener.drain_timeout", &l.drain_timeout, Duration::from_secs(30))?,
        crl_expired: l.crl_expired.unwrap_or_default(),
        session_resumption: l.session_resumption.unwrap_or(true),
        session_lifetime: dur(
            "listener.session_lifetime",
            &l.session_lifetime,
            Duration::from_secs(300),
        )?,
        workers: match l.workers {
            Some(0) => return Err(KeyError::new("listener.workers", "must be at least 1")),
            Some(n) if n > 1024 => return Err(KeyError::new("listener.workers", "must be at most 1024")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        body_idle_timeout: dur(
            "listener.body_idle_timeout",
            &l.body_idle_timeout,
            Duration::from_secs(60),
        )?,
        max_connections_per_address: per(
            "listener.max_connections_per_address",
            l.max_connections_per_address,
            max_connections / 4,
        )?,
        max_connections_per_org: per(
            "listener.max_connections_per_org",
            l.max_connections_per_org,
            max_connections / 2,
        )?,
    };
    if listener.body_idle_timeout.is_zero() {
        return Err(KeyError::new("listener.body_idle_timeout", "must be more than 0"));
    }
    // RFC 8446 caps a ticket's lifetime at 7 days; under a second the cache could not tell.
    let lifetime = listener.session_lifetime;
    if !lifetime.is_zero() && !(Duration::from_secs(1)..=Duration::from_secs(7 * 86400)).contains(&lifetime) {
        return Err(KeyError::new(
            "listener.session_lifetime",
            "must be \"0s\" (no resumption) or from 1s to 7d",
        ));
    }
    if listener.max_header_bytes < 8192 {
        return Err(KeyError::new("listener.max_header_bytes", "must be at least 8KiB"));
    }
    Ok(listener)
}

/// `[admin]`: where the plain-HTTP admin endpoint listens.
fn admin(a: RawAdmin) -> Result<Admin, KeyError> {
    Ok(Admin {
        bind: addr("admin.bind", &a.bind)?,
    })
}

/// `[console]`: the auditor's console. Deny by default: no `auditors`, nobody gets in; plain
/// HTTP only where nobody but this host can listen in.
fn console(c: RawConsole, audit: &Audit, base: &Base) -> Result<Console, KeyError> {
    let bind = addr("console.bind", &c.bind)?;
    if c.plain_http && !bind.ip().is_loopback() {
        return Err(KeyError::new(
            "console.plain_http",
            format!(
                "is allowed only when console.bind is a loopback address, not {}",
                bind.ip()
            ),
        ));
    }
    let (mut auditor_orgs, mut auditor_groups) = (Vec::new(), Vec::new());
    for (i, a) in c.auditors.iter().enumerate() {
        match a.strip_prefix("group:") {
            Some("") => {
                return Err(KeyError::new(
                    format!("console.auditors[{i}]"),
                    "\"group:\" needs a group name",
                ))
            }
            Some(g) => auditor_groups.push(g.to_string()),
            None => {
                ods_code(&format!("console.auditors[{i}]"), a)?;
                auditor_orgs.push(a.to_ascii_uppercase());
            }
        }
    }
    // Beside the audit folder, never inside it: the trail's readers expect only its own files.
    let db = match c.db {
        Some(p) => base.path(p),
        None => {
            let mut name = audit.dir.file_name().unwrap_or_default().to_os_string();
            name.push(".index.sqlite");
            audit.dir.with_file_name(name)
        }
    };
    Ok(Console {
        bind,
        auditor_orgs,
        auditor_groups,
        db,
        plain_http: c.plain_http,
    })
}

/// `[identity]`: where organisation codes come from, in order.
fn identity(i: RawIdentity, base: &Base) -> Result<Identity, KeyError> {
    let mut org_from = Vec::new();
    for (j, s) in i.org_from.iter().enumerate() {
        let source =
            OrgSource::try_from(s.as_str()).map_err(|m| KeyError::new(format!("identity.org_from[{j}]"), m))?;
        org_from.push(source);
    }
    if org_from.is_empty() {
        return Err(KeyError::new("identity.org_from", "needs at least one source"));
    }
    Ok(Identity {
        org_from,
        organisations_csv: i.organisations_csv.map(|p| base.path(p)),
    })
}

/// `[[endpoint]]`: registered systems; names lower-cased, codes upper-cased.
fn endpoints(raw: Vec<RawEndpoint>) -> Result<Vec<Endpoint>, KeyError> {
    let mut endpoints = Vec::new();
    for (i, e) in raw.into_iter().enumerate() {
        if e.fqdn.is_empty() {
            return Err(KeyError::new(format!("endpoint[{i}].fqdn"), "must not be empty"));
        }
        ods_code(&format!("endpoint[{i}].org"), &e.org)?;
        endpoints.push(Endpoint {
            fqdn: e.fqdn.to_ascii_lowercase(),
            org: e.org.to_ascii_uppercase(),
            asid: e.asid,
        });
    }
    Ok(endpoints)
}

/// `[[organisation]]`: codes upper-cased; a missing name is the code.
fn organisations(raw: Vec<RawOrganisation>) -> Result<Vec<Organisation>, KeyError> {
    let mut organisations = Vec::new();
    for (i, o) in raw.into_iter().enumerate() {
        ods_code(&format!("organisation[{i}].code"), &o.code)?;
        let code = o.code.to_ascii_uppercase();
        organisations.push(Organisation {
            name: o.name.unwrap_or_else(|| code.clone()),
            code,
            groups: o.groups,
        });
    }
    Ok(organisations)
}

/// `[audit]`: the trail's folder, durability, rotation and checkpoints.
fn audit(a: RawAudit, base: &Base) -> Result<Audit, KeyError> {
    let audit = Audit {
        dir: base.path(a.dir),
        durability: a.durability.unwrap_or_default(),
        rotate_bytes: size("audit.rotate_bytes", &a.rotate_bytes, 256 << 20)?,
        signing_key: a.signing_key.map(|p| base.path(p)),
        checkpoint_every: match a.checkpoint_every {
            Some(0) => return Err(KeyError::new("audit.checkpoint_every", "must be at least 1")),
            Some(n) => n,
            None => 10_000,
        },
        checkpoint_interval: dur(
            "audit.checkpoint_interval",
            &a.checkpoint_interval,
            Duration::from_secs(60),
        )?,
        max_record_bytes: size(
            "audit.max_record_bytes",
            &a.max_record_bytes,
            super::DEFAULT_MAX_RECORD_BYTES,
        )?,
        min_free_bytes: size("audit.min_free_bytes", &a.min_free_bytes, super::DEFAULT_MIN_FREE_BYTES)?,
        stall_timeout: dur("audit.stall_timeout", &a.stall_timeout, super::DEFAULT_STALL_TIMEOUT)?,
        max_queue_records: match a.max_queue_records {
            Some(0) => return Err(KeyError::new("audit.max_queue_records", "must be at least 1")),
            Some(n) => n,
            None => super::DEFAULT_MAX_QUEUE_RECORDS,
        },
        max_queue_bytes: size(
            "audit.max_queue_bytes",
            &a.max_queue_bytes,
            super::DEFAULT_MAX_QUEUE_BYTES,
        )?,
    };
    if audit.rotate_bytes < 4096 {
        return Err(KeyError::new("audit.rotate_bytes", "must be at least 4KiB"));
    }
    if audit.max_record_bytes < super::MIN_MAX_RECORD_BYTES {
        return Err(KeyError::new("audit.max_record_bytes", "must be at least 1KiB"));
    }
    if audit.max_queue_bytes < audit.max_record_bytes {
        return Err(KeyError::new(
            "audit.max_queue_bytes",
            "must be at least audit.max_record_bytes",
        ));
    }
    if audit.stall_timeout.is_zero() {
        return Err(KeyError::new("audit.stall_timeout", "must be more than 0s"));
    }
    Ok(audit)
}

// === values ===

fn dur(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, KeyError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|m| KeyError::new(key, m)),
    }
}

fn size(key: &str, v: &Option<String>, default: u64) -> Result<u64, KeyError> {
    match v {
        None => Ok(default),
        Some(s) => parse_size(s).map_err(|m| KeyError::new(key, m)),
    }
}

fn addr(key: &str, s: &str) -> Result<SocketAddr, KeyError> {
    s.parse()
        .map_err(|_| KeyError::new(key, format!("\"{s}\" is not an address like \"127.0.0.1:8443\"")))
}

fn ods_code(key: &str, s: &str) -> Result<(), KeyError> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyError::new(
            key,
            format!("\"{s}\" is not an ODS code (letters and digits)"),
        ));
    }
    Ok(())
}
