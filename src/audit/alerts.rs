//! The auditor's alerts, computed from the index: what an IG officer should look at today.
//!
//! - **Bulk access**: an organisation naming more distinct patients in an hour than its own
//!   history makes normal: over `bulk_multiplier` × its hourly 99th percentile across `history`
//!   (hours without traffic count as 0), and over `bulk_floor`.
//! - **Refusal spike**: an organisation (or, without one, an address) refused `refusal_spike`
//!   times or more in an hour; **TLS rejection spike**: an address refused at the handshake
//!   `tls_rejection_spike` times or more in an hour.
//! - **Trail broken**: the index stopped at a break in the chain (a gap, a changed record).
//! - **Checkpoint overdue**: the last checkpoint's `next_due` passed `checkpoint_grace` ago.
//! - **Break-glass**: every use, for review.
//!
//! [`evaluate`] is a pure read of the index: it answers every alert in the `lookback` window,
//! each time it runs. Whoever runs it keeps what was already raised
//! (`metrics::RaisedAlerts`), so each alert is counted and logged once. Alerts are logged, so
//! nothing in them names a patient: subjects are organisations and addresses, evidence is counts,
//! seqs and request ids (a break-glass reason stays in its record).

use super::index::{Count, IndexError, IndexStore, Micros};
pub use crate::config::AlertSettings;
use std::collections::BTreeMap;

const HOUR: Micros = 3_600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    BulkAccess,
    RefusalSpike,
    TlsRejectionSpike,
    TrailBroken,
    CheckpointOverdue,
    BreakGlass,
}

impl AlertKind {
    /// The kind as metrics label it and pages show it (`bulk_access`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BulkAccess => "bulk_access",
            AlertKind::RefusalSpike => "refusal_spike",
            AlertKind::TlsRejectionSpike => "tls_rejection_spike",
            AlertKind::TrailBroken => "trail_broken",
            AlertKind::CheckpointOverdue => "checkpoint_overdue",
            AlertKind::BreakGlass => "break_glass",
        }
    }
}

/// Something for an auditor to look at, with the figures that raised it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// Who: an organisation's code, a client address, or `trail`.
    pub subject: String,
    /// When (unix µs): the hour's first instant, the record's time, the checkpoint's due time.
    pub at: Micros,
    /// One sentence, no patient identifiers.
    pub summary: String,
    /// The figures, by name: distinct patients this hour, p99, floor, seq of records, …
    pub evidence: Vec<(String, String)>,
}

impl Alert {
    /// What makes this alert the same one on the next evaluation: kind, subject and time.
    pub fn key(&self) -> (AlertKind, &str, Micros) {
        (self.kind, &self.subject, self.at)
    }

    fn new(kind: AlertKind, subject: &str, at: Micros, summary: String, evidence: &[(&str, String)]) -> Alert {
        Alert {
            kind,
            subject: subject.to_string(),
            at,
            summary,
            evidence: evidence.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }
}

/// Every alert the index shows for the `lookback` window before `now_us`, by kind, then time.
pub fn evaluate(index: &dyn IndexStore, now_us: Micros, settings: &AlertSettings) -> anyhow::Result<Vec<Alert>> {
    let since = now_us - micros(settings.lookback);
    let mut alerts = bulk_access(index, since, now_us, settings)?;
    alerts.extend(spikes(
        index.refusals_per_hour(since, now_us)?,
        AlertKind::RefusalSpike,
        settings.refusal_spike,
        "refused requests",
    ));
    alerts.extend(spikes(
        index.tls_rejections_per_hour(since, now_us)?,
        AlertKind::TlsRejectionSpike,
        settings.tls_rejection_spike,
        "refused TLS handshakes",
    ));
    alerts.extend(trail(index, now_us, settings)?);
    alerts.extend(break_glass(index, since, now_us)?);
    alerts.sort_by(|a, b| (a.kind, a.at, &a.subject).cmp(&(b.kind, b.at, &b.subject)));
    Ok(alerts)
}

fn micros(d: std::time::Duration) -> Micros {
    Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
}

/// Each organisation's hours in the window against the `history` before each of them. Only
/// organisations with an hour over the floor have their history read (through the index's
/// `(org, time)` order): most have none, and 28 days of every organisation is the costly part.
fn bulk_access(
    index: &dyn IndexStore,
    since: Micros,
    until: Micros,
    s: &AlertSettings,
) -> Result<Vec<Alert>, IndexError> {
    let history = micros(s.history);
    let first_hour = since.div_euclid(HOUR) * HOUR;
    let mut candidates: BTreeMap<String, Vec<(Micros, u64)>> = BTreeMap::new();
    for h in index.patients_per_hour(None, first_hour, until)? {
        if h.patients > s.bulk_floor {
            candidates.entry(h.org).or_default().push((h.hour, h.patients));
        }
    }
    let mut alerts = Vec::new();
    for (org, busy) in &candidates {
        let hours: Vec<(Micros, u64)> = index
            .patients_per_hour(Some(org), first_hour - history, until)?
            .into_iter()
            .map(|h| (h.hour, h.patients))
            .collect();
        for &(hour, patients) in busy {
            let before: Vec<u64> = hours
                .iter()
                .filter(|(h, _)| *h >= hour - history && *h < hour)
                .map(|(_, p)| *p)
                .collect();
            let p99 = p99(&before, (history / HOUR).max(1) as usize);
            let threshold = (s.bulk_multiplier * p99 as f64).max(s.bulk_floor as f64);
            if patients as f64 <= threshold {
                continue;
            }
            alerts.push(Alert::new(
                AlertKind::BulkAccess,
                org,
                hour,
                format!(
                    "{org} named {patients} distinct patients in one hour, over {} times its usual hourly peak ({p99}) and the floor of {}",
                    s.bulk_multiplier, s.bulk_floor
                ),
                &[
                    ("distinct_patients", patients.to_string()),
                    ("hourly_p99", p99.to_string()),
                    ("multiplier", s.bulk_multiplier.to_string()),
                    ("floor", s.bulk_floor.to_string()),
                    ("threshold", threshold.to_string()),
                    ("history_hours", (history / HOUR).to_string()),
                    ("active_hours_in_history", before.len().to_string()),
                ],
            ));
        }
    }
    Ok(alerts)
}

/// The 99th percentile (nearest rank) of `hours` hourly figures of which `active` are the
/// non-zero ones: the rest of the hours count as 0.
fn p99(active: &[u64], hours: usize) -> u64 {
    let hours = hours.max(active.len());
    let mut sorted = active.to_vec();
    sorted.sort_unstable();
    // Nearest rank: the smallest value with at least 99 % of the hours at or below it.
    let rank = (hours * 99).div_ceil(100);
    let zeros = hours - sorted.len();
    if rank <= zeros {
        0
    } else {
        sorted[rank - zeros - 1]
    }
}

/// Subjects over `threshold` in an hour.
fn spikes(per_hour: Vec<Count>, kind: AlertKind, threshold: u64, what: &str) -> Vec<Alert> {
    per_hour
        .into_iter()
        .filter(|c| c.count >= threshold)
        .map(|c| {
            let hour = c.sub.as_deref().and_then(|h| h.parse().ok()).unwrap_or(0);
            Alert::new(
                kind,
                &c.key,
                hour,
                format!(
                    "{} {} from {} in one hour (threshold {threshold})",
                    c.count, what, c.key
                ),
                &[("count", c.count.to_string()), ("threshold", threshold.to_string())],
            )
        })
        .collect()
}

/// A break in the chain where indexing stopped, and a checkpoint past its due time.
fn trail(index: &dyn IndexStore, now: Micros, s: &AlertSettings) -> Result<Vec<Alert>, IndexError> {
    let health = index.health()?;
    let mut alerts = Vec::new();
    if let Some(p) = &health.position {
        if let Some(b) = &p.broken {
            alerts.push(Alert::new(
                AlertKind::TrailBroken,
                "trail",
                p.last_time,
                format!(
                    "the audit trail's chain breaks at seq {}: indexing stopped there; run audit verify",
                    b.seq
                ),
                &[
                    ("seq", b.seq.to_string()),
                    ("file", b.file.clone()),
                    ("line", b.line.to_string()),
                    ("problem", b.message.clone()),
                    ("last_good_seq", p.last_seq.to_string()),
                ],
            ));
        }
    }
    if let Some((seq, time, Some(due))) = health.last_checkpoint {
        if now > due + micros(s.checkpoint_grace) {
            alerts.push(Alert::new(
                AlertKind::CheckpointOverdue,
                "trail",
                due,
                format!(
                    "no checkpoint since seq {seq}: the next was due {} minutes ago (a stopped gateway, a lagging index, or a trail cut short)",
                    (now - due) / 60_000_000
                ),
                &[
                    ("last_checkpoint_seq", seq.to_string()),
                    ("last_checkpoint_time", time.to_string()),
                    ("next_due", due.to_string()),
                    ("grace_seconds", s.checkpoint_grace.as_secs().to_string()),
                ],
            ));
        }
    }
    Ok(alerts)
}

/// Every break-glass use in the window.
fn break_glass(index: &dyn IndexStore, since: Micros, until: Micros) -> anyhow::Result<Vec<Alert>> {
    let mut search = super::index::Search {
        break_glass: true,
        ..Default::default()
    };
    search.filters.since = Some(time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(since) * 1000,
    )?);
    search.filters.until = Some(time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(until) * 1000,
    )?);
    let rows = index.search(&search)?;
    Ok(rows
        .iter()
        .map(|r| {
            let org = r.org.as_deref().unwrap_or("");
            let route = r.route.as_deref().unwrap_or("");
            Alert::new(
                AlertKind::BreakGlass,
                org,
                r.time,
                format!(
                    "{org} used break-glass on {route} (request {}): review the reason in its access record",
                    r.request_id
                ),
                &[
                    ("seq", r.seq.to_string()),
                    ("request_id", r.request_id.clone()),
                    ("route", route.to_string()),
                    ("rule", r.rule.clone().unwrap_or_default()),
                    (
                        "status",
                        r.complete.as_ref().map(|c| c.status.to_string()).unwrap_or_default(),
                    ),
                ],
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_counts_quiet_hours_as_zero() {
        assert_eq!(p99(&[], 672), 0);
        // 6 busy hours of 672: the 666th-smallest hour is still a quiet one.
        assert_eq!(p99(&[10; 6], 672), 0);
        assert_eq!(p99(&[10; 7], 672), 10);
        let mut hours: Vec<u64> = (1..=100).collect();
        hours.reverse();
        assert_eq!(p99(&hours, 100), 99);
    }
}
