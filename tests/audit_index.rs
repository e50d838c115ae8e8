//! The audit index (`audit index`, `audit query --db`): built from real trail files (generated
//! independently of the gateway's writer, and a live gateway's own), checked against them, and
//! answering as `audit query` answers from the folder.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use caregate::audit::index::{self, IndexError, IndexStore, Search};
use caregate::audit::query::{Decision, Filters, Format};
use serde_json::Value;
use support::clinical_trail;
use support::trail::query_rows;
use support::trail_gen::{Gen, Req};
use support::{Gw, TestPki, Upstream};

/// `audit query --db --format json`'s rows.
fn db_rows(dir: &Path, db: &Path, filters: &Filters) -> Vec<Value> {
    let mut out = Vec::new();
    index::query::query(dir, db, filters, Format::Json, &mut out).expect("query --db");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rows by seq: the folder gives them in completion order, the index in access order.
fn by_seq(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r["seq"].as_u64());
    rows
}

#[test]
fn index_answers_every_filter_as_the_trail_does() {
    let dir = tempfile::tempdir().unwrap();
    // Several patients per request, DICOM studies, colliding client ids, a crash and restart,
    // files of 16 records (rotation) and checkpoints.
    clinical_trail::clinic_day(dir.path());
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 2, "the trail rotates");
    let db = dir.path().join("index.db");
    let mut store = index::open(&db).unwrap();
    let report = index::build(dir.path(), &mut store).unwrap();
    let records = support::audit_records(dir.path()).len() as u64;
    assert_eq!((report.records, report.last_seq), (records, records));

    let mrn = format!("{}|MRN123", clinical_trail::MRN);
    let filters = [
        Filters {
            patient: Some("999 000 0042".into()),
            ..Filters::default()
        },
        Filters {
            patient: Some("9990000034".into()),
            ..Filters::default()
        },
        Filters {
            patient: Some(mrn),
            ..Filters::default()
        },
        Filters {
            patient: Some("MRN123".into()),
            ..Filters::default()
        },
        Filters {
            patient: Some("https://other.example/Id/mrn|MRN123".into()),
            ..Filters::default()
        },
        Filters {
            patient: Some("PAT-77".into()),
            ..Filters::default()
        },
        Filters {
            study: Some(clinical_trail::STUDY_B.into()),
            ..Filters::default()
        },
        Filters {
            org: Some("RX1".into()),
            ..Filters::default()
        },
        Filters {
            decision: Some(Decision::Deny),
            ..Filters::default()
        },
        Filters {
            client_request_id: Some("dup".into()),
            ..Filters::default()
        },
        Filters {
            route: Some("pacs".into()),
            request_id: Some("qido".into()),
            ..Filters::default()
        },
        Filters::default(),
    ];
    for f in &filters {
        let from_trail = by_seq(query_rows(dir.path(), f));
        let from_index = db_rows(dir.path(), &db, f);
        assert_eq!(from_index, from_trail, "{f:?}");
    }
    assert_eq!(db_rows(dir.path(), &db, &filters[0]).len(), 5);

    // The console's searches: newest first, a limit, and the patients each row names.
    let rows = store
        .search(&Search {
            filters: filters[0].clone(),
            newest_first: true,
            limit: Some(2),
            ..Search::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].seq > rows[1].seq);
    assert!(rows.iter().all(|r| r.nhs_numbers.iter().any(|n| n == "9990000042")));
    assert!(index::check(dir.path(), &store).is_ok());
}

#[test]
fn query_and_export_db_print_every_format_as_the_folder_does() {
    let dir = tempfile::tempdir().unwrap();
    clinical_trail::clinic_day(dir.path());
    let db = dir.path().join("index.db");
    index::build(dir.path(), &mut index::open(&db).unwrap()).unwrap();
    let f = Filters {
        patient: Some("9990000034".into()),
        ..Filters::default()
    };
    for format in [Format::Csv, Format::Table] {
        let mut plain = Vec::new();
        caregate::audit::query::query(dir.path(), &f, format, &mut plain).unwrap();
        let mut indexed = Vec::new();
        index::query::query(dir.path(), &db, &f, format, &mut indexed).unwrap();
        let lines = |b: &[u8]| {
            let mut l: Vec<String> = String::from_utf8_lossy(b).lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        assert_eq!(lines(&indexed), lines(&plain), "{format:?}");
    }
    // And the FHIR AuditEvents of `audit export --db`, ids (the records' hashes) included.
    let mut plain = Vec::new();
    caregate::audit::export::export_fhir(dir.path(), &f, &mut plain).unwrap();
    let mut indexed = Vec::new();
    index::query::export(dir.path(), &db, &f, &mut indexed).unwrap();
    let events = |b: &[u8]| {
        let mut v: Vec<Value> = std::str::from_utf8(b)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        v.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        v
    };
    let (plain, indexed) = (events(&plain), events(&indexed));
    assert!(!plain.is_empty());
    assert_eq!(indexed, plain);
}

/// Requests in the steady mix, each naming two patients.
fn requests(g: &mut Gen<'_>, from: u64, n: u64) {
    for i in from..from + n {
        let id = format!("req-{i}");
        let nhs = if i % 2 == 0 { "9990000018" } else { "9990000026" };
        g.access(&Req {
            id: &id,
            org: if i % 3 == 0 { "RX1" } else { "A81001" },
            method: "GET",
            path: &format!("/fhir/Patient/{nhs}"),
            route: "epr-fhir",
            deny: (i % 5 == 0).then_some("not_allowed"),
            nhs: Some(nhs),
            ..Req::default()
        });
        g.complete(&id, if i % 5 == 0 { 403 } else { 200 }, "ok");
    }
}

#[test]
fn index_resumes_where_it_stopped_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let key = support::trail_gen::new_key();
    let mut g = Gen::new(dir.path(), Some((&key, support::trail_gen::key_id(&key))), 50);
    g.checkpoint_every = 30;
    g.lifecycle("start");
    requests(&mut g, 0, 40);
    // A request whose completion comes only after the first run.
    g.access(&Req {
        id: "slow",
        org: "A81001",
        method: "GET",
        path: "/fhir/Patient/9990000018",
        route: "epr-fhir",
        nhs: Some("9990000018"),
        ..Req::default()
    });
    g.flush();
    let db = dir.path().join("index.db");
    let mut store = index::open(&db).unwrap();
    let first = index::build(dir.path(), &mut store).unwrap();
    assert_eq!(first.last_seq, g.seq());
    drop(store);

    g.complete("slow", 200, "ok");
    requests(&mut g, 40, 40);
    g.finish(true);
    let mut store = index::open(&db).unwrap();
    let second = index::build(dir.path(), &mut store).unwrap();
    let total = support::audit_records(dir.path()).len() as u64;
    assert_eq!(first.records + second.records, total);
    assert_eq!(store.record_count().unwrap(), total);
    // Nothing new: nothing indexed twice.
    assert_eq!(index::build(dir.path(), &mut store).unwrap().records, 0);
    let slow = store
        .search(&Search {
            filters: Filters {
                request_id: Some("slow".into()),
                ..Filters::default()
            },
            ..Search::default()
        })
        .unwrap();
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].complete.as_ref().map(|c| c.status), Some(200));
    index::check(dir.path(), &store).unwrap();
}

/// A trail of 200 records over files of 50, indexed, with its lines as written.
fn indexed_trail(dir: &Path) -> (std::path::PathBuf, index::SqliteStore) {
    let mut g = Gen::new(dir, None, 50);
    g.lifecycle("start");
    requests(&mut g, 0, 100);
    g.finish(false);
    let db = dir.join("index.db");
    let mut store = index::open(&db).unwrap();
    index::build(dir, &mut store).unwrap();
    (db, store)
}

#[test]
fn a_tampered_trail_line_stops_indexing_there_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gen::new(dir.path(), None, 50);
    g.lifecycle("start");
    requests(&mut g, 0, 100);
    g.finish(false);
    // Record 78 (an access, in the second file) names another path, its hash left as it was.
    let file = dir.path().join("audit-000000000051.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().nth(27).unwrap();
    assert!(line.starts_with("{\"seq\":78,"));
    let forged = line.replacen("/fhir/Patient/", "/fhir/Patiens/", 1);
    assert_ne!(forged, line);
    std::fs::write(&file, text.replacen(line, &forged, 1)).unwrap();

    let mut store = index::open(&dir.path().join("index.db")).unwrap();
    let err = index::build(dir.path(), &mut store).unwrap_err();
    let IndexError::Broken(broken) = &err else {
        panic!("expected a break, got {err:?}");
    };
    assert_eq!(
        (broken.seq, broken.file.as_str(), broken.line),
        (78, "audit-000000000051.jsonl", 28)
    );
    assert!(broken.message.contains("altered"), "{}", broken.message);
    assert_eq!(err.exit_code(), 1);
    // Everything before it is indexed; nothing after; the break is kept for the console.
    let health = store.health().unwrap();
    let position = health.position.unwrap();
    assert_eq!(position.last_seq, 77);
    assert_eq!(position.broken.as_ref().map(|b| b.seq), Some(78));
    assert_eq!(store.record_count().unwrap(), 77);
    // Run again: still stopped there, never skipped.
    assert!(matches!(index::build(dir.path(), &mut store), Err(IndexError::Broken(b)) if b.seq == 78));
    assert_eq!(store.record_count().unwrap(), 77);
}

#[test]
fn a_row_changed_in_the_database_is_caught_by_check() {
    let tampering = [
        "UPDATE requests SET org = 'RX1' WHERE seq = 42",
        "UPDATE requests SET status = 200 WHERE seq = 2",
        "UPDATE requests SET hash = zeroblob(32) WHERE seq = 100",
        "DELETE FROM requests WHERE seq = 120",
        "DELETE FROM patients WHERE seq = 10",
        "UPDATE patients SET value = '9990000034' WHERE seq = 12",
        "INSERT INTO events (seq, hash, time, file, offset, event) VALUES (1000, zeroblob(32), 0, 1, 0, 'lifecycle')",
        "UPDATE events SET action = 'reload' WHERE seq = 1",
    ];
    for sql in tampering {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = indexed_trail(dir.path());
        index::check(dir.path(), &store).expect("an untouched index matches");
        assert_eq!(store.connection().execute(sql, []).unwrap(), 1, "{sql}");
        let err = index::check(dir.path(), &store).expect_err(sql);
        assert!(matches!(err, IndexError::Differs(_)), "{sql}: {err}");
        assert_eq!(err.exit_code(), 1);
    }
}

#[test]
fn audit_index_command_builds_checks_and_answers_query() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = indexed_trail(dir.path());
    drop(store);
    std::fs::remove_file(&db).unwrap();
    let db = db.to_str().unwrap();
    let trail = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caregate"))
            .args(args)
            .output()
            .expect("run caregate");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&["audit", "index", trail, "--db", db, "--once"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("indexed 201 records"), "{out}");
    let (code, out) = run(&["audit", "index", trail, "--db", db, "--check"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&[
        "audit",
        "query",
        trail,
        "--db",
        db,
        "--patient",
        "9990000026",
        "--format",
        "csv",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1 + 50);
    let conn = index::open(Path::new(db)).unwrap();
    conn.connection()
        .execute("UPDATE requests SET path = '/elsewhere' WHERE seq = 4", [])
        .unwrap();
    let (code, _) = run(&["audit", "index", trail, "--db", db, "--check"]);
    assert_eq!(code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_keeps_up_with_a_live_gateway_across_rotation() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let config = pki
        .config()
        .standard([up.url()])
        .set("audit", "rotate_bytes = \"4KiB\"");
    let mut gw = Gw::start(&pki, config).await;
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("index.db");
    let stop = index::Stop::new();
    let follower = index::spawn_follower(gw.audit_dir.clone(), db.clone(), stop.clone()).unwrap();
    let gp = pki.client("A81001");
    let patients = ["9990000018", "9990000026"];
    let mut ids = Vec::new();
    for i in 0..20 {
        let a = gw.get(&gp, &format!("/fhir/Patient/{}", patients[i % 2])).await;
        assert_eq!(a.status, 200);
        ids.push(a.request_id().to_string());
    }
    // Poll the index (its own connection, as the console has) until every request is there,
    // completed.
    let reader = index::open(&db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let indexed = loop {
        let rows = reader
            .search(&Search {
                filters: Filters {
                    patient: Some("9990000026".into()),
                    ..Filters::default()
                },
                ..Search::default()
            })
            .unwrap();
        if rows.len() == 10 && rows.iter().all(|r| r.complete.is_some()) {
            break rows;
        }
        assert!(Instant::now() < deadline, "indexed only {} of 10", rows.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(indexed.iter().all(|r| ids.contains(&r.request_id)));
    gw.stop().await;
    let files = std::fs::read_dir(&gw.audit_dir).unwrap().count();
    assert!(files > 1, "the trail rotated ({files} files)");
    // The stop's records too, then the follower stops when told.
    let last = support::audit_records(&gw.audit_dir).len() as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.position().unwrap().map(|p| p.last_seq) != Some(last) {
        assert!(Instant::now() < deadline, "the follower did not reach seq {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.stop();
    let report = follower.join().unwrap().unwrap();
    assert_eq!(report.last_seq, last);
    index::check(&gw.audit_dir, &reader).unwrap();
}
