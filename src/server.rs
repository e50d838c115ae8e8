//! STUB: listeners, accept loop, reload, drain.

use crate::config::Config;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A gateway that is running: its bound addresses and the handle to stop it.
pub struct Running {
    /// The TLS listener's address (useful when `listener.bind` had port 0).
    pub addr: SocketAddr,
    /// The admin listener's address, if `[admin]` is configured.
    pub admin_addr: Option<SocketAddr>,
}

/// Loads everything the config names, binds the listeners and starts serving.
pub async fn start(_config: Config) -> Result<Running, StartError> {
    Err(StartError("not yet".into()))
}

impl Running {
    /// Starts a graceful drain (as SIGTERM does).
    pub fn shutdown(&self) {}

    /// Waits until the gateway has drained and stopped.
    pub async fn wait(self) -> Result<(), StartError> {
        Ok(())
    }
}
