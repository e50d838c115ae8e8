//! The `caregate` command: parse arguments, call the library. Errors are one sentence on
//! stderr and a non-zero exit; no stack traces for user mistakes.

/// jemalloc, not glibc's allocator: a request's buffers of a kilobyte or more (a TLS record,
/// a read buffer) are past glibc's per-thread cache, so each one's malloc goes to the arena,
/// which first sorts and merges the small chunks freed since (`malloc_consolidate`);
/// jemalloc's thread caches hold them (BENCHMARKS.md, "The allocator").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;
use caregate::config::Config;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "caregate", version, about = "A mutual-TLS gateway for clinical data sharing")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load and validate the config and every file it names.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Dry run of one request: identity, route, decision, rate-limit class.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// The client certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, default_value = "GET")]
        method: String,
        /// A path (`/fhir/Patient/9990000018`) or URL (`https://host:8443/fhir/…`).
        target: String,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// The embedded demo: dev PKI, sample FHIR and DICOMweb upstreams, the gateway.
    Demo {
        /// Where certs/dev, config/demo.toml and audit/ live.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The auditor's commands.
    Audit {
        #[command(subcommand)]
        command: caregate::cli::AuditCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Make a development PKI: CA, server cert, sample client certs, CRL, audit signing key.
    Dev {
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caregate: {}", one_sentence(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes in one line.
fn one_sentence(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let state = caregate::state::State::build(config, 0)?;
            println!("{}", caregate::cli::check_summary(&state));
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            config,
            cert,
            method,
            target,
        } => {
            let config = Config::load(&config)?;
            let state = caregate::state::State::build(config, 0)?;
            let pem = std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let text = caregate::cli::explain(&state, &pem, &method, &target)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command: PkiCommand::Dev { out },
        } => {
            let pki = caregate::pki::dev(&out)?;
            println!(
                "development PKI written to {} (never use these keys for real traffic)",
                pki.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => {
            let opts = caregate::demo::DemoOptions {
                dir,
                ephemeral_ports: false,
            };
            runtime()?.block_on(caregate::demo::run(opts, ctrl_c()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => Ok(ExitCode::from(caregate::cli::audit(command))),
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `caregate run`: serve until SIGTERM/SIGINT, reloading on SIGHUP.
async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal that arrives as soon as "caregate listening" is logged must not
    // meet the default action (which would kill the process mid-write).
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let running = caregate::server::start(config).await?;
    let signal = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Logged, audited and counted inside; a refused config leaves the old one serving.
                let _ = running.reload().await;
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    tracing::info!(
        signal,
        "shutting down: no new connections, in-flight requests may finish"
    );
    running.shutdown();
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}
