//! TLS session resumption with a lifetime, and the re-check of a resumed session's certificate.
//!
//! rustls resumes from a server-side cache: TLS 1.2 session ids, and TLS 1.3 tickets, which
//! (no `Ticketer` is set) are single-use keys into the same cache. Its cache has no lifetime: an
//! entry lives until 256 newer ones push it out, and a connection resumed from a TLS 1.3 ticket
//! is given new tickets, so a chain of them need never show the certificate again.
//! [`SessionCache`] bounds both: each entry carries the time of the full handshake that
//! authenticated it, tickets issued on a resumed connection inherit that time, and an entry
//! older than `listener.session_lifetime` is not resumed (the client does a full handshake).
//!
//! A resumed connection skips the client verifier, so its certificate was last checked when
//! the session was made: [`TlsState::recheck`] runs the verifier again, against the current
//! time and the current CRLs, before the connection is served.

use super::{note, HandshakeNote, TlsState, NOTE};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// rustls's default cache size, kept.
const ENTRIES: usize = 256;

/// Bytes in front of each stored session: when its full handshake was (milliseconds since
/// [`SessionCache::epoch`], big-endian).
const STAMP: usize = 8;

/// rustls's memory cache, with each entry stamped and refused once older than the lifetime.
#[derive(Debug)]
pub struct SessionCache {
    inner: Arc<ServerSessionMemoryCache>,
    pub(super) lifetime: Duration,
    /// What stamps count from: a monotonic clock, so a step of the wall clock neither revives
    /// nor kills sessions.
    epoch: Instant,
}

impl SessionCache {
    pub fn new(lifetime: Duration) -> SessionCache {
        SessionCache {
            inner: ServerSessionMemoryCache::new(ENTRIES),
            lifetime,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The session without its stamp, if it is still within the lifetime; notes its stamp for
    /// the tickets this handshake may issue.
    fn fresh(&self, mut stamped: Vec<u8>) -> Option<Vec<u8>> {
        let stamp: [u8; STAMP] = stamped.get(..STAMP)?.try_into().ok()?;
        let authenticated = u64::from_be_bytes(stamp);
        let age = self.now_ms().saturating_sub(authenticated);
        if u128::from(age) >= self.lifetime.as_millis() {
            return None;
        }
        note(|n| n.authenticated_ms = Some(authenticated));
        stamped.drain(..STAMP);
        Some(stamped)
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        // A ticket issued on a resumed TLS 1.3 connection is as old as the session it resumed;
        // the client verifier clears the note on a full handshake.
        let authenticated = NOTE
            .try_with(|n| n.borrow().authenticated_ms)
            .ok()
            .flatten()
            .unwrap_or_else(|| self.now_ms());
        let mut stamped = Vec::with_capacity(STAMP + value.len());
        stamped.extend_from_slice(&authenticated.to_be_bytes());
        stamped.extend_from_slice(&value);
        self.inner.put(key, stamped)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let fresh = self.fresh(self.inner.get(key)?);
        if fresh.is_none() {
            self.inner.take(key);
        }
        fresh
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.fresh(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl TlsState {
    /// A resumed connection's certificate chain (leaf first, as the client sent it when the
    /// session was made) put through the client verifier again, now: validity, the current
    /// CRLs and roots, key usage. A refusal fills `note` (subject, fingerprint, reason) as a
    /// refused handshake does. Full handshakes need none of this: the verifier just ran.
    pub fn recheck(&self, chain: &[CertificateDer<'_>], note: &mut HandshakeNote) -> Result<(), rustls::Error> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        NOTE.sync_scope(RefCell::new(std::mem::take(note)), || {
            let verdict = self.verifier.verify_client_cert(leaf, intermediates, UnixTime::now());
            *note = NOTE.with(|n| n.take());
            verdict.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_comes_back_as_stored_within_its_lifetime_and_not_after() {
        let cache = SessionCache::new(Duration::from_secs(3600));
        assert!(cache.put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(cache.get(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(cache.take(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(cache.take(b"id"), None, "a ticket is taken once");
        let spent = SessionCache::new(Duration::ZERO);
        assert!(spent.put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(spent.get(b"id"), None);
    }

    #[test]
    fn a_ticket_issued_on_a_resumed_connection_is_as_old_as_the_full_handshake() {
        // A cache whose clock has run for 10s, with a lifetime of 5s.
        let mut cache = SessionCache::new(Duration::from_secs(5));
        cache.epoch = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
        // Put on a connection that resumed a session authenticated at 0s: already too old.
        let resumed = HandshakeNote {
            authenticated_ms: Some(0),
            ..HandshakeNote::default()
        };
        NOTE.sync_scope(RefCell::new(resumed), || cache.put(b"old".to_vec(), b"s".to_vec()));
        assert_eq!(cache.take(b"old"), None);
        // After a full handshake (no note of an earlier one): good for the lifetime.
        cache.put(b"new".to_vec(), b"s".to_vec());
        assert_eq!(cache.take(b"new").as_deref(), Some(&b"s"[..]));
    }
}
