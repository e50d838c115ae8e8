//! The auditor's alerts (`audit::alerts`), from an index built from generated trail files: bulk
//! access against an organisation's own history, refusal and TLS-rejection spikes, a broken
//! trail, an overdue checkpoint, break-glass uses; and each alert counted once in `/metrics`.

mod support;

use std::path::Path;

use caregate::audit::alerts::{evaluate, Alert, AlertKind, AlertSettings};
use caregate::audit::index::{self, SqliteStore};
use caregate::metrics::{Metrics, RaisedAlerts};
use support::metric;
use support::trail_gen::{nhs_number, Gen, Req};

const HOUR: u64 = 3_600_000_000;
const DAYS_28: u64 = 28 * 24;

/// Unix µs of the generator's clock (µs after 2026-11-22T00:00:00Z).
fn unix_us(clock_us: u64) -> i64 {
    time::macros::datetime!(2026-11-22 0:00 UTC).unix_timestamp() * 1_000_000 + clock_us as i64
}

/// One request: its access (naming `nhs`, refused for `deny`) and its completion.
fn request(g: &mut Gen, org: &str, nhs: Option<&str>, deny: Option<&str>, break_glass: Option<&str>) {
    let id = format!("r{}", g.seq() + 1);
    g.access(&Req {
        id: &id,
        org,
        method: "GET",
        path: "/fhir/Patient",
        route: "epr-fhir",
        nhs,
        deny,
        break_glass,
        ..Req::default()
    });
    g.complete(&id, if deny.is_some() { 403 } else { 200 }, "ok");
}

/// Indexes the trail in `dir` (to its end, or to a break in its chain).
fn index(dir: &Path) -> SqliteStore {
    let mut store = index::open(&dir.join("index.db")).unwrap();
    let _ = index::build(dir, &mut store);
    store
}

fn of_kind(alerts: &[Alert], kind: AlertKind) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.kind == kind).collect()
}

fn evidence<'a>(a: &'a Alert, name: &str) -> &'a str {
    a.evidence
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {a:?}"))
}

/// 28 days of hourly traffic for each (org, patients every hour, patients in the last hour),
/// then that last hour: answers the clock at its end.
fn history_then_last_hour(g: &mut Gen, orgs: &[(&str, u32, u32)]) -> u64 {
    let patients: Vec<String> = (0..1000).map(nhs_number).collect();
    for hour in 0..=DAYS_28 {
        g.clock_us = hour * HOUR + 60_000_000;
        for (org, usual, last) in orgs {
            let n = if hour == DAYS_28 { *last } else { *usual };
            for j in 0..n {
                let p = &patients[((hour as u32 * n + j) % 1000) as usize];
                request(g, org, Some(p), None, None);
            }
        }
    }
    g.clock_us
}

#[test]
fn bulk_access_is_an_hour_over_three_times_the_orgs_own_p99_and_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50_000);
    let end = history_then_last_hour(
        &mut g,
        &[
            ("A81001", 5, 200), // bulk: 200 > max(3 × 5, 50)
            ("A81002", 5, 40),  // 8 times its usual, but under the floor
            ("RXC", 20, 55),    // over the floor, but under 3 × its usual 20
        ],
    );
    g.finish(false);
    let store = index(dir.path());
    let alerts = evaluate(&store, unix_us(end), &AlertSettings::default()).unwrap();
    let bulk = of_kind(&alerts, AlertKind::BulkAccess);
    assert_eq!(bulk.len(), 1, "{alerts:#?}");
    let a = bulk[0];
    assert_eq!(a.subject, "A81001");
    assert_eq!(a.at, unix_us(DAYS_28 * HOUR));
    assert_eq!(evidence(a, "distinct_patients"), "200");
    assert_eq!(evidence(a, "hourly_p99"), "5");
    assert_eq!(evidence(a, "floor"), "50");
    assert_eq!(evidence(a, "history_hours"), "672");
    assert!(!a.summary.contains("999"), "no patient in {}", a.summary);

    // A lower floor makes A81002's hour an alert too; RXC stays within its own history.
    let low = AlertSettings {
        bulk_floor: 10,
        ..AlertSettings::default()
    };
    let alerts = evaluate(&store, unix_us(end), &low).unwrap();
    let subjects: Vec<&str> = of_kind(&alerts, AlertKind::BulkAccess)
        .iter()
        .map(|a| a.subject.as_str())
        .collect();
    assert_eq!(subjects, ["A81001", "A81002"]);
}

#[test]
fn refusal_and_tls_rejection_spikes_in_one_hour() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50_000);
    g.clock_us = 10 * HOUR;
    for _ in 0..120 {
        request(&mut g, "B99999", Some("9990000018"), Some("not_allowed"), None);
    }
    // 99 refusals: one short of the threshold.
    for _ in 0..99 {
        request(&mut g, "A81002", None, Some("rate_limited"), None);
    }
    for _ in 0..150 {
        g.tls_rejected();
    }
    // Just after the last record: windows end before `now`.
    let end = g.clock_us + 1;
    g.finish(false);
    let store = index(dir.path());
    let alerts = evaluate(&store, unix_us(end), &AlertSettings::default()).unwrap();
    let refusals = of_kind(&alerts, AlertKind::RefusalSpike);
    assert_eq!(refusals.len(), 1, "{alerts:#?}");
    assert_eq!(refusals[0].subject, "B99999");
    assert_eq!(evidence(refusals[0], "count"), "120");
    assert_eq!(refusals[0].at, unix_us(10 * HOUR));
    let tls = of_kind(&alerts, AlertKind::TlsRejectionSpike);
    assert_eq!(tls.len(), 1, "{alerts:#?}");
    assert_eq!(tls[0].subject, "10.9.9.9");
    assert_eq!(evidence(tls[0], "count"), "150");
}

#[test]
fn a_tampered_trail_is_trail_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50_000);
    for _ in 0..10 {
        request(&mut g, "A81001", Some("9990000018"), None, None);
    }
    let end = g.clock_us;
    g.finish(false);
    let intact = index(dir.path());
    let alerts = evaluate(&intact, unix_us(end), &AlertSettings::default()).unwrap();
    assert!(of_kind(&alerts, AlertKind::TrailBroken).is_empty(), "{alerts:#?}");

    // The 7th record says another organisation read the record: its hash no longer chains.
    let tampered = tempfile::tempdir().unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 6 {
                l.replacen("A81001", "A81002", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(tampered.path().join(file.file_name().unwrap()), lines.join("\n") + "\n").unwrap();
    let store = index(tampered.path());
    let alerts = evaluate(&store, unix_us(end), &AlertSettings::default()).unwrap();
    let broken = of_kind(&alerts, AlertKind::TrailBroken);
    assert_eq!(broken.len(), 1, "{alerts:#?}");
    assert_eq!(evidence(broken[0], "seq"), "7");
    assert_eq!(evidence(broken[0], "last_good_seq"), "6");

    // A record taken out (a gap in seq) is a break too.
    let cut = tempfile::tempdir().unwrap();
    let without: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(cut.path().join(file.file_name().unwrap()), without.join("\n") + "\n").unwrap();
    let store = index(cut.path());
    let alerts = evaluate(&store, unix_us(end), &AlertSettings::default()).unwrap();
    assert_eq!(of_kind(&alerts, AlertKind::TrailBroken).len(), 1, "{alerts:#?}");
}

#[test]
fn a_checkpoint_past_its_due_time_and_grace_is_overdue() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50_000);
    request(&mut g, "A81001", Some("9990000018"), None, None);
    let due = g.clock_us + 60_000_000;
    g.checkpoint_due(due);
    request(&mut g, "A81001", Some("9990000026"), None, None);
    g.finish(false);
    let store = index(dir.path());
    let settings = AlertSettings::default(); // grace 5 minutes
    let at = |after_due_s: u64| evaluate(&store, unix_us(due + after_due_s * 1_000_000), &settings).unwrap();
    assert!(of_kind(&at(60), AlertKind::CheckpointOverdue).is_empty());
    let alerts = at(600);
    let overdue = of_kind(&alerts, AlertKind::CheckpointOverdue);
    assert_eq!(overdue.len(), 1, "{alerts:#?}");
    assert_eq!(overdue[0].at, unix_us(due));
    assert_eq!(evidence(overdue[0], "last_checkpoint_seq"), "3");
}

#[test]
fn every_break_glass_use_is_an_alert_without_its_reason_and_each_alert_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50_000);
    request(&mut g, "A81001", Some("9990000018"), None, None);
    let reason = "Unconscious patient 9990000026 in ED resus";
    request(&mut g, "RYR", Some("9990000026"), None, Some(reason));
    let end = g.clock_us;
    g.finish(false);
    let store = index(dir.path());
    let alerts = evaluate(&store, unix_us(end), &AlertSettings::default()).unwrap();
    let glass = of_kind(&alerts, AlertKind::BreakGlass);
    assert_eq!(glass.len(), 1, "{alerts:#?}");
    assert_eq!(glass[0].subject, "RYR");
    assert_eq!(evidence(glass[0], "request_id"), "r3");
    assert_eq!(evidence(glass[0], "seq"), "3");
    let shown = format!("{glass:?}");
    assert!(
        !shown.contains("9990000026") && !shown.contains("Unconscious"),
        "{shown}"
    );

    // Evaluated again and again, an alert is counted (and logged) once.
    let metrics = Metrics::default();
    let mut raised = RaisedAlerts::default();
    assert_eq!(raised.raise(&metrics, &alerts).len(), 1);
    let again = evaluate(&store, unix_us(end) + 1_000_000, &AlertSettings::default()).unwrap();
    assert!(raised.raise(&metrics, &again).is_empty());
    let text = metrics.encode();
    assert_eq!(
        metric(&text, "caregate_alerts_total", &["kind=\"break_glass\""]),
        Some(1.0),
        "{text}"
    );
}
