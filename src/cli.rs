//! The text behind the commands that are not the gateway itself: `check`'s summary,
//! `explain`, and the auditor's `audit` commands.

use crate::audit::{export, index, query, verify};
use crate::state::State;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

/// `caregate check`: a short summary of what was loaded.
pub fn check_summary(s: &State) -> String {
    let c = &s.config;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", c.path.display());
    let _ = writeln!(
        out,
        "  listener   {} ({} workers, {} client CA file(s), {} CRL file(s))",
        c.listener.bind,
        c.listener.workers,
        c.listener.client_ca.len(),
        c.listener.crl.len()
    );
    let days = (s.tls.server_not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86400;
    let _ = writeln!(out, "  server cert expires in {days} days");
    let _ = writeln!(
        out,
        "  organisations {}, endpoints {}",
        s.directory.len(),
        c.endpoints.len()
    );
    let _ = writeln!(
        out,
        "  upstreams  {}",
        c.upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "  routes     {}",
        c.routes
            .iter()
            .map(|r| format!("{} {}", r.name, r.path_prefix))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "  audit      {} ({:?}{})",
        c.audit.dir.display(),
        c.audit.durability,
        if c.audit.signing_key.is_some() {
            ", signed checkpoints"
        } else {
            ""
        }
    );
    if let Some(a) = &c.admin {
        let _ = writeln!(out, "  admin      {}", a.bind);
    }
    for w in &s.tls.warnings {
        let _ = writeln!(out, "  warning    {w}");
    }
    out.trim_end().to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("{0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("\"{0}\" is not a path or URL")]
    BadTarget(String),
    #[error("\"{0}\" is not an HTTP method")]
    BadMethod(String),
}

/// `caregate explain`: one request, dry run, in words.
pub fn explain(s: &State, cert_pem: &[u8], method: &str, target: &str) -> Result<String, ExplainError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .ok_or(ExplainError::NoCertificate)?;
    let identity = crate::identity::identify(&der, &s.config.identity.org_from, &s.directory)?;
    let uri: http::Uri = target.parse().map_err(|_| ExplainError::BadTarget(target.into()))?;
    let method: http::Method = method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ExplainError::BadMethod(method.into()))?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.clone())
        .version(http::Version::HTTP_11);
    // A path alone is explained as a client that connected to the listener's address would
    // send it (HTTP/1.1 needs a Host).
    let host = match uri.authority() {
        Some(a) => a.to_string(),
        None => s.config.listener.bind.to_string(),
    };
    req = req.header(http::header::HOST, host);
    let req = req.body(()).map_err(|_| ExplainError::BadTarget(target.into()))?;

    let mut out = String::new();
    let tls = s
        .tls
        .verifier
        .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now());
    let _ = writeln!(out, "certificate  {}", identity.subject);
    let _ = writeln!(out, "             {} serial {}", identity.fingerprint, identity.serial);
    match tls {
        Ok(_) => {
            let _ = writeln!(out, "TLS          accepted (chain, validity, revocation, key usage)");
        }
        Err(e) => {
            let _ = writeln!(out, "TLS          REFUSED at the handshake: {e}");
        }
    }
    match identity.org.as_deref() {
        Some(code) => match s.directory.organisation(code) {
            Some(o) => {
                let _ = writeln!(
                    out,
                    "organisation {} ({}), groups [{}]",
                    o.code,
                    o.name,
                    o.groups.join(", ")
                );
            }
            None => {
                let _ = writeln!(out, "organisation {code} (not in [[organisation]] or the ODS CSV)");
            }
        },
        None => {
            let _ = writeln!(out, "organisation none found by identity.org_from");
        }
    }
    let (access, refusal, glass) = crate::admit::explain(s.rules(), &identity, req);
    let _ = writeln!(out, "path         {}", access.request.path);
    match (&access.route, &access.class) {
        (Some(r), Some(c)) => {
            let upstream = s
                .config
                .routes
                .iter()
                .find(|x| *x.name == **r)
                .map(|x| x.upstream.as_str())
                .unwrap_or("");
            let _ = writeln!(out, "route        {r} → upstream {upstream}, class {c}");
            if let Some(class) = crate::config::Class::parse(c) {
                let org = access.client.org.as_deref().unwrap_or("");
                match s.config.rate_limits.for_org(org, class) {
                    Some(l) => {
                        let _ = writeln!(out, "rate limit   class {c}: {}", describe_limit(&l));
                    }
                    None => {
                        let _ = writeln!(out, "rate limit   class {c}: not limited");
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "route        none");
        }
    }
    if !access.clinical.is_empty() {
        let _ = writeln!(
            out,
            "clinical     {}",
            serde_json::to_string(&access.clinical).unwrap_or_default()
        );
    }
    match refusal {
        None => {
            let _ = writeln!(out, "decision     ALLOW by {}", access.rule.as_deref().unwrap_or("?"));
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "decision     DENY {} {} ({})",
                r.status().as_u16(),
                r.reason(),
                r.message()
            );
        }
    }
    if let Some(entry) = glass {
        let _ = writeln!(
            out,
            "break-glass  eligible: with X-Break-Glass-Reason, allowed by {entry} (recorded for review)"
        );
    }
    Ok(out)
}

fn describe_limit(l: &crate::config::ClassLimit) -> String {
    let mut parts = Vec::new();
    if let Some(r) = l.requests_per_second {
        parts.push(format!("{r} requests/s"));
    }
    if let Some(b) = l.burst {
        parts.push(format!("burst {b}"));
    }
    if let Some(m) = l.max_concurrent {
        parts.push(format!("{m} in flight"));
    }
    if let Some(b) = l.bytes_per_second {
        parts.push(format!("{:.1} MiB/s", b as f64 / f64::from(1 << 20)));
    }
    parts.join(", ")
}

/// The auditor's commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the whole trail: chain, sequence, checkpoints. Exit 0 intact, 1 broken or cut
    /// short, 2 unusable.
    Verify {
        dir: PathBuf,
        /// Ed25519 public key (PEM) to check checkpoint signatures and a sealed tail.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// With --public-key: accept records after the last checkpoint (a live trail).
        #[arg(long)]
        allow_unsealed_tail: bool,
        /// A file written by `caregate audit witness` (one witness a line): the trail must
        /// still hold each witnessed checkpoint, unchanged. (A URL is not supported yet.)
        #[arg(long, value_name = "FILE|URL")]
        witness: Option<String>,
        /// The gateway is known to have run until TIME (RFC 3339, or a date: its first instant,
        /// UTC): the last checkpoint's next_due must not be before it.
        #[arg(long, value_name = "TIME")]
        expect_until: Option<String>,
    },
    /// Print the trail's newest checkpoint as a witness (one JSON line), to keep elsewhere
    /// (from cron); `audit verify --witness FILE` then proves the trail still holds it.
    Witness { dir: PathBuf },
    /// One row per request (access and completion joined), filtered.
    Query {
        dir: PathBuf,
        #[command(flatten)]
        filters: FilterArgs,
        #[arg(long, default_value = "table")]
        format: String,
        /// Find the rows through this index (`audit index`) instead of reading every line; the
        /// rows are then read from DIR, in the order of their access records.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Index the trail into an SQLite database and keep following it (Ctrl-C or SIGTERM stops);
    /// resumes where it stopped. Exit 1 when the chain breaks (indexing stops there).
    Index {
        dir: PathBuf,
        /// The index's SQLite file (created when missing).
        #[arg(long, value_name = "PATH")]
        db: PathBuf,
        /// Index to the end of the trail and exit instead of following it.
        #[arg(long)]
        once: bool,
        /// Compare every row of the index with the trail's records; exit 1 at the first difference.
        #[arg(long)]
        check: bool,
    },
    /// The auditor's console (`[console]` of FILE) without the proxy listener, until Ctrl-C or
    /// SIGTERM; its uses are recorded in FILE's audit trail.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// FHIR R4 AuditEvent resources (IHE BALP shape) as NDJSON.
    Export {
        dir: PathBuf,
        #[arg(long, default_value = "fhir")]
        format: String,
        #[command(flatten)]
        filters: FilterArgs,
        /// Also refused handshakes (tls_rejected) and the gateway's starts, stops and reloads.
        #[arg(long)]
        all_events: bool,
        /// Find the requests through this index (`audit index`); not with --all-events yet.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

/// Filters shared by `query` and `export`; all given ones must match.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// ODS code of the client organisation.
    #[arg(long)]
    org: Option<String>,
    /// NHS number.
    #[arg(long)]
    patient: Option<String>,
    /// DICOM study instance UID.
    #[arg(long)]
    study: Option<String>,
    #[arg(long)]
    route: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// RFC 3339 time or a date (2026-11-22).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time (inclusive) or a date (the whole day).
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
    /// The client's own X-Request-Id.
    #[arg(long)]
    client_request_id: Option<String>,
}

impl FilterArgs {
    fn parse(self) -> Result<query::Filters, query::QueryError> {
        Ok(query::Filters {
            org: self.org.map(|o| o.to_ascii_uppercase()),
            patient: self.patient,
            study: self.study,
            route: self.route,
            decision: self.decision.as_deref().map(str::parse).transpose()?,
            since: self.since.as_deref().map(query::parse_since).transpose()?,
            until: self.until.as_deref().map(query::parse_until).transpose()?,
            request_id: self.request_id,
            client_request_id: self.client_request_id,
        })
    }
}

/// Runs an audit command and returns its exit code; errors are printed as one sentence.
pub fn audit(cmd: AuditCommand) -> u8 {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = match cmd {
        AuditCommand::Verify {
            dir,
            public_key,
            allow_unsealed_tail,
            witness,
            expect_until,
        } => {
            let args = verify::VerifyArgs {
                dir,
                public_key,
                options: verify::VerifyOptions { allow_unsealed_tail },
            };
            let expect = verify::ExpectArgs { witness, expect_until };
            match verify::run_expecting(&args, &expect, &mut out) {
                Ok(_) => 0,
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("caregate audit verify: {e}");
                    e.exit_code()
                }
            }
        }
        AuditCommand::Serve { config } => match serve(&config) {
            Ok(()) => 0,
            Err(e) => {
                let why: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                eprintln!("caregate audit serve: {}", why.join(": "));
                2
            }
        },
        AuditCommand::Witness { dir } => match verify::witness::run(&dir, &mut out) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("caregate audit witness: {e}");
                e.exit_code()
            }
        },
        AuditCommand::Query {
            dir,
            filters,
            format,
            db,
        } => {
            let result = filters.parse().and_then(|filters| {
                let format = format.parse()?;
                match db {
                    Some(db) => index::query::query(&dir, &db, &filters, format, &mut out),
                    None => query::run(&query::QueryArgs { dir, filters, format }, &mut out),
                }
            });
            query_exit(result, "query")
        }
        AuditCommand::Index { dir, db, once, check } => audit_index(&dir, &db, once, check, &mut out),
        AuditCommand::Export {
            dir,
            format,
            filters,
            all_events,
            db,
        } => {
            if format != "fhir" {
                eprintln!("caregate audit export: --format must be fhir, not {format:?}");
                return 2;
            }
            if let Some(db) = db {
                if all_events {
                    eprintln!("caregate audit export: --all-events cannot be used with --db yet");
                    return 2;
                }
                let result = filters
                    .parse()
                    .and_then(|filters| index::query::export(&dir, &db, &filters, &mut out));
                let _ = out.flush();
                return query_exit(result, "export");
            }
            let result = filters.parse().and_then(|filters| {
                export::run(
                    &export::ExportArgs {
                        dir,
                        filters,
                        all_events,
                    },
                    &mut out,
                )
            });
            query_exit(result, "export")
        }
    };
    let _ = out.flush();
    code
}

/// `caregate audit index`.
fn audit_index(
    dir: &std::path::Path,
    db: &std::path::Path,
    once: bool,
    check: bool,
    out: &mut impl std::io::Write,
) -> u8 {
    let result = index::open(db).and_then(|mut store| {
        if check {
            let r = index::check(dir, &store)?;
            let _ = writeln!(
                out,
                "index matches the trail: {} records, up to seq {}",
                r.records, r.last_seq
            );
            return Ok(());
        }
        let report = if once {
            index::build(dir, &mut store)?
        } else {
            let stop = index::Stop::new();
            stop_on_signal(stop.clone());
            index::follow(dir, &mut store, &stop, &index::FollowOptions::default())?
        };
        let _ = writeln!(
            out,
            "indexed {} records; the index is at seq {}",
            report.records, report.last_seq
        );
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = out.flush();
            eprintln!("caregate audit index: {e}");
            e.exit_code()
        }
    }
}

/// Stops `stop` on Ctrl-C or SIGTERM, from a thread of its own.
fn stop_on_signal(stop: index::Stop) {
    let _ = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        stop.stop();
    });
}

/// `audit serve`: the console on a runtime of its own, until SIGINT or SIGTERM.
fn serve(config: &std::path::Path) -> anyhow::Result<()> {
    let config = crate::config::Config::load(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::console::serve_alone(config, stop).await
    })
}

fn query_exit(result: Result<u64, query::QueryError>, what: &str) -> u8 {
    match result {
        Ok(_) => 0,
        // `| head` closing the pipe is not an error worth a message.
        Err(query::QueryError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("caregate audit {what}: {e}");
            e.exit_code()
        }
    }
}
