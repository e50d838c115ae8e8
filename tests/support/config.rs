//! The TOML text of a gateway's config, assembled from a few calls:
//!
//! ```ignore
//! GatewayConfig::new()
//!     .tls(pki_dir)
//!     .listener("workers = 3")
//!     .standard(["http://127.0.0.1:9080"])
//!     .rate_limit("epr", &["requests_per_second = 0.5", "burst = 3"])
//!     .to_string()
//! ```
//!
//! Plain `std`, no test fixture: the benchmarks include this file too
//! (`#[path = "../tests/support/config.rs"] mod config;`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A gateway config being written. Tables keep the order of their first `set`; then come the
/// `[[endpoint]]`s, `[[organisation]]`s, `[[upstream]]`s and `[[route]]`s in the order they were
/// added, then any `raw` text.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    /// `[table]` → its `key = value` lines.
    tables: Vec<(String, Vec<String>)>,
    endpoints: Vec<String>,
    organisations: Vec<String>,
    upstreams: Vec<(String, Vec<String>)>,
    /// `connect_timeout` and `response_timeout` for every upstream.
    timeouts: Option<(String, String)>,
    routes: Vec<Route>,
    raw: String,
    audit_dir: Option<PathBuf>,
}

impl GatewayConfig {
    pub fn new() -> GatewayConfig {
        GatewayConfig::default()
    }

    /// Sets `key = value` (one line, as TOML writes it) in `[table]`, replacing the key's
    /// earlier value.
    pub fn set(mut self, table: &str, line: impl Into<String>) -> GatewayConfig {
        let line = line.into();
        let key = key_of(&line).to_string();
        let lines = match self.tables.iter_mut().find(|(t, _)| t == table) {
            Some((_, lines)) => lines,
            None => {
                self.tables.push((table.to_string(), Vec::new()));
                &mut self.tables.last_mut().expect("just pushed").1
            }
        };
        match lines.iter_mut().find(|l| key_of(l) == key) {
            Some(l) => *l = line,
            None => lines.push(line),
        }
        self
    }

    /// `[listener]` on 127.0.0.1 port 0 with `server.pem`, `server.key` and the client CA
    /// `ca.pem` of `pki_dir` (`Path::new("")` for bare file names).
    pub fn tls(self, pki_dir: &Path) -> GatewayConfig {
        self.listener(r#"bind = "127.0.0.1:0""#)
            .listener(format!("server_cert = {}", path(&pki_dir.join("server.pem"))))
            .listener(format!("server_key = {}", path(&pki_dir.join("server.key"))))
            .client_cas(&[&pki_dir.join("ca.pem")])
    }

    /// A line of `[listener]`, e.g. `workers = 3`.
    pub fn listener(self, line: impl Into<String>) -> GatewayConfig {
        self.set("listener", line)
    }

    /// `listener.client_ca`: these files.
    pub fn client_cas(self, files: &[&Path]) -> GatewayConfig {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.listener(format!("client_ca = {}", list(&files)))
    }

    /// `listener.crl`: this file.
    pub fn crl(self, file: &Path) -> GatewayConfig {
        self.listener(format!("crl = [{}]", path(file)))
    }

    /// `[admin]` on 127.0.0.1 port 0.
    pub fn admin(self) -> GatewayConfig {
        self.set("admin", r#"bind = "127.0.0.1:0""#)
    }

    /// `[console]` on 127.0.0.1 port 0 for these auditors (codes or `group:NAME`); its index
    /// goes beside the audit folder.
    pub fn console(self, auditors: &[&str]) -> GatewayConfig {
        self.set("console", r#"bind = "127.0.0.1:0""#)
            .set("console", format!("auditors = {}", list(auditors)))
    }

    /// `[audit] dir`.
    pub fn audit(mut self, dir: &Path) -> GatewayConfig {
        self.audit_dir = Some(dir.to_path_buf());
        self.set("audit", format!("dir = {}", path(dir)))
    }

    /// The `[audit] dir` set by `audit`.
    pub fn audit_dir(&self) -> Option<&Path> {
        self.audit_dir.as_deref()
    }

    /// `[identity] org_from`.
    pub fn org_from(self, sources: &[&str]) -> GatewayConfig {
        self.set("identity", format!("org_from = {}", list(sources)))
    }

    /// `[rate_limit.<class>]` with these lines.
    pub fn rate_limit(mut self, class: &str, lines: &[&str]) -> GatewayConfig {
        let table = format!("rate_limit.{class}");
        for line in lines {
            self = self.set(&table, *line);
        }
        self
    }

    /// An `[[endpoint]]`: a registered system's DNS name, its organisation and ASID.
    pub fn endpoint(mut self, fqdn: &str, org: &str, asid: Option<&str>) -> GatewayConfig {
        let mut t = format!("[[endpoint]]\nfqdn = {}\norg = {}\n", quote(fqdn), quote(org));
        if let Some(asid) = asid {
            t += &format!("asid = {}\n", quote(asid));
        }
        self.endpoints.push(t);
        self
    }

    /// An `[[organisation]]` (no `groups` line when `groups` is empty).
    pub fn org(mut self, code: &str, name: &str, groups: &[&str]) -> GatewayConfig {
        let mut t = format!("[[organisation]]\ncode = {}\nname = {}\n", quote(code), quote(name));
        if !groups.is_empty() {
            t += &format!("groups = {}\n", list(groups));
        }
        self.organisations.push(t);
        self
    }

    /// An `[[upstream]]` with these origins.
    pub fn upstream<S: AsRef<str>>(mut self, name: &str, urls: impl IntoIterator<Item = S>) -> GatewayConfig {
        let urls = urls.into_iter().map(|u| u.as_ref().to_string()).collect();
        self.upstreams.push((name.to_string(), urls));
        self
    }

    /// `connect_timeout` and `response_timeout` (e.g. `"1s"`) for every upstream.
    pub fn timeouts(mut self, connect: &str, response: &str) -> GatewayConfig {
        self.timeouts = Some((connect.to_string(), response.to_string()));
        self
    }

    pub fn route(mut self, route: Route) -> GatewayConfig {
        self.routes.push(route);
        self
    }

    /// TOML text appended as it is.
    pub fn raw(mut self, text: &str) -> GatewayConfig {
        self.raw.push_str(text);
        self
    }

    /// The organisations most tests share, found by URI SAN, subject OU or registered endpoint:
    /// three GP practices (`gp`: A81001, A81002, and A81003 behind the endpoint
    /// `gpsystem.a81003.example.nhs.uk`, ASID 200000000103), a trust (`trust`: RXC) and a
    /// practice in no group (B99999).
    pub fn standard_organisations(self) -> GatewayConfig {
        self.org_from(&["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"])
            .endpoint("gpsystem.a81003.example.nhs.uk", "A81003", Some("200000000103"))
            .org("A81001", "Example Surgery", &["gp"])
            .org("A81002", "Other Surgery", &["gp"])
            .org("A81003", "Endpoint Surgery", &["gp"])
            .org("RXC", "East Sussex Healthcare NHS Trust", &["trust"])
            .org("B99999", "No Rights Practice", &[])
    }

    /// The standard organisations, the upstream `epr` at `urls` (timeouts 1 s to connect, 2 s
    /// to answer), and two routes to it: `epr-fhir` (`/fhir/`, class `epr`: GETs for `gp`,
    /// anything for RXC) and `files` (`/files/`, class `other`: RXC and A81001).
    pub fn standard<S: AsRef<str>>(self, urls: impl IntoIterator<Item = S>) -> GatewayConfig {
        self.standard_organisations()
            .upstream("epr", urls)
            .timeouts("1s", "2s")
            .route(
                Route::new("epr-fhir", "/fhir/", "epr", "epr")
                    .allow(Allow::groups(&["gp"]).methods(&["GET"]))
                    .allow(Allow::orgs(&["RXC"])),
            )
            .route(Route::new("files", "/files/", "epr", "other").allow(Allow::orgs(&["RXC", "A81001"])))
    }
}

impl fmt::Display for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, lines) in &self.tables {
            writeln!(f, "[{table}]")?;
            for line in lines {
                writeln!(f, "{line}")?;
            }
            writeln!(f)?;
        }
        for t in self.endpoints.iter().chain(&self.organisations) {
            writeln!(f, "{t}")?;
        }
        for (name, urls) in &self.upstreams {
            writeln!(f, "[[upstream]]\nname = {}\nurls = {}", quote(name), list(urls))?;
            if let Some((connect, response)) = &self.timeouts {
                writeln!(
                    f,
                    "connect_timeout = {}\nresponse_timeout = {}",
                    quote(connect),
                    quote(response)
                )?;
            }
            writeln!(f)?;
        }
        for route in &self.routes {
            writeln!(f, "{route}")?;
        }
        f.write_str(&self.raw)
    }
}

/// A `[[route]]` and its `[[route.allow]]` rules.
#[derive(Clone, Debug)]
pub struct Route {
    head: String,
    lines: Vec<String>,
    allows: Vec<Allow>,
    /// `[[route.break_glass]]` entries: who (`groups` or `orgs`) and `methods`.
    glass: Vec<Allow>,
}

impl Route {
    pub fn new(name: &str, path_prefix: &str, upstream: &str, class: &str) -> Route {
        Route {
            head: format!(
                "name = {}\npath_prefix = {}\nupstream = {}\nclass = {}",
                quote(name),
                quote(path_prefix),
                quote(upstream),
                quote(class)
            ),
            lines: Vec::new(),
            allows: Vec::new(),
            glass: Vec::new(),
        }
    }

    /// Another `key = value` line of the route, e.g. `check_nhs_number = false`.
    pub fn set(mut self, line: impl Into<String>) -> Route {
        self.lines.push(line.into());
        self
    }

    pub fn allow(mut self, rule: Allow) -> Route {
        self.allows.push(rule);
        self
    }

    /// A `[[route.break_glass]]` entry (its `orgs`, `groups` and `methods` lines).
    pub fn break_glass(mut self, entry: Allow) -> Route {
        self.glass.push(entry);
        self
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[route]]\n{}", self.head)?;
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        let tables = self.allows.iter().map(|r| ("allow", r));
        for (table, rule) in tables.chain(self.glass.iter().map(|r| ("break_glass", r))) {
            writeln!(f, "  [[route.{table}]]")?;
            for line in &rule.lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// One `[[route.allow]]` rule: who (`groups` or `orgs`), then what.
#[derive(Clone, Debug)]
pub struct Allow {
    lines: Vec<String>,
}

impl Allow {
    pub fn groups(groups: &[&str]) -> Allow {
        Allow { lines: Vec::new() }.list("groups", groups)
    }

    pub fn orgs(orgs: &[&str]) -> Allow {
        Allow { lines: Vec::new() }.list("orgs", orgs)
    }

    pub fn methods(self, methods: &[&str]) -> Allow {
        self.list("methods", methods)
    }

    pub fn resources(self, resources: &[&str]) -> Allow {
        self.list("resources", resources)
    }

    pub fn interactions(self, interactions: &[&str]) -> Allow {
        self.list("interactions", interactions)
    }

    pub fn spine_interactions(self, ids: &[&str]) -> Allow {
        self.list("spine_interactions", ids)
    }

    fn list(mut self, key: &str, items: &[&str]) -> Allow {
        self.lines.push(format!("{key} = {}", list(items)));
        self
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path as a TOML string.
pub fn path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// A TOML array of strings.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

fn key_of(line: &str) -> &str {
    line.split('=').next().unwrap_or("").trim()
}
