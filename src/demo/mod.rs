//! `caregate demo`: the whole thing on one laptop.
//!
//! Makes the development PKI if it is missing, starts the sample EPR (FHIR) and PACS (DICOMweb)
//! upstreams on loopback, starts the gateway with `config/demo.toml` (or the copy built into
//! the binary), prints `curl` commands to paste, and stops everything when asked.

pub mod upstreams;

#[cfg(test)]
mod tests;

use crate::config::{Config, ConfigError};
use crate::pki::{self, PkiError};
use crate::server::{self, Running, StartError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The demo config, as shipped (used when `<dir>/config/demo.toml` does not exist).
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// Where the demo lives and how it binds.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The folder holding `certs/dev/`, `config/` and `audit/`; the printed commands work from
    /// here. Default ".".
    pub dir: PathBuf,
    /// Bind the gateway, admin listener and sample upstreams on 127.0.0.1:0 (for tests, and
    /// for running beside another demo).
    pub ephemeral_ports: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: PathBuf::from("."),
            ephemeral_ports: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("making the development PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} for the {what}: {source} (is another demo running?)")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the gateway: {0}")]
    Start(#[from] StartError),
    #[error("stopping the gateway: {0}")]
    Stop(#[from] crate::audit::AuditError),
}

/// What [`prepare`] found or made: the config to run, and whether the PKI is new.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    /// True if this run generated `certs/dev/`.
    pub made_pki: bool,
}

/// A running demo: the gateway and both sample upstreams.
pub struct Demo {
    /// The gateway's TLS address.
    pub gateway_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    /// The auditor's console's address (if the config has `[console]`).
    pub console_addr: Option<SocketAddr>,
    /// The sample EPR's address (if the config has an upstream named `epr`).
    pub epr_addr: Option<SocketAddr>,
    /// The sample PACS's address (if the config has an upstream named `pacs`).
    pub pacs_addr: Option<SocketAddr>,
    /// The demo folder (as given in [`DemoOptions::dir`]).
    pub dir: PathBuf,
    /// The config the gateway runs with (after any port rewriting).
    pub config: Config,
    pub made_pki: bool,
    running: Running,
    _upstreams: Vec<AbortOnDrop>,
}

/// Runs the demo until `shutdown` completes (main passes Ctrl-C), then drains and stops.
pub async fn run(opts: DemoOptions, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let demo = start(opts).await?;
    println!("{}", demo.instructions());
    shutdown.await;
    println!("stopping: draining in-flight requests");
    demo.shutdown().await
}

/// Starts everything and returns once the gateway is listening.
pub async fn start(opts: DemoOptions) -> Result<Demo, DemoError> {
    let Prepared { mut config, made_pki } = prepare(&opts)?;

    let mut tasks = Vec::new();
    let epr_addr = spawn_upstream(&mut config, "epr", opts.ephemeral_ports, &mut tasks).await?;
    let pacs_addr = spawn_upstream(&mut config, "pacs", opts.ephemeral_ports, &mut tasks).await?;

    let running = server::start(config.clone()).await?;
    Ok(Demo {
        gateway_addr: running.addr,
        admin_addr: running.admin_addr,
        console_addr: running.console_addr,
        epr_addr,
        pacs_addr,
        dir: opts.dir,
        config,
        made_pki,
        running,
        _upstreams: tasks,
    })
}

/// Makes the dev PKI if `<dir>/certs/dev/ca.pem` is missing and loads the demo config (the
/// file if present, else the embedded copy, read as if it were `<dir>/config/demo.toml`). With
/// `ephemeral_ports` the gateway and admin listeners are moved to 127.0.0.1:0.
pub fn prepare(opts: &DemoOptions) -> Result<Prepared, DemoError> {
    let certs = certs_dir(&opts.dir);
    let made_pki = !certs.join("ca.pem").is_file();
    if made_pki {
        pki::dev(&certs)?;
    }
    let config_dir = opts.dir.join("config");
    // The config's paths go through this folder ("../certs/dev/…"), so it must exist even
    // when the embedded copy is used.
    std::fs::create_dir_all(&config_dir).map_err(|source| DemoError::Io {
        what: "the demo's config folder",
        path: config_dir.display().to_string(),
        source,
    })?;
    let path = config_dir.join("demo.toml");
    let mut config = if path.is_file() {
        Config::load(&path)?
    } else {
        Config::from_bytes(&path, DEMO_TOML.as_bytes())?
    };
    if opts.ephemeral_ports {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listener.bind = any;
        if let Some(admin) = config.admin.as_mut() {
            admin.bind = any;
        }
        if let Some(console) = config.console.as_mut() {
            console.bind = any;
        }
    }
    Ok(Prepared { config, made_pki })
}

/// `<dir>/certs/dev`, where the demo keeps its PKI.
pub fn certs_dir(dir: &Path) -> PathBuf {
    dir.join("certs").join("dev")
}

/// Binds and spawns the sample server for upstream `name` on its configured origin (or on
/// port 0, pointing the config at it). None if the config has no such upstream.
async fn spawn_upstream(
    config: &mut Config,
    name: &'static str,
    ephemeral: bool,
    tasks: &mut Vec<AbortOnDrop>,
) -> Result<Option<SocketAddr>, DemoError> {
    let what = if name == "epr" {
        "sample EPR (FHIR)"
    } else {
        "sample PACS (DICOMweb)"
    };
    let Some(up) = config.upstreams.iter_mut().find(|u| u.name == name) else {
        tracing::warn!(
            upstream = name,
            "demo config has no such upstream; not starting the {what}"
        );
        return Ok(None);
    };
    let addr = if ephemeral {
        "127.0.0.1:0".to_string()
    } else {
        match up.urls.first().and_then(|u| u.authority()) {
            Some(a) if a.port().is_some() => a.as_str().to_string(),
            Some(a) => format!("{}:80", a.host()),
            None => "127.0.0.1:0".to_string(),
        }
    };
    let bind_err = |source| DemoError::Bind {
        what,
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    if ephemeral {
        let uri = format!("http://{local}").parse().map_err(|_| DemoError::Bind {
            what,
            addr: local.to_string(),
            source: std::io::Error::other("not a valid origin"),
        })?;
        up.urls = vec![uri];
    }
    let task = if name == "epr" {
        tokio::spawn(upstreams::serve_fhir(listener))
    } else {
        tokio::spawn(upstreams::serve_dicomweb(listener))
    };
    tasks.push(AbortOnDrop(task));
    Ok(Some(local))
}

// === impl Demo ===

impl Demo {
    /// Drains and stops the gateway, then the sample upstreams.
    pub async fn shutdown(self) -> Result<(), DemoError> {
        self.running.shutdown();
        self.running.wait().await?;
        // The upstream tasks are aborted as `_upstreams` drops here.
        Ok(())
    }

    /// What to paste: curl commands that work from the demo folder, then how to open the
    /// auditor's console in a browser.
    pub fn instructions(&self) -> String {
        let mut s = instructions(
            &self.dir,
            self.gateway_addr,
            self.admin_addr,
            &self.config.audit.dir,
            self.made_pki,
        );
        if let (Some(addr), Some(c)) = (self.console_addr, &self.config.console) {
            let auditor = c.auditor_orgs.first().map_or("rxc".into(), |o| o.to_ascii_lowercase());
            s.push_str(&console_instructions(addr, &auditor));
        }
        s
    }
}

/// The demo's printed guide (separate from [`Demo`] so tests can check it without a gateway).
pub fn instructions(
    dir: &Path,
    gateway: SocketAddr,
    admin: Option<SocketAddr>,
    audit_dir: &Path,
    made_pki: bool,
) -> String {
    use upstreams::{PATIENTS, STUDIES};
    let base = format!("https://localhost:{}", gateway.port());
    let curl =
        |who: &str| format!("curl --cacert certs/dev/ca.pem --cert certs/dev/{who}.pem --key certs/dev/{who}.key");
    let audit = relative_to(audit_dir, dir);
    let audit = shell_word(&audit.display().to_string());
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("caregate demo is running.");
    if made_pki {
        line("Made a development PKI in certs/dev/ (development only; see certs/README.md).");
    }
    line(&format!("  gateway   {base}  (mutual TLS)"));
    if let Some(a) = admin {
        line(&format!("  admin     http://{a}/metrics"));
    }
    line("");
    if dir != Path::new(".") && !dir.as_os_str().is_empty() {
        line("From the demo folder:");
        line(&format!("  cd {}", shell_word(&dir.display().to_string())));
        line("");
    }
    let (nhs1, nhs2, nhs3) = (PATIENTS[0].0, PATIENTS[1].0, PATIENTS[2].0);
    line("# A GP practice (A81001, named by its certificate's URI SAN) reads a patient:");
    line(&format!("{} {base}/fhir/Patient/{nhs1}", curl("a81001")));
    line("");
    line("# Another GP practice (A81002, named by its subject OU) searches by NHS number:");
    line(&format!(
        "{} '{base}/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs2}'",
        curl("a81002")
    ));
    line("");
    line("# A social care provider (found by its registered endpoint) reads demographics:");
    line(&format!("{} {base}/fhir/Patient/{nhs3}", curl("socialcare")));
    line("");
    line("# ...but not observations: 403 not_allowed");
    line(&format!(
        "{} '{base}/fhir/Observation?patient={nhs3}'",
        curl("socialcare")
    ));
    line("");
    line("# A GP practice asking the PACS: 403 not_allowed (images are for the trust only)");
    line(&format!("{} -i {base}/dicomweb/studies", curl("a81001")));
    line("");
    line("# The acute trust (RXC) lists studies and fetches one (1 MiB, multipart/related):");
    line(&format!("{} {base}/dicomweb/studies", curl("rxc")));
    line(&format!(
        "{} -o study.multipart {base}/dicomweb/studies/{}",
        curl("rxc"),
        STUDIES[0].0
    ));
    line(&format!(
        "#   the large one streams 256 MiB: .../dicomweb/studies/{}",
        STUDIES[1].0
    ));
    line("");
    line("# A revoked certificate fails the TLS handshake (so do expired.pem and rogue.pem):");
    line(&format!("{} {base}/fhir/Patient/{nhs1}", curl("revoked")));
    line("");
    line("# The audit trail: check it is whole, then ask who saw a patient:");
    line(&format!(
        "caregate audit verify {audit} --public-key certs/dev/audit-signing.pub"
    ));
    line(&format!("caregate audit query {audit} --patient {nhs1}"));
    line("");
    line("Ctrl-C stops everything.");
    s
}

/// How to open the console in a browser: a client certificate to import (as PKCS#12, which
/// browsers take), the CA to trust, the URL.
pub fn console_instructions(console: SocketAddr, auditor: &str) -> String {
    format!(
        "\n# The auditor's console, in a browser (mutual TLS, like the gateway):\n\
         #  1. make a PKCS#12 of the auditor's certificate ({upper}, console.auditors) and import it\n\
         #     into the browser's own certificates (password: demo):\n\
         openssl pkcs12 -export -in certs/dev/{auditor}.pem -inkey certs/dev/{auditor}.key -out {auditor}.p12 -passout pass:demo\n\
         #  2. trust certs/dev/ca.pem as a certificate authority (development only), then open\n\
         #     https://localhost:{port}/   (any other certificate is refused, and recorded)\n",
        upper = auditor.to_ascii_uppercase(),
        port = console.port(),
    )
}

/// `path` relative to `base` where it lies inside it (after resolving `.` and `..`
/// lexically), else `path` as it is.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (p, b) = (lexical(path), lexical(base));
    match p.strip_prefix(&b) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => p,
    }
}

fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let climbs = matches!(out.components().next_back(), None | Some(Component::ParentDir));
                if climbs || !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Quotes a word for a POSIX shell where it needs it.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
