//! Where request-rate state lives: the [`RateStore`] seam and its in-process governor store.
//!
//! The seam is what a fleet-wide store (Redis, one GCRA cell per key) would implement later; it
//! is sync on purpose, so that the request path stays a plain function call and no async-trait
//! surface leaks into the pipeline.

use crate::config::Class;
use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request rate: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateQuota {
    pub per_second: f64,
    pub burst: u32,
    /// The same quota as governor sees it; its `Eq` is what the local store keys limiters by
    /// (an `f64` cannot be).
    quota: Quota,
}

impl RateQuota {
    /// `burst` defaults to `ceil(per_second)` (at least 1). `None` when the rate cannot be a
    /// quota: not above 0, not finite, or so high that one request's period rounds to 0 ns,
    /// which is the same as unlimited.
    pub fn new(per_second: f64, burst: Option<u32>) -> Option<RateQuota> {
        if !(per_second > 0.0 && per_second.is_finite()) {
            return None;
        }
        let burst = burst.unwrap_or_else(|| per_second.ceil().min(u32::MAX as f64) as u32);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(RateQuota {
            per_second,
            burst: burst.get(),
            quota,
        })
    }

    /// The `w` of `RateLimit-Policy`: seconds for an empty bucket to refill, at least 1.
    pub fn window_secs(&self) -> u64 {
        ((self.burst as f64 / self.per_second).ceil() as u64).max(1)
    }
}

/// A request over its rate: when the next one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// Request-rate state keyed by organisation and class.
pub trait RateStore: Send + Sync {
    /// Counts one request of `key` in `class` against `quota`.
    fn check(&self, key: &str, class: Class, quota: &RateQuota) -> Result<(), RateLimited>;

    /// Called with every (class, quota) a config limits by, at start and on each reload (the
    /// store outlives configs): make ready what is new, keep the state of what is unchanged,
    /// and let go of what is no longer used.
    fn configure(&self, _quotas: &[(Class, RateQuota)]) {}

    /// Forgets keys whose state is the same as a fresh one (memory stays bounded).
    fn retain_recent(&self) {}

    /// Keys held (for tests and metrics); a remote store may answer 0.
    fn key_count(&self) -> usize {
        0
    }
}

// === impl OrgKey ===

/// Inline capacity of [`OrgKey`]: ODS codes are at most 12 characters, so every real key
/// fits and a check never allocates.
const INLINE: usize = 22;

/// An organisation code as a map key, built from `&str` without allocating when short.
/// governor's keyed `check_key` takes `&K`, so a `String`/`Arc<str>` key would cost one
/// allocation per request.
#[derive(Clone)]
pub(crate) enum OrgKey {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Arc<str>),
}

impl OrgKey {
    pub(crate) fn new(s: &str) -> OrgKey {
        let b = s.as_bytes();
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            OrgKey::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            OrgKey::Heap(Arc::from(s))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole (never cut), so always UTF-8.
            OrgKey::Inline { len, buf } => std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default(),
            OrgKey::Heap(s) => s,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            OrgKey::Inline { len, buf } => &buf[..*len as usize],
            OrgKey::Heap(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for OrgKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for OrgKey {}

impl Hash for OrgKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

// === impl GovernorStore ===

type Keyed<C> = RateLimiter<OrgKey, DashMapStateStore<OrgKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Entry<C: Clock> {
    class: Class,
    quota: Quota,
    limiter: Keyed<C>,
}

/// The in-process store: one keyed governor limiter per (class, quota) in use. Overrides with
/// their own quota get their own limiter, so one quota per limiter (governor's model) holds.
pub struct GovernorStore<C: Clock> {
    /// Read on every check without a lock; replaced (rarely) when a new quota appears.
    limiters: ArcSwap<Vec<Arc<Entry<C>>>>,
    /// Serialises adding limiters so two racing checks do not both add one.
    adding: Mutex<()>,
    clock: C,
}

impl<C> GovernorStore<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    pub fn new(clock: C) -> GovernorStore<C> {
        GovernorStore {
            limiters: ArcSwap::from_pointee(Vec::new()),
            adding: Mutex::new(()),
            clock,
        }
    }

    /// Creates the limiter for (class, quota) now, so the request path never has to.
    fn prepare(&self, class: Class, quota: &RateQuota) {
        let _guard = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.limiters.load();
        if current.iter().any(|e| e.class == class && e.quota == quota.quota) {
            return;
        }
        let mut next: Vec<Arc<Entry<C>>> = current.iter().cloned().collect();
        next.push(Arc::new(Entry {
            class,
            quota: quota.quota,
            limiter: RateLimiter::dashmap_with_clock(quota.quota, self.clock.clone()),
        }));
        self.limiters.store(Arc::new(next));
    }

    fn check_in(&self, key: &OrgKey, class: Class, quota: &RateQuota) -> Option<Result<(), RateLimited>> {
        let limiters = self.limiters.load();
        let entry = limiters.iter().find(|e| e.class == class && e.quota == quota.quota)?;
        Some(entry.limiter.check_key(key).map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()),
        }))
    }
}

impl<C> RateStore for GovernorStore<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn check(&self, key: &str, class: Class, quota: &RateQuota) -> Result<(), RateLimited> {
        let key = OrgKey::new(key);
        if let Some(r) = self.check_in(&key, class, quota) {
            return r;
        }
        // A quota that was not prepared: slow path once, then it is there for everyone.
        self.prepare(class, quota);
        self.check_in(&key, class, quota).unwrap_or(Ok(()))
    }

    fn configure(&self, quotas: &[(Class, RateQuota)]) {
        let _guard = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.limiters.load();
        let next = quotas
            .iter()
            .map(
                |(class, q)| match current.iter().find(|e| e.class == *class && e.quota == q.quota) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(Entry {
                        class: *class,
                        quota: q.quota,
                        limiter: RateLimiter::dashmap_with_clock(q.quota, self.clock.clone()),
                    }),
                },
            )
            .collect();
        self.limiters.store(Arc::new(next));
    }

    fn retain_recent(&self) {
        for e in self.limiters.load().iter() {
            e.limiter.retain_recent();
            e.limiter.shrink_to_fit();
        }
    }

    fn key_count(&self) -> usize {
        self.limiters.load().iter().map(|e| e.limiter.len()).sum()
    }
}
