//! Everything reloadable, built from one config and swapped as a whole: a request takes one
//! snapshot at its start and uses it throughout, so a reload never mixes old and new state.

use crate::config::{Config, KeyError};
use crate::directory::Directory;
use crate::forward::{self, Upstream};
use crate::limit::Limits;
use crate::route::RouteTable;
use crate::tls::TlsState;
use std::sync::Arc;

pub struct State {
    pub config: Arc<Config>,
    pub tls: TlsState,
    pub directory: Directory,
    pub routes: RouteTable,
    /// Kept across a reload where unchanged, with their open connections.
    pub upstreams: Vec<Arc<Upstream>>,
    pub limits: Arc<Limits>,
    /// Increases with every reload; connections remember the generation they were verified in.
    pub generation: u64,
}

impl State {
    /// What admission decides by.
    pub fn rules(&self) -> crate::admit::Rules<'_> {
        crate::admit::Rules {
            directory: &self.directory,
            routes: &self.routes,
            limits: &self.limits,
        }
    }

    /// Loads every file the config names and checks what could only be checked with them.
    /// This is what `caregate check` runs, so a config that passes `check` starts.
    pub fn build(config: Config, generation: u64) -> Result<State, crate::config::ConfigError> {
        State::make(config, generation, None)
    }

    /// The state of a reloaded config: as [`State::build`], with the limits and upstreams
    /// carrying on from `previous`'s where they did not change (see [`Limits::reloaded`] and
    /// [`forward::upstreams`]).
    pub fn reload(config: Config, previous: &State) -> Result<State, crate::config::ConfigError> {
        State::make(config, previous.generation + 1, Some(previous))
    }

    fn make(config: Config, generation: u64, previous: Option<&State>) -> Result<State, crate::config::ConfigError> {
        let err = |e: KeyError| e.in_file(&config.path);
        let tls = match previous {
            Some(p) => crate::tls::rebuild(&config.listener, &p.tls),
            None => crate::tls::build(&config.listener),
        }
        .map_err(err)?;
        let directory = Directory::build(&config).map_err(err)?;
        let running = previous.map_or(&[][..], |p| &p.upstreams[..]);
        let upstreams = forward::upstreams(&config.upstreams, config.listener.workers, running).map_err(err)?;
        let routes = RouteTable::new(&config.routes, |name| {
            config.upstreams.iter().position(|u| u.name == name).unwrap_or(0)
        });
        if let Some(key) = &config.audit.signing_key {
            if let Err(e) = std::fs::metadata(key) {
                return Err(err(KeyError::new(
                    "audit.signing_key",
                    format!("cannot read {}: {e}", key.display()),
                )));
            }
        }
        let limits = Arc::new(match previous {
            Some(old) => Limits::reloaded(&config.rate_limits, &old.limits),
            None => Limits::new(&config.rate_limits),
        });
        Ok(State {
            config: Arc::new(config),
            tls,
            directory,
            routes,
            upstreams,
            limits,
            generation,
        })
    }
}
