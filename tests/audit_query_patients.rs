//! `audit query` with the records of SPEC §8: several patients and studies per request, client
//! request ids that collide (never a join key), GP Connect tokens; and the outputs that show them.

mod support;

use std::path::Path;

use caregate::audit::query::{self, Filters, Format};
use serde_json::Value;
use support::clinical_trail;
use support::trail::{query_rows, row_ids};
use support::trail_gen::{self, Gen};

#[test]
fn query_patient_named_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    clinical_trail::clinic_day(dir.path());
    let q = |patient: &str| {
        let f = Filters {
            patient: Some(patient.into()),
            ..Filters::default()
        };
        query_rows(dir.path(), &f)
    };
    // obs-search and obs-create name 9990000042 second, in `nhs_numbers` only (rows come out
    // in completion order).
    let rows = q("999 000 0042");
    assert_eq!(
        row_ids(&rows),
        ["pat-read", "obs-search", "obs-create", "spine-read", "crashed"]
    );
    assert_eq!(rows[1]["clinical"]["nhs_number"], "9990000034");
    // The first format (`nhs_number` alone) still matches.
    assert!(row_ids(&q("9990000034")).contains(&"legacy"));
    // Other patient ids: whole (`system|value`), by value, or a plain id (a DICOM PatientID).
    let mrn = format!("{}|MRN123", clinical_trail::MRN);
    assert_eq!(row_ids(&q(&mrn)), ["obs-search"]);
    assert_eq!(row_ids(&q("MRN123")), ["obs-search"]);
    assert_eq!(row_ids(&q("PAT-77")), ["qido", "stow"]);
    assert!(q("https://other.example/Id/mrn|MRN123").is_empty());
    assert!(q("MRN12").is_empty());
    // A study named anywhere: `study_uid` or any of `study_uids`.
    let study = |uid: &str| {
        let f = Filters {
            study: Some(uid.into()),
            ..Filters::default()
        };
        query_rows(dir.path(), &f)
    };
    assert_eq!(row_ids(&study(clinical_trail::STUDY_A)), ["qido", "wado"]);
    assert_eq!(row_ids(&study(clinical_trail::STUDY_B)), ["qido", "stow"]);
}

#[test]
fn query_client_request_ids_never_join() {
    let dir = tempfile::tempdir().unwrap();
    clinical_trail::clinic_day(dir.path());
    let f = Filters {
        client_request_id: Some("dup".into()),
        ..Filters::default()
    };
    // Two requests sent the same X-Request-Id: two rows, each with its own completion.
    let rows = query_rows(dir.path(), &f);
    assert_eq!(row_ids(&rows), ["pat-read", "obs-search"]);
    assert!(rows
        .iter()
        .all(|r| r["client_request_id"] == "dup" && r["complete"]["status"] == 200));
    // A client id that is another request's own id joins nothing: the join is by request_id.
    let key = trail_gen::new_key();
    let other = tempfile::tempdir().unwrap();
    let mut g = Gen::new(other.path(), Some((&key, trail_gen::key_id(&key))), 100);
    clinical_trail::access(&mut g, "a", serde_json::json!({ "client_request_id": "b" }));
    clinical_trail::access(&mut g, "b", serde_json::json!({ "client_request_id": "a" }));
    clinical_trail::complete(&mut g, "b", 404, "ok");
    clinical_trail::complete(&mut g, "a", 200, "ok");
    g.finish(true);
    let rows = query_rows(other.path(), &Filters::default());
    assert_eq!(row_ids(&rows), ["b", "a"]);
    assert_eq!(
        (&rows[0]["complete"]["status"], &rows[1]["complete"]["status"]),
        (&404.into(), &200.into())
    );
    let f = Filters {
        client_request_id: Some("a".into()),
        ..Filters::default()
    };
    assert_eq!(row_ids(&query_rows(other.path(), &f)), ["b"]);
}

#[test]
fn query_outputs_show_every_patient() {
    let dir = tempfile::tempdir().unwrap();
    clinical_trail::clinic_day(dir.path());
    let f = Filters {
        request_id: Some("obs-search".into()),
        ..Filters::default()
    };
    let run = |format| {
        let mut out = Vec::new();
        query::query(dir.path(), &f, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let mrn = format!("{}|MRN123", clinical_trail::MRN);

    // CSV: the first-format columns keep their places and values; the lists come after.
    let csv = run(Format::Csv);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let row = csv_fields(lines[1]);
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()].as_str();
    assert_eq!(header.iter().position(|h| *h == "nhs_number"), Some(21));
    assert_eq!(col("nhs_number"), "9990000034");
    assert_eq!(col("nhs_numbers"), "9990000034;9990000042");
    assert_eq!(col("patient_ids"), mrn);
    assert_eq!(col("client_request_id"), "dup");
    let gpc = run_csv_row(dir.path(), "gpc-1");
    assert!(gpc.contains("https://fhir.nhs.uk/Id/sds-user-id|G13579135"), "{gpc}");
    assert!(gpc.ends_with(",true"), "{gpc}");
    let qido = run_csv_row(dir.path(), "qido");
    let studies = format!("{};{}", clinical_trail::STUDY_A, clinical_trail::STUDY_B);
    assert!(qido.contains(&format!(",{studies},")), "{qido}");

    // Table: every patient and study, and the client's id.
    let table = run(Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("client_request_id") && lines[0].contains("patients"),
        "{table}"
    );
    assert!(lines[1].contains(&format!("9990000034;9990000042;{mrn}")), "{table}");
    assert!(lines[1].contains(" dup "), "{table}");

    // JSON: the record's lists as written.
    let json: Value = serde_json::from_str(run(Format::Json).trim()).unwrap();
    assert_eq!(
        json["clinical"]["nhs_numbers"],
        serde_json::json!(["9990000034", "9990000042"])
    );
    assert_eq!(json["clinical"]["patient_ids"][0], mrn.as_str());
    assert_eq!(json["client_request_id"], "dup");
}

fn run_csv_row(dir: &Path, id: &str) -> String {
    let f = Filters {
        request_id: Some(id.into()),
        ..Filters::default()
    };
    let mut out = Vec::new();
    query::query(dir, &f, Format::Csv, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .split("\r\n")
        .nth(1)
        .unwrap()
        .to_string()
}

/// One RFC 4180 line's fields.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}
