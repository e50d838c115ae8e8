//! Per-(organisation, class) limits: request rate (governor, refused with 429), requests in
//! flight (refused with 429), and body bandwidth (shaped, never refused).
//!
//! A class without a `[rate_limit.<class>]` table and without an override for the organisation
//! is not limited at all, and costs one array read per request.

mod shape;
mod store;

pub use shape::Shaped;
pub use store::{GovernorStore, RateLimited, RateQuota, RateStore};

use crate::config::{self, Class, ClassLimit};
use shape::Bucket;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::OrgKey;

/// All limits of one gateway.
pub struct Limits {
    /// Shared with the limits of later configs (see [`Limits::reloaded`]).
    rates: Arc<dyn RateStore>,
    /// Per class (indexed by [`idx`]): the class table, or `None` when not limited.
    base: [Option<Plan>; 3],
    /// Organisations with an override: their merged plans for every class.
    overrides: HashMap<Box<str>, [Option<Plan>; 3]>,
    /// Concurrency and bandwidth state per class, only for keys whose plan has either.
    slots: [SlotMap; 3],
}

/// What applies to one (organisation, class).
#[derive(Debug, Clone, Copy)]
struct Plan {
    rate: Option<RateQuota>,
    max_concurrent: Option<u32>,
    bytes_per_second: Option<u64>,
}

impl Plan {
    fn from_limit(l: &ClassLimit) -> Option<Plan> {
        let plan = Plan {
            // A burst without a rate means nothing: only `requests_per_second` limits the rate.
            rate: l.requests_per_second.and_then(|rps| RateQuota::new(rps, l.burst)),
            max_concurrent: l.max_concurrent,
            bytes_per_second: l.bytes_per_second,
        };
        let limited = plan.rate.is_some() || plan.max_concurrent.is_some() || plan.bytes_per_second.is_some();
        limited.then_some(plan)
    }

    fn needs_slot(&self) -> bool {
        self.max_concurrent.is_some() || self.bytes_per_second.is_some()
    }
}

fn idx(class: Class) -> usize {
    match class {
        Class::Epr => 0,
        Class::Image => 1,
        Class::Other => 2,
    }
}

/// Shared state of one (organisation, class): in-flight count and byte bucket. Grants and
/// shaped bodies hold it by `Arc`, so it outlives its map entry if it has to.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Shared with the slot that replaces this one when a reload changes the bandwidth: the
    /// requests it counts are still in flight.
    in_flight: Arc<AtomicU32>,
    bucket: Option<Bucket>,
}

type SlotMap = RwLock<HashMap<OrgKey, Arc<Slot>>>;

/// A request that passed its limits. Holds the concurrency slot until dropped.
#[derive(Debug)]
pub struct Grant {
    slot: Option<Arc<Slot>>,
    /// Whether this grant counts in `slot.in_flight` (and must give it back on drop).
    counted: bool,
}

/// Why a request was refused, with the values of the 429's headers.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub retry_after: Duration,
    /// `RateLimit-Policy` header value.
    pub policy: String,
    /// `RateLimit` header value.
    pub state: String,
}

impl Refusal {
    /// `Retry-After` in whole seconds: rounded up, at least 1 (0 would invite a retry storm).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

// === impl Limits ===

impl Limits {
    pub fn new(cfg: &config::RateLimits) -> Limits {
        Limits::with_clock(cfg, governor::clock::DefaultClock::default())
    }

    /// With another governor clock: tests pass a `FakeRelativeClock` and advance it.
    pub fn with_clock<C>(cfg: &config::RateLimits, clock: C) -> Limits
    where
        C: governor::clock::Clock + Clone + Send + Sync + 'static,
        C::Instant: Send + Sync,
    {
        Limits::with_store(cfg, Arc::new(GovernorStore::new(clock)))
    }

    /// With another rate store (the seam for a fleet-wide one).
    pub fn with_store(cfg: &config::RateLimits, rates: Arc<dyn RateStore>) -> Limits {
        let (base, overrides) = plans(cfg);
        let limits = Limits {
            rates,
            base,
            overrides,
            slots: Default::default(),
        };
        // Limiters are made up front so that no request pays for creating one.
        limits.rates.configure(&limits.quotas());
        limits
    }

    /// The limits of a reloaded config, carrying on from `old` wherever a limit did not change,
    /// so that a reload (a CRL refresh, say) neither hands every organisation a fresh burst
    /// nor forgets the transfers it has in flight:
    ///
    /// - request rate: the same quota for a (class, organisation) keeps its state; a changed
    ///   one starts full;
    /// - requests in flight: still counted, against the new `max_concurrent`;
    /// - bandwidth: the same `bytes_per_second` keeps its bucket, shared with the bodies still
    ///   streaming; a changed one starts full (those bodies finish at the old rate).
    ///
    /// `old` keeps serving until the new state is swapped in: a key it sees for the first time
    /// in that moment is not carried over (its requests of that moment are not counted).
    pub fn reloaded(cfg: &config::RateLimits, old: &Limits) -> Limits {
        let limits = Limits::with_store(cfg, old.rates.clone());
        for class in Class::ALL {
            let carried = old.slots[idx(class)].read().unwrap_or_else(|e| e.into_inner());
            let mut slots = limits.slots[idx(class)].write().unwrap_or_else(|e| e.into_inner());
            for (key, slot) in carried.iter() {
                let Some(plan) = limits.plan(key.as_str(), class).filter(Plan::needs_slot) else {
                    continue;
                };
                let same_bucket = match (&slot.bucket, plan.bytes_per_second) {
                    (Some(b), Some(bps)) => b.has_rate(bps),
                    (None, None) => true,
                    _ => false,
                };
                let slot = if same_bucket {
                    slot.clone()
                } else {
                    Arc::new(Slot {
                        in_flight: slot.in_flight.clone(),
                        bucket: plan.bytes_per_second.map(Bucket::new),
                    })
                };
                slots.insert(key.clone(), slot);
            }
        }
        limits
    }

    /// Every (class, quota) this config limits a rate by.
    fn quotas(&self) -> Vec<(Class, RateQuota)> {
        let mut quotas = Vec::new();
        for p in std::iter::once(&self.base).chain(self.overrides.values()) {
            for (class, plan) in Class::ALL.into_iter().zip(p) {
                if let Some(q) = plan.as_ref().and_then(|p| p.rate) {
                    if !quotas.contains(&(class, q)) {
                        quotas.push((class, q));
                    }
                }
            }
        }
        quotas
    }

    fn plan(&self, org: &str, class: Class) -> Option<Plan> {
        if !self.overrides.is_empty() {
            if let Some(p) = self.overrides.get(org) {
                return p[idx(class)];
            }
        }
        self.base[idx(class)]
    }

    /// Checks rate and concurrency for (org, class). Call only after policy allowed the request.
    pub fn check(&self, org: &str, class: Class) -> Result<Grant, Refusal> {
        let Some(plan) = self.plan(org, class) else {
            return Ok(Grant::unlimited());
        };
        // Concurrency first: taking a slot can be undone, a rate token cannot.
        let mut grant = Grant::unlimited();
        if plan.needs_slot() {
            let slot = self.slot(org, class, &plan);
            if let Some(max) = plan.max_concurrent {
                let before = slot.in_flight.fetch_add(1, Ordering::AcqRel);
                if before >= max {
                    slot.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(concurrency_refusal(class, max));
                }
                grant.counted = true;
            }
            grant.slot = Some(slot);
        }
        if let Some(quota) = &plan.rate {
            // On refusal `grant` drops here and gives its concurrency slot back.
            self.rates
                .check(org, class, quota)
                .map_err(|r| rate_refusal(class, quota, r.retry_after))?;
        }
        Ok(grant)
    }

    fn slot(&self, org: &str, class: Class, plan: &Plan) -> Arc<Slot> {
        let key = OrgKey::new(org);
        let map = &self.slots[idx(class)];
        if let Some(s) = map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return s.clone();
        }
        let mut w = map.write().unwrap_or_else(|e| e.into_inner());
        w.entry(key)
            .or_insert_with(|| {
                Arc::new(Slot {
                    in_flight: Arc::default(),
                    bucket: plan.bytes_per_second.map(Bucket::new),
                })
            })
            .clone()
    }

    /// Drops the state of keys not seen recently: rate state that is back to fresh, and slots
    /// with nothing in flight, no body holding them and a full bucket. Call periodically.
    pub fn retain_recent(&self) {
        self.rates.retain_recent();
        let now = tokio::time::Instant::now();
        for map in &self.slots {
            let mut m = map.write().unwrap_or_else(|e| e.into_inner());
            m.retain(|_, s| {
                let idle = Arc::strong_count(s) == 1
                    && s.in_flight.load(Ordering::Acquire) == 0
                    && s.bucket.as_ref().is_none_or(|b| b.is_full(now));
                !idle
            });
            m.shrink_to_fit();
        }
    }

    /// (organisation, class) states held: rate keys plus concurrency/bandwidth slots.
    pub fn len(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        self.rates.key_count() + slots
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The class tables, and the merged plans of organisations with overrides.
type Plans = ([Option<Plan>; 3], HashMap<Box<str>, [Option<Plan>; 3]>);

fn plans(cfg: &config::RateLimits) -> Plans {
    let base = Class::ALL.map(|c| cfg.classes.get(&c).and_then(Plan::from_limit));
    let mut overrides = HashMap::new();
    for o in &cfg.overrides {
        overrides
            .entry(o.org.as_str().into())
            .or_insert_with(|| Class::ALL.map(|c| cfg.for_org(&o.org, c).as_ref().and_then(Plan::from_limit)));
    }
    (base, overrides)
}

fn rate_refusal(class: Class, quota: &RateQuota, retry_after: Duration) -> Refusal {
    let name = class.as_str();
    Refusal {
        retry_after,
        policy: format!("\"{name}\";q={};w={}", quota.burst, quota.window_secs()),
        state: format!("\"{name}\";r=0;t={}", ceil_secs(retry_after)),
    }
}

/// When a slot frees is unknown (it is the end of someone's response), so retry in 1 s.
fn concurrency_refusal(class: Class, max: u32) -> Refusal {
    let name = class.as_str();
    Refusal {
        retry_after: Duration::from_secs(1),
        policy: format!("\"{name}-concurrency\";q={max}"),
        state: format!("\"{name}-concurrency\";r=0;t=1"),
    }
}

// === impl Grant ===

impl Grant {
    fn unlimited() -> Grant {
        Grant {
            slot: None,
            counted: false,
        }
    }

    /// Wraps a body so that its data frames are shaped to the bandwidth limit (if any).
    pub fn shape<B>(&self, body: B) -> Shaped<B> {
        Shaped::new(body, self.slot.clone())
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.counted {
            if let Some(s) = &self.slot {
                s.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests;
