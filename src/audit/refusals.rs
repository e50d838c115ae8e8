//! Refusals past a budget, counted rather than written one by one (issue 19): whoever can make
//! the gateway refuse cheaply must not be able to fill the trail's disk with the records.
//!
//! Two budgets share this code:
//!
//! - refused handshakes, per source address ([`Refusals<IpAddr>`], budget [`HANDSHAKES`]): a TCP
//!   connect-and-close costs a peer nothing and used to cost the trail a `tls_rejected` record;
//! - refused requests, per organisation, or per certificate fingerprint for a trusted certificate
//!   of an unknown organisation ([`Refusals<Requester>`], `[rate_limit] refusals_per_second` and
//!   `refusal_burst`): each was an `access` and a `complete` record, fsynced.
//!
//! Each key has a token bucket: a refusal within it is written as before; past it, it is only
//! counted, in a window of one second opened by the first refusal counted, and the window is
//! written as one `refusals_coalesced` record {`ip` or `org`, `count`, `since`, `until`,
//! `reasons`} once it is over (by the key's next refusal, or by the sweeper within about a
//! second, or at stop). A key is forgotten once its window is written and its bucket full again.
//!
//! At most [`MAX_KEYS`] keys are tracked at once; refusals of any other key share one more entry,
//! named `"other"`, with a budget of its own. Memory is bounded by that cap, and the trail by
//! the budget's records plus one record per key per second.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{Event, RefusalsCoalesced};

/// `tls_rejected` records written per address per second.
pub const PER_SECOND: u32 = 10;
/// The budget of refused handshakes per source address.
pub const HANDSHAKES: Budget = Budget {
    per_second: PER_SECOND as f64,
    burst: PER_SECOND,
};
/// Keys tracked at once; refusals of others are counted together as `other`.
pub const MAX_KEYS: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

/// How many refusals a key may have written: `burst` at once, `per_second` sustained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: u32,
}

/// Who a refused request is counted against: its organisation's code when the gateway knows
/// the organisation, else its (verified) certificate's fingerprint, so that one certificate of
/// an unknown organisation cannot spend another's budget. Written as the record's `org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requester(pub Arc<str>);

/// What a key is written as in a `refusals_coalesced` record; `None` is the keys past the cap.
pub trait Key: Eq + Hash + Clone {
    fn name(key: Option<&Self>, record: &mut RefusalsCoalesced);
}

impl Key for IpAddr {
    fn name(key: Option<&Self>, record: &mut RefusalsCoalesced) {
        record.ip = Some(key.map_or_else(|| "other".to_string(), IpAddr::to_string));
    }
}

impl Key for Requester {
    fn name(key: Option<&Self>, record: &mut RefusalsCoalesced) {
        record.org = Some(key.map_or_else(|| "other".to_string(), |k| k.0.to_string()));
    }
}

pub struct Refusals<K> {
    inner: Mutex<Inner<K>>,
}

impl<K> Default for Refusals<K> {
    fn default() -> Self {
        Refusals {
            inner: Mutex::new(Inner {
                keys: HashMap::new(),
                other: None,
                sweeping: false,
            }),
        }
    }
}

struct Inner<K> {
    keys: HashMap<K, Entry>,
    other: Option<Entry>,
    /// A sweeper task runs (see [`Refusals::admit`]).
    sweeping: bool,
}

/// One key: its bucket, and the window of what it has had counted.
struct Entry {
    /// Tokens left at `at`, refilled at the budget's rate up to its burst. Not governor: the
    /// bucket and the window live in one entry, under one lock and one cap, and the entry is
    /// forgotten exactly when both are idle.
    tokens: f64,
    at: Instant,
    window: Option<Window>,
}

struct Window {
    opened: Instant,
    count: u64,
    since: String,
    until: String,
    reasons: BTreeMap<&'static str, u64>,
}

impl Entry {
    fn new(now: Instant, budget: Budget) -> Entry {
        Entry {
            tokens: f64::from(budget.burst),
            at: now,
            window: None,
        }
    }

    fn refill(&mut self, now: Instant, budget: Budget) {
        let earned = now.duration_since(self.at).as_secs_f64() * budget.per_second;
        self.tokens = (self.tokens + earned).min(f64::from(budget.burst));
        self.at = now;
    }

    /// Spends one refusal of the budget, if there is one left.
    fn spend(&mut self, now: Instant, budget: Budget) -> bool {
        self.refill(now, budget);
        let within = self.tokens >= 1.0;
        if within {
            self.tokens -= 1.0;
        }
        within
    }

    /// The window's record, if it is over (any window with `all`).
    fn close(&mut self, now: Instant, all: bool, key: Option<&impl Key>) -> Option<Event> {
        let over = self
            .window
            .as_ref()
            .is_some_and(|w| all || now.duration_since(w.opened) >= WINDOW);
        over.then(|| self.window.take()).flatten().map(|w| w.summary(key))
    }

    /// Nothing counted and a full bucket: the same as a key never seen.
    fn idle(&self, now: Instant, budget: Budget) -> bool {
        let earned = now.duration_since(self.at).as_secs_f64() * budget.per_second;
        self.window.is_none() && self.tokens + earned >= f64::from(budget.burst)
    }
}

impl Window {
    fn count(window: &mut Option<Window>, now: Instant, reason: &'static str) {
        let time = now_rfc3339();
        let w = window.get_or_insert_with(|| Window {
            opened: now,
            count: 0,
            since: time.clone(),
            until: String::new(),
            reasons: BTreeMap::new(),
        });
        w.until = time;
        w.count += 1;
        *w.reasons.entry(reason).or_default() += 1;
    }

    fn summary(self, key: Option<&impl Key>) -> Event {
        let mut record = RefusalsCoalesced {
            org: None,
            ip: None,
            count: self.count,
            since: self.since,
            until: self.until,
            reasons: self.reasons.into_iter().map(|(r, n)| (r.to_string(), n)).collect(),
        };
        Key::name(key, &mut record);
        Event::RefusalsCoalesced(record)
    }
}

/// What to do with one refusal.
pub struct Verdict {
    /// Within the budget: write its own record(s) as usual.
    pub write: bool,
    /// `refusals_coalesced` records of windows this refusal found over: to append.
    pub summaries: Vec<Event>,
    /// Start a sweeper task ([`Refusals::sweep`] every second until it answers true).
    pub start_sweeper: bool,
}

impl<K: Key> Refusals<K> {
    /// Counts one refusal of `key` for `reason` against `budget`.
    pub fn admit(&self, key: K, reason: &'static str, budget: Budget) -> Verdict {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        let start_sweeper = !std::mem::replace(&mut inner.sweeping, true);
        let tracked = inner.keys.len() < MAX_KEYS || inner.keys.contains_key(&key);
        let (entry, key) = match tracked {
            true => {
                let entry = inner.keys.entry(key.clone()).or_insert_with(|| Entry::new(now, budget));
                (entry, Some(key))
            }
            false => (inner.other.get_or_insert_with(|| Entry::new(now, budget)), None),
        };
        let summaries = entry.close(now, false, key.as_ref()).into_iter().collect();
        let write = entry.spend(now, budget);
        if !write {
            Window::count(&mut entry.window, now, reason);
        }
        Verdict {
            write,
            summaries,
            start_sweeper,
        }
    }

    /// Counts one refusal as [`Refusals::admit`] does and appends the records of windows it
    /// found over; the first refusal after a quiet spell starts the sweeper on this runtime.
    /// True when the refusal is within the budget (its own records are the caller's to write).
    pub fn spend(self: &Arc<Self>, audit: &super::AuditLog, key: K, reason: &'static str, budget: Budget) -> bool
    where
        K: Send + 'static,
    {
        let verdict = self.admit(key, reason, budget);
        for summary in verdict.summaries {
            audit.append(summary);
        }
        if verdict.start_sweeper {
            tokio::spawn(self.clone().sweeper(audit.clone(), budget));
        }
        verdict.write
    }

    /// Writes up the windows that are over (all of them with `all`) and forgets idle keys
    /// (every key with `all`): answers their `refusals_coalesced` records, and whether nothing
    /// is left (the sweeper then stops; the next refusal starts another). `budget` says when a
    /// bucket is full again.
    pub fn sweep(&self, all: bool, budget: Budget) -> (Vec<Event>, bool) {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        let mut out = Vec::new();
        inner.keys.retain(|key, entry| {
            out.extend(entry.close(now, all, Some(key)));
            !all && !entry.idle(now, budget)
        });
        if let Some(entry) = inner.other.as_mut() {
            out.extend(entry.close(now, all, None::<&K>));
            if all || entry.idle(now, budget) {
                inner.other = None;
            }
        }
        let empty = inner.keys.is_empty() && inner.other.is_none();
        if empty {
            inner.sweeping = false;
            inner.keys.shrink_to_fit();
        }
        (out, empty)
    }

    /// Sweeps every second until nothing is left, appending what it writes up to `audit`. Run
    /// by the task that [`Verdict::start_sweeper`] asks for. Dropped early (its runtime stops),
    /// it writes out what was still counted.
    pub async fn sweeper(self: Arc<Self>, audit: super::AuditLog, budget: Budget) {
        struct Last<K: Key>(Arc<Refusals<K>>, super::AuditLog, Budget);
        impl<K: Key> Drop for Last<K> {
            fn drop(&mut self) {
                for e in self.0.sweep(true, self.2).0 {
                    self.1.append(e);
                }
            }
        }
        let last = Last(self, audit, budget);
        loop {
            tokio::time::sleep(WINDOW).await;
            let (closed, empty) = last.0.sweep(false, budget);
            for e in closed {
                last.1.append(e);
            }
            if empty {
                return;
            }
        }
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).keys.len()
    }
}

fn now_rfc3339() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    super::chain::format_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(events: &[Event]) -> u64 {
        events
            .iter()
            .map(|e| match e {
                Event::RefusalsCoalesced(r) => r.count,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn past_the_budget_refusals_are_counted_and_summed_up_once_the_window_closes() {
        let r = Refusals::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..100)
            .map(|i| r.admit(ip, if i % 2 == 0 { "other" } else { "no_certificate" }, HANDSHAKES))
            .collect();
        // The clock moves while the loop runs: a token may come back.
        let written = verdicts.iter().filter(|v| v.write).count();
        assert!(
            (PER_SECOND as usize..=PER_SECOND as usize + 1).contains(&written),
            "{written}"
        );
        assert!(verdicts[0].start_sweeper && !verdicts[1].start_sweeper);
        assert!(verdicts.iter().all(|v| v.summaries.is_empty()));
        // Another address has a budget of its own.
        assert!(r.admit("10.0.0.2".parse().unwrap(), "other", HANDSHAKES).write);
        let (none, empty) = r.sweep(false, HANDSHAKES);
        assert!(none.is_empty() && !empty);
        let (all, empty) = r.sweep(true, HANDSHAKES);
        assert!(empty);
        assert_eq!(all.len(), 1);
        let Event::RefusalsCoalesced(c) = &all[0] else { panic!() };
        assert_eq!(
            (c.ip.as_deref(), c.count, c.org.as_deref()),
            (Some("10.0.0.1"), 100 - written as u64, None)
        );
        assert_eq!(c.reasons.values().sum::<u64>(), c.count);
        assert!(c.since <= c.until);
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn past_the_cap_keys_share_one_budget_as_other() {
        let r = Refusals::default();
        for i in 0..MAX_KEYS as u32 + 10 + PER_SECOND {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let v = r.admit(ip, "other", HANDSHAKES);
            // Past the cap, the first PER_SECOND are within `other`'s budget.
            assert_eq!(v.write, (i as usize) < MAX_KEYS + PER_SECOND as usize, "{i}");
        }
        assert_eq!(r.tracked(), MAX_KEYS);
        let (all, _) = r.sweep(true, HANDSHAKES);
        assert_eq!(count(&all), 10);
        let other = all.iter().find_map(|e| match e {
            Event::RefusalsCoalesced(c) if c.ip.as_deref() == Some("other") => Some(c.count),
            _ => None,
        });
        assert_eq!(other, Some(10));
    }

    #[test]
    fn a_closed_window_is_summed_up_by_the_next_refusal() {
        let r = Refusals::default();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..PER_SECOND + 3 {
            r.admit(ip, "other", HANDSHAKES);
        }
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        let v = r.admit(ip, "other", HANDSHAKES);
        assert!(v.write, "a second later, the bucket has refilled");
        // 3 were counted, maybe 2 if a token came back while the loop ran.
        assert!((2..=3).contains(&count(&v.summaries)));
    }

    /// A requester's budget is a token bucket: a steady trickle past it stays past it, and the
    /// key is kept (not forgotten with its window) until the bucket is full again.
    #[test]
    fn a_requester_past_its_budget_stays_there_until_its_bucket_refills() {
        let budget = Budget {
            per_second: 0.001,
            burst: 2,
        };
        let r = Refusals::default();
        let who = Requester("A81001".into());
        let written: Vec<bool> = (0..5).map(|_| r.admit(who.clone(), "no_route", budget).write).collect();
        assert_eq!(written, [true, true, false, false, false]);
        // Write the window up; the key stays, its bucket still empty.
        let (all, _) = r.sweep(true, budget);
        let Event::RefusalsCoalesced(c) = &all[0] else { panic!() };
        assert_eq!((c.org.as_deref(), c.ip.as_deref(), c.count), (Some("A81001"), None, 3));
        assert_eq!(c.reasons["no_route"], 3);
        let r = Refusals::default();
        for _ in 0..3 {
            r.admit(who.clone(), "not_allowed", budget);
        }
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        let (closed, empty) = r.sweep(false, budget);
        assert_eq!((count(&closed), empty), (1, false));
        assert_eq!(r.tracked(), 1, "an empty bucket is remembered");
        assert!(!r.admit(who, "not_allowed", budget).write);
    }
}
