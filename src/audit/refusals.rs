//! Refused handshakes, coalesced per source address (issue 19): a TCP connect-and-close costs a
//! peer nothing and used to cost the trail a `tls_rejected` record each.
//!
//! Per address, in windows of one second opened by its first refusal: the first
//! [`PER_SECOND`] refusals are written as `tls_rejected` records as before; the rest are only
//! counted, and written as one `refusals_coalesced` record {`ip`, `count`, `since`, `until`,
//! `reasons`} once the window has closed (by the next refusal from that address, or by the
//! sweeper within about a second). At most [`MAX_ADDRESSES`] addresses are tracked at once;
//! refusals from any other address are all counted under `"ip":"other"`. Memory is bounded by
//! that cap, and the trail by about `(PER_SECOND + 1)` records per address per second, and one
//! record per second for all the addresses past the cap.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{Event, RefusalsCoalesced};

/// `tls_rejected` records written per address per window.
pub const PER_SECOND: u32 = 10;
/// Addresses tracked at once; refusals from others are counted together as `other`.
pub const MAX_ADDRESSES: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Refusals {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_ip: HashMap<IpAddr, Window>,
    other: Option<Window>,
    /// A sweeper task runs (see [`Refusals::admit`]).
    sweeping: bool,
}

struct Window {
    opened: Instant,
    written: u32,
    count: u64,
    since: String,
    until: String,
    reasons: BTreeMap<&'static str, u64>,
}

impl Window {
    fn new(opened: Instant) -> Window {
        Window {
            opened,
            written: 0,
            count: 0,
            since: String::new(),
            until: String::new(),
            reasons: BTreeMap::new(),
        }
    }

    fn closed(&self, now: Instant) -> bool {
        now.duration_since(self.opened) >= WINDOW
    }

    /// The record of what was counted, if anything was.
    fn summary(self, ip: String) -> Option<Event> {
        (self.count > 0).then(|| {
            Event::RefusalsCoalesced(RefusalsCoalesced {
                org: None,
                ip: Some(ip),
                count: self.count,
                since: self.since,
                until: self.until,
                reasons: self.reasons.into_iter().map(|(r, n)| (r.to_string(), n)).collect(),
            })
        })
    }

    fn count(&mut self, reason: &'static str) {
        let now = now_rfc3339();
        if self.count == 0 {
            self.since = now.clone();
        }
        self.until = now;
        self.count += 1;
        *self.reasons.entry(reason).or_default() += 1;
    }
}

/// What to do with one refusal.
pub struct Verdict {
    /// Write its own `tls_rejected` record.
    pub write: bool,
    /// `refusals_coalesced` records of windows this refusal found closed: to append.
    pub summaries: Vec<Event>,
    /// Start a sweeper task ([`Refusals::sweep`] every second until it answers true).
    pub start_sweeper: bool,
}

impl Refusals {
    /// Counts one refusal from `ip` for `reason`.
    pub fn admit(&self, ip: IpAddr, reason: &'static str) -> Verdict {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summaries = Vec::new();
        let start_sweeper = !std::mem::replace(&mut inner.sweeping, true);
        let tracked = inner.by_ip.len();
        let (window, key) = match inner.by_ip.contains_key(&ip) || tracked < MAX_ADDRESSES {
            true => (inner.by_ip.entry(ip).or_insert_with(|| Window::new(now)), Some(ip)),
            false => (inner.other.get_or_insert_with(|| Window::new(now)), None),
        };
        if window.closed(now) {
            let old = std::mem::replace(window, Window::new(now));
            summaries.extend(old.summary(label(key)));
        }
        let write = key.is_some() && window.written < PER_SECOND;
        if write {
            window.written += 1;
        } else {
            window.count(reason);
        }
        Verdict {
            write,
            summaries,
            start_sweeper,
        }
    }

    /// Closes the windows that are over (all of them with `all`): forgets their addresses and
    /// answers their `refusals_coalesced` records, and whether nothing is left (the sweeper
    /// then stops; the next refusal starts another).
    pub fn sweep(&self, all: bool) -> (Vec<Event>, bool) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        let over: Vec<IpAddr> = inner
            .by_ip
            .iter()
            .filter(|(_, w)| all || w.closed(now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in over {
            if let Some(w) = inner.by_ip.remove(&ip) {
                out.extend(w.summary(ip.to_string()));
            }
        }
        if inner.other.as_ref().is_some_and(|w| all || w.closed(now)) {
            out.extend(inner.other.take().and_then(|w| w.summary(label(None))));
        }
        let empty = inner.by_ip.is_empty() && inner.other.is_none();
        if empty {
            inner.sweeping = false;
        }
        (out, empty)
    }

    /// Sweeps every second until nothing is left, appending what it closes to `audit`. Run by
    /// the task that [`Verdict::start_sweeper`] asks for. Dropped early (its runtime stops), it
    /// writes out what was still counted.
    pub async fn sweeper(self: std::sync::Arc<Self>, audit: super::AuditLog) {
        struct Last(std::sync::Arc<Refusals>, super::AuditLog);
        impl Drop for Last {
            fn drop(&mut self) {
                for e in self.0.sweep(true).0 {
                    self.1.append(e);
                }
            }
        }
        let last = Last(self, audit);
        loop {
            tokio::time::sleep(WINDOW).await;
            let (closed, empty) = last.0.sweep(false);
            for e in closed {
                last.1.append(e);
            }
            if empty {
                return;
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).by_ip.len()
    }
}

fn label(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "other".to_string(), |ip| ip.to_string())
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
            .map(|i| r.admit(ip, if i % 2 == 0 { "other" } else { "no_certificate" }))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| v.write).count(), PER_SECOND as usize);
        assert!(verdicts[0].start_sweeper && !verdicts[1].start_sweeper);
        assert!(verdicts.iter().all(|v| v.summaries.is_empty()));
        // Another address has a budget of its own.
        assert!(r.admit("10.0.0.2".parse().unwrap(), "other").write);
        let (none, empty) = r.sweep(false);
        assert!(none.is_empty() && !empty);
        let (all, empty) = r.sweep(true);
        assert!(empty);
        assert_eq!(all.len(), 1);
        let Event::RefusalsCoalesced(c) = &all[0] else { panic!() };
        assert_eq!((c.ip.as_deref(), c.count), (Some("10.0.0.1"), 90));
        assert_eq!((c.reasons["other"], c.reasons["no_certificate"]), (45, 45));
        assert!(c.since <= c.until);
        assert_eq!(r.tracked(), 0);
    }

    #[test]
    fn past_the_cap_addresses_are_counted_as_other() {
        let r = Refusals::default();
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let v = r.admit(ip, "other");
            assert_eq!(v.write, (i as usize) < MAX_ADDRESSES);
        }
        assert_eq!(r.tracked(), MAX_ADDRESSES);
        let (all, _) = r.sweep(true);
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
            r.admit(ip, "other");
        }
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        let v = r.admit(ip, "other");
        assert!(v.write, "a new window, a new budget");
        assert_eq!(count(&v.summaries), 3);
    }
}
