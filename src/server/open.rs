//! A connection's hold on the listener, and the caps on one client's share of it
//! (`listener.max_connections_per_address`, `max_connections_per_org`): counted while the
//! connection is open, given back on drop however it ends.

use crate::gateway::Gateway;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedSemaphorePermit;

/// Open connections per key (an address, an organisation) for the caps on one client's share
/// of `max_connections`: an entry only while its key has connections open, so at most
/// `max_connections` entries.
pub(super) struct OpenCounts<K>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq + Clone> OpenCounts<K> {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(OpenCounts(Mutex::new(HashMap::new())))
    }

    /// One more connection for `key`, unless it has `max` open already.
    pub(super) fn take(self: &Arc<Self>, key: K, max: usize) -> Option<Counted<K>> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Counted {
            counts: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// One connection counted against its key until dropped.
pub(super) struct Counted<K: Hash + Eq + Clone> {
    counts: Arc<OpenCounts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Counted<K> {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection's hold on the listener: its `max_connections` permit, its address's count, the
/// connection gauges. Given back on drop, however the connection ends.
pub(super) struct Open {
    active: prometheus_client::metrics::gauge::Gauge,
    on_worker: prometheus_client::metrics::gauge::Gauge,
    _permit: OwnedSemaphorePermit,
    _address: Counted<IpAddr>,
}

impl Open {
    pub(super) fn new(gw: &Gateway, permit: OwnedSemaphorePermit, address: Counted<IpAddr>) -> Open {
        let worker = crate::metrics::WorkerLabels {
            worker: crate::worker::index() as u64,
        };
        let on_worker = gw.metrics.worker_connections.get_or_create(&worker).clone();
        let active = gw.metrics.active_connections.clone();
        active.inc();
        on_worker.inc();
        Open {
            active,
            on_worker,
            _permit: permit,
            _address: address,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.on_worker.dec();
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_counts_cap_each_key_and_forget_keys_at_zero() {
        let counts = OpenCounts::<IpAddr>::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = counts.take(a, 2).unwrap();
        let a2 = counts.take(a, 2).unwrap();
        assert!(counts.take(a, 2).is_none(), "a third for the same key");
        let b1 = counts.take(b, 2).unwrap();
        assert_eq!(counts.keys(), 2);
        drop(a1);
        let a3 = counts.take(a, 2).unwrap();
        drop((a2, a3, b1));
        assert_eq!(counts.keys(), 0, "no entry outlives its connections");
    }
}
