//! The gateway under test, started in-process on loopback port 0 from a config file written
//! into its own temporary folder.

use super::client::{Answer, Remote};
use super::config::GatewayConfig;
use super::pki::TestPki;
use super::trail::{audit_records, by_request};
use super::upstream::Upstream;
use serde_json::Value;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;

/// A gateway under test. It derefs to its [`Remote`], so `gw.get(&cert, path)` and the like
/// work on it directly. Its folder (config, and the audit trail unless the config put it
/// elsewhere) lasts as long as the `Gw`, after a stop too.
pub struct Gw {
    running: Option<caregate::server::Running>,
    /// What was written to `config_path` at the start.
    pub config: GatewayConfig,
    pub config_path: PathBuf,
    pub audit_dir: PathBuf,
    pub work: tempfile::TempDir,
    remote: Remote,
}

impl Gw {
    /// Starts a gateway with this config; its audit trail goes where the config's `[audit]
    /// dir` says, or else into the gateway's own folder.
    pub async fn start(pki: &TestPki, config: GatewayConfig) -> Gw {
        let work = tempfile::tempdir().unwrap();
        let audit_dir = match config.audit_dir() {
            Some(dir) => dir.to_path_buf(),
            None => work.path().join("audit"),
        };
        let config = config.audit(&audit_dir);
        let config_path = work.path().join("caregate.toml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let loaded = caregate::config::Config::load(&config_path).unwrap();
        let running = caregate::server::start(loaded).await.unwrap();
        let remote = Remote::new(running.addr, running.admin_addr, pki);
        Gw {
            running: Some(running),
            config,
            config_path,
            audit_dir,
            work,
            remote,
        }
    }

    /// A gateway with [`GatewayConfig::standard`] organisations and routes, forwarding to `up`.
    pub async fn standard(pki: &TestPki, up: &Upstream) -> Gw {
        Gw::start(pki, pki.config().standard([up.url()])).await
    }

    /// The running gateway (until `wait` or `stop`).
    pub fn running(&self) -> &caregate::server::Running {
        self.running.as_ref().expect("the gateway has stopped")
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    /// The auditor's console's address (`[console]` must be configured).
    pub fn console_addr(&self) -> SocketAddr {
        self.running().console_addr.expect("the config has no [console]")
    }

    /// Reloads the config file (and the files it names).
    pub async fn reload(&self) -> Result<(), impl std::fmt::Debug> {
        self.running().reload().await
    }

    /// Starts the drain.
    pub fn shutdown(&self) {
        self.running().shutdown()
    }

    /// Waits for the gateway to stop (after `shutdown`).
    pub async fn wait(&mut self) -> Result<(), impl std::fmt::Debug> {
        self.running.take().expect("the gateway has stopped").wait().await
    }

    /// The audit trail so far.
    pub fn records(&self) -> Vec<Value> {
        audit_records(&self.audit_dir)
    }

    /// The `access` record of the request that got this answer.
    pub fn access_of(&self, a: &Answer) -> Value {
        let id = a.request_id();
        by_request(&self.records(), id, "access")
            .pop()
            .unwrap_or_else(|| panic!("no access record for {id}"))
    }

    /// Shuts down, waits for the drain, and returns the whole audit trail.
    pub async fn stop(&mut self) -> Vec<Value> {
        self.shutdown();
        self.wait().await.unwrap();
        self.records()
    }

    /// Rewrites the config file with `from` replaced by `to` (which must occur), for the next
    /// reload.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        assert!(text.contains(from), "the config has no {from:?}");
        std::fs::write(&self.config_path, text.replace(from, to)).unwrap();
    }

    /// Rewrites the config file as the start's config changed by `change`, for the next reload.
    pub fn rewrite_config(&self, change: impl FnOnce(GatewayConfig) -> GatewayConfig) {
        std::fs::write(&self.config_path, change(self.config.clone()).to_string()).unwrap();
    }
}

impl Deref for Gw {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}
