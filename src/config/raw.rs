//! The config file as written: serde structs with `deny_unknown_fields`, then `validate`
//! turns them into [`super::Config`], naming the key of the first problem.

use super::units::{parse_duration, parse_size};
use super::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listener: RawListener,
    admin: Option<RawAdmin>,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    organisation: Vec<RawOrganisation>,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    rate_limit: RawRateLimits,
    audit: RawAudit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    bind: String,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: Vec<PathBuf>,
    #[serde(default)]
    crl: Vec<PathBuf>,
    max_connections: Option<usize>,
    handshake_timeout: Option<String>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_header_bytes: Option<String>,
    drain_timeout: Option<String>,
    crl_expired: Option<String>,
    session_resumption: Option<bool>,
    workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    org_from: Vec<String>,
    organisations_csv: Option<PathBuf>,
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
struct RawEndpoint {
    fqdn: String,
    org: String,
    asid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganisation {
    code: String,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    urls: Vec<String>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    path_prefix: String,
    host: Option<String>,
    upstream: String,
    class: Option<String>,
    provider_host: Option<String>,
    #[serde(default)]
    require_ssp_headers: bool,
    #[serde(default)]
    check_token_org: bool,
    #[serde(default = "yes")]
    check_nhs_number: bool,
    #[serde(default)]
    allow: Vec<RawAllow>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    orgs: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    interactions: Vec<String>,
    #[serde(default)]
    spine_interactions: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    epr: Option<RawLimit>,
    image: Option<RawLimit>,
    other: Option<RawLimit>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    max_concurrent: Option<u32>,
    bytes_per_second: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    org: String,
    class: String,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    max_concurrent: Option<u32>,
    bytes_per_second: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    dir: PathBuf,
    durability: Option<String>,
    rotate_bytes: Option<String>,
    signing_key: Option<PathBuf>,
    checkpoint_every: Option<u64>,
    checkpoint_interval: Option<String>,
}

/// One sentence from a TOML error: the line, the key and what serde said.
pub(super) fn toml_error(file: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    let message = e.message().trim().replace('\n', " ");
    ConfigError {
        file: file.to_string(),
        key: match line {
            Some(l) => format!("line {l}"),
            None => "(file)".into(),
        },
        message,
    }
}

fn dur(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, KeyError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|m| KeyError::new(key.to_string(), m)),
    }
}

fn size(key: &str, v: &Option<String>, default: u64) -> Result<u64, KeyError> {
    match v {
        None => Ok(default),
        Some(s) => parse_size(s).map_err(|m| KeyError::new(key.to_string(), m)),
    }
}

fn addr(key: &str, s: &str) -> Result<SocketAddr, KeyError> {
    s.parse().map_err(|_| {
        KeyError::new(
            key.to_string(),
            format!("\"{s}\" is not an address like \"127.0.0.1:8443\""),
        )
    })
}

fn ods_code(key: &str, s: &str) -> Result<(), KeyError> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyError::new(
            key.to_string(),
            format!("\"{s}\" is not an ODS code (letters and digits)"),
        ));
    }
    Ok(())
}

fn limit(key: &str, r: &RawLimit) -> Result<ClassLimit, KeyError> {
    if let Some(rps) = r.requests_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err(KeyError::new(
                format!("{key}.requests_per_second"),
                "must be a number above 0",
            ));
        }
    }
    if r.burst == Some(0) {
        return Err(KeyError::new(format!("{key}.burst"), "must be at least 1"));
    }
    if r.max_concurrent == Some(0) {
        return Err(KeyError::new(format!("{key}.max_concurrent"), "must be at least 1"));
    }
    let bytes_per_second = match &r.bytes_per_second {
        None => None,
        Some(s) => match parse_size(s) {
            Ok(0) => return Err(KeyError::new(format!("{key}.bytes_per_second"), "must be above 0")),
            Ok(n) => Some(n),
            Err(m) => return Err(KeyError::new(format!("{key}.bytes_per_second"), m)),
        },
    };
    Ok(ClassLimit {
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        max_concurrent: r.max_concurrent,
        bytes_per_second,
    })
}

impl RawConfig {
    pub(super) fn validate(self, base: &Path) -> Result<Config, KeyError> {
        let p = |path: PathBuf| if path.is_absolute() { path } else { base.join(path) };
        let l = self.listener;
        if l.client_ca.is_empty() {
            return Err(KeyError::new("listener.client_ca", "needs at least one CA file"));
        }
        let crl_expired = match l.crl_expired.as_deref() {
            None | Some("refuse") => CrlExpired::Refuse,
            Some("warn") => CrlExpired::Warn,
            Some(o) => {
                return Err(KeyError::new(
                    "listener.crl_expired",
                    format!("\"{o}\" is not \"refuse\" or \"warn\""),
                ))
            }
        };
        let listener = Listener {
            bind: addr("listener.bind", &l.bind)?,
            server_cert: p(l.server_cert),
            server_key: p(l.server_key),
            client_ca: l.client_ca.into_iter().map(p).collect(),
            crl: l.crl.into_iter().map(p).collect(),
            max_connections: match l.max_connections {
                Some(0) => return Err(KeyError::new("listener.max_connections", "must be at least 1")),
                Some(n) => n,
                None => 20_000,
            },
            handshake_timeout: dur(
                "listener.handshake_timeout",
                &l.handshake_timeout,
                Duration::from_secs(10),
            )?,
            header_timeout: dur("listener.header_timeout", &l.header_timeout, Duration::from_secs(10))?,
            idle_timeout: dur("listener.idle_timeout", &l.idle_timeout, Duration::from_secs(75))?,
            max_header_bytes: size("listener.max_header_bytes", &l.max_header_bytes, 64 << 10)? as usize,
            drain_timeout: dur("listener.drain_timeout", &l.drain_timeout, Duration::from_secs(30))?,
            crl_expired,
            session_resumption: l.session_resumption.unwrap_or(true),
            workers: match l.workers {
                Some(0) => return Err(KeyError::new("listener.workers", "must be at least 1")),
                Some(n) if n > 1024 => return Err(KeyError::new("listener.workers", "must be at most 1024")),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        if listener.max_header_bytes < 8192 {
            return Err(KeyError::new("listener.max_header_bytes", "must be at least 8KiB"));
        }
        let admin = match self.admin {
            Some(a) => Some(Admin {
                bind: addr("admin.bind", &a.bind)?,
            }),
            None => None,
        };

        let mut org_from = Vec::new();
        for (i, s) in self.identity.org_from.iter().enumerate() {
            let key = format!("identity.org_from[{i}]");
            let src = if s == "endpoint" {
                OrgSource::Endpoint
            } else if let Some(a) = s.strip_prefix("subject:") {
                if a.is_empty() {
                    return Err(KeyError::new(
                        key,
                        "\"subject:\" needs an attribute, like \"subject:OU\"",
                    ));
                }
                OrgSource::Subject(a.to_string())
            } else if let Some(prefix) = s.strip_prefix("san_uri:") {
                if prefix.is_empty() {
                    return Err(KeyError::new(
                        key,
                        "\"san_uri:\" needs a prefix, like \"san_uri:urn:nhs:ods:\"",
                    ));
                }
                OrgSource::SanUri(prefix.to_string())
            } else {
                return Err(KeyError::new(
                    key,
                    format!("\"{s}\" is not \"subject:<ATTR>\", \"san_uri:<prefix>\" or \"endpoint\""),
                ));
            };
            org_from.push(src);
        }
        if org_from.is_empty() {
            return Err(KeyError::new("identity.org_from", "needs at least one source"));
        }
        let identity = Identity {
            org_from,
            organisations_csv: self.identity.organisations_csv.map(p),
        };

        let mut endpoints = Vec::new();
        for (i, e) in self.endpoint.into_iter().enumerate() {
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
        let mut organisations = Vec::new();
        for (i, o) in self.organisation.into_iter().enumerate() {
            ods_code(&format!("organisation[{i}].code"), &o.code)?;
            let code = o.code.to_ascii_uppercase();
            organisations.push(Organisation {
                name: o.name.unwrap_or_else(|| code.clone()),
                code,
                groups: o.groups,
            });
        }

        let mut upstreams = Vec::new();
        for (i, u) in self.upstream.into_iter().enumerate() {
            let key = format!("upstream[{i}]");
            if u.urls.is_empty() {
                return Err(KeyError::new(format!("{key}.urls"), "needs at least one URL"));
            }
            let mut urls = Vec::new();
            for (j, s) in u.urls.iter().enumerate() {
                let bad = || {
                    KeyError::new(
                        format!("{key}.urls[{j}]"),
                        format!("\"{s}\" is not an origin like \"http://127.0.0.1:9080\""),
                    )
                };
                let uri: http::Uri = s.parse().map_err(|_| bad())?;
                match (uri.scheme_str(), uri.authority()) {
                    (Some("http" | "https"), Some(_)) if uri.path() == "/" || uri.path().is_empty() => {}
                    _ => return Err(bad()),
                }
                urls.push(uri);
            }
            if u.client_cert.is_some() != u.client_key.is_some() {
                return Err(KeyError::new(
                    format!("{key}.client_key"),
                    "client_cert and client_key go together",
                ));
            }
            upstreams.push(Upstream {
                name: u.name,
                urls,
                ca: u.ca.map(p),
                client_cert: u.client_cert.map(p),
                client_key: u.client_key.map(p),
                connect_timeout: dur(
                    &format!("{key}.connect_timeout"),
                    &u.connect_timeout,
                    Duration::from_secs(2),
                )?,
                response_timeout: dur(
                    &format!("{key}.response_timeout"),
                    &u.response_timeout,
                    Duration::from_secs(60),
                )?,
            });
        }

        let mut routes = Vec::new();
        for (i, r) in self.route.into_iter().enumerate() {
            let key = format!("route[{i}]");
            if !r.path_prefix.starts_with('/') {
                return Err(KeyError::new(
                    format!("{key}.path_prefix"),
                    format!("\"{}\" must start with /", r.path_prefix),
                ));
            }
            let class = match r.class.as_deref() {
                None => Class::Other,
                Some(c) => Class::parse(c).ok_or_else(|| {
                    KeyError::new(format!("{key}.class"), format!("\"{c}\" is not epr, image or other"))
                })?,
            };
            let mut allow = Vec::new();
            for (j, a) in r.allow.into_iter().enumerate() {
                if a.orgs.is_empty() && a.groups.is_empty() {
                    return Err(KeyError::new(
                        format!("{key}.allow[{j}]"),
                        "names no orgs or groups (use orgs = [\"*\"] for any known organisation)",
                    ));
                }
                let mut methods = Vec::new();
                for m in &a.methods {
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(KeyError::new(
                            format!("{key}.allow[{j}].methods"),
                            format!("\"{m}\" is not an HTTP method"),
                        ));
                    }
                    methods.push(m.to_ascii_uppercase());
                }
                allow.push(AllowRule {
                    orgs: a.orgs.iter().map(|o| o.to_ascii_uppercase()).collect(),
                    groups: a.groups,
                    methods,
                    resources: a.resources,
                    interactions: a.interactions,
                    spine_interactions: a.spine_interactions,
                });
            }
            routes.push(Route {
                name: r.name,
                path_prefix: r.path_prefix,
                host: r.host.map(|h| h.to_ascii_lowercase()),
                upstream: r.upstream,
                class,
                provider_host: r.provider_host.map(|h| h.to_ascii_lowercase()),
                require_ssp_headers: r.require_ssp_headers,
                check_token_org: r.check_token_org,
                check_nhs_number: r.check_nhs_number,
                allow,
            });
        }

        let mut rate_limits = RateLimits::default();
        for (class, raw) in [
            (Class::Epr, &self.rate_limit.epr),
            (Class::Image, &self.rate_limit.image),
            (Class::Other, &self.rate_limit.other),
        ] {
            if let Some(r) = raw {
                let l = limit(&format!("rate_limit.{}", class.as_str()), r)?;
                rate_limits.classes.insert(class, l);
            }
        }
        for (i, o) in self.rate_limit.overrides.into_iter().enumerate() {
            let key = format!("rate_limit.override[{i}]");
            let class = Class::parse(&o.class).ok_or_else(|| {
                KeyError::new(
                    format!("{key}.class"),
                    format!("\"{}\" is not epr, image or other", o.class),
                )
            })?;
            let l = limit(
                &key,
                &RawLimit {
                    requests_per_second: o.requests_per_second,
                    burst: o.burst,
                    max_concurrent: o.max_concurrent,
                    bytes_per_second: o.bytes_per_second,
                },
            )?;
            rate_limits.overrides.push(LimitOverride {
                org: o.org.to_ascii_uppercase(),
                class,
                limit: l,
            });
        }

        let a = self.audit;
        let durability = match a.durability.as_deref() {
            None | Some("fsync") => Durability::Fsync,
            Some("flush") => Durability::Flush,
            Some(o) => {
                return Err(KeyError::new(
                    "audit.durability",
                    format!("\"{o}\" is not \"fsync\" or \"flush\""),
                ))
            }
        };
        let audit = Audit {
            dir: p(a.dir),
            durability,
            rotate_bytes: size("audit.rotate_bytes", &a.rotate_bytes, 256 << 20)?,
            signing_key: a.signing_key.map(p),
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
        };
        if audit.rotate_bytes < 4096 {
            return Err(KeyError::new("audit.rotate_bytes", "must be at least 4KiB"));
        }

        let config = Config {
            path: PathBuf::new(),
            sha256: String::new(),
            listener,
            admin,
            identity,
            endpoints,
            organisations,
            upstreams,
            routes,
            rate_limits,
            audit,
        };
        check_references(&config)?;
        Ok(config)
    }
}
