//! The auditor's commands against trails made by an independent generator
//! (tests/support/trail_gen.rs): verify catches each kind of tampering at the right record,
//! an auditor's 20-line script agrees with it, query and export return the right requests.

mod support;

use std::path::Path;

use caregate::audit::export::{self, ExportArgs};
use caregate::audit::query::{self, Decision, Filters, Format, QueryArgs};
use caregate::audit::verify::{self, Broken, VerifyArgs, VerifyError, VerifyOptions};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::Value;
use support::trail::{query_rows, row_ids};
use support::trail_gen::{self, Gen, Req};

// === fixtures ===

/// A trail of 3 files × 40 records, a checkpoint every 25 records, sealed at the end.
fn standard_trail(dir: &Path, key: &Ed25519KeyPair) {
    let mut g = Gen::new(dir, Some((key, trail_gen::key_id(key))), 40);
    g.checkpoint_every = 25;
    g.lifecycle("start");
    for i in 0..50 {
        let id = format!("r{i}");
        g.access(&Req {
            id: &id,
            org: "A81001",
            method: "GET",
            path: "/fhir/Patient/9990000034",
            route: "epr-fhir",
            nhs: Some("9990000034"),
            ..Req::default()
        });
        g.complete(&id, 200, "ok");
    }
    g.finish(true);
}

fn make_key() -> Ed25519KeyPair {
    trail_gen::new_key()
}

fn name(seq: u64) -> String {
    format!("audit-{seq:012}.jsonl")
}

fn edit_lines(dir: &Path, file: &str, f: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(path, out).expect("write");
}

fn verify_with(dir: &Path, key: Option<&Ed25519KeyPair>) -> Result<verify::Report, VerifyError> {
    let raw = key.map(|k| k.public_key().as_ref().to_vec());
    verify::verify(dir, raw.as_deref(), &VerifyOptions::default())
}

fn broken(r: Result<verify::Report, VerifyError>) -> Broken {
    match r {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a broken trail, got {other:?}"),
    }
}

fn assert_at(b: &Broken, file: &str, line: u64, seq: u64, what: &str) {
    assert_eq!((b.file.as_str(), b.line, b.seq), (file, line, Some(seq)), "{b}");
    assert!(b.problem.contains(what), "{b}");
}

/// An auditor's own script from SPEC §5 alone: (records) or the first bad (file, line).
fn mini_verify(dir: &Path) -> Result<u64, (String, u64)> {
    let mut files: Vec<(u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            Some((n.strip_prefix("audit-")?.strip_suffix(".jsonl")?.parse().ok()?, n))
        })
        .collect();
    files.sort();
    let (mut prev, mut seq) = ("0".repeat(64), 0u64);
    for (_, name) in files {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let bad = || (name.clone(), i as u64 + 1);
            let at = line.rfind(r#","hash":""#).ok_or_else(bad)?;
            let body = format!("{}}}", &line[..at]);
            let v: Value = serde_json::from_str(line).map_err(|_| bad())?;
            let hash = trail_gen::hex(
                ring::digest::digest(&ring::digest::SHA256, format!("{prev}\n{body}").as_bytes()).as_ref(),
            );
            if v["seq"] != seq + 1 || v["prev"] != prev.as_str() || v["hash"] != hash.as_str() {
                return Err(bad());
            }
            (prev, seq) = (hash, seq + 1);
        }
    }
    Ok(seq)
}

fn agree(dir: &Path) {
    let ours = verify_with(dir, None).map(|r| r.records).map_err(|e| match e {
        VerifyError::Broken(b) => (b.file, b.line),
        other => panic!("{other}"),
    });
    assert_eq!(ours, mini_verify(dir));
}

// === verify ===

#[test]
fn intact_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    let report = verify_with(dir.path(), Some(&key)).expect("intact");
    // 1 start + 100 request records + 4 periodic checkpoints + the final one.
    assert_eq!(report.records, 106);
    assert_eq!(report.files, 3);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.last_seq, 106);
    assert_eq!(
        report.to_string(),
        "intact: 106 records, 3 files, 5 checkpoints verified, last seq 106"
    );
    assert!(verify_with(dir.path(), None).is_ok());
    agree(dir.path());

    // The command, as main.rs calls it, with the PEM key file.
    let pem = dir.path().join("audit.pub.pem");
    std::fs::write(&pem, trail_gen::public_key_pem(&key)).unwrap();
    let mut out = Vec::new();
    let args = VerifyArgs {
        dir: dir.path().to_path_buf(),
        public_key: Some(pem),
        options: VerifyOptions::default(),
    };
    verify::run(&args, &mut out).expect("intact");
    assert!(String::from_utf8(out).unwrap().starts_with("intact: 106 records"));
}

#[test]
fn changed_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    edit_lines(dir.path(), &name(41), |l| {
        l[4] = l[4].replace("9990000034", "9990000026")
    });
    assert_at(
        &broken(verify_with(dir.path(), Some(&key))),
        &name(41),
        5,
        45,
        "altered",
    );
    agree(dir.path());
}

#[test]
fn deleted_inserted_and_swapped_lines_are_named() {
    let key = make_key();
    // (case, edit of the second file, expected line, seq, words of the problem)
    type Case = (&'static str, fn(&mut Vec<String>), u64, u64, &'static str);
    let cases: [Case; 3] = [
        ("deleted", |l| drop(l.remove(4)), 5, 46, "missing"),
        ("inserted", |l| l.insert(5, l[4].clone()), 6, 45, "inserted"),
        ("swapped", |l| l.swap(4, 5), 5, 46, "missing"),
    ];
    for (what, edit, line, seq, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        standard_trail(dir.path(), &key);
        edit_lines(dir.path(), &name(41), edit);
        let b = broken(verify_with(dir.path(), Some(&key)));
        assert_at(&b, &name(41), line, seq, problem);
        agree(dir.path());
        eprintln!("{what}: {b}");
    }
}

#[test]
fn missing_middle_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    std::fs::remove_file(dir.path().join(name(41))).unwrap();
    let b = broken(verify_with(dir.path(), Some(&key)));
    assert_at(&b, &name(81), 1, 81, "records 41..=80 are missing");
    agree(dir.path());
}

#[test]
fn renamed_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    std::fs::rename(dir.path().join(name(81)), dir.path().join(name(79))).unwrap();
    let b = broken(verify_with(dir.path(), Some(&key)));
    assert_at(&b, &name(79), 1, 81, "name says it starts at seq 79");
}

#[test]
fn truncated_tail_is_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    // Cut the last three records, the final checkpoint among them (seq 104..=106).
    edit_lines(dir.path(), &name(81), |l| l.truncate(l.len() - 3));
    let b = broken(verify_with(dir.path(), Some(&key)));
    assert_at(
        &b,
        &name(81),
        23,
        103,
        "unsealed tail: 25 records after the last checkpoint (seq 78)",
    );
    let raw = key.public_key().as_ref().to_vec();
    let opts = VerifyOptions {
        allow_unsealed_tail: true,
    };
    let report = verify::verify(dir.path(), Some(&raw), &opts).expect("accepted");
    assert_eq!(report.unsealed_tail, Some(25));
    // Without the key nothing says where the trail should end.
    assert!(verify_with(dir.path(), None).is_ok());
    agree(dir.path());
}

#[test]
fn forged_checkpoint_signature_fails() {
    // A rewriter rehashes the whole chain but cannot sign with the gateway's key.
    let dir = tempfile::tempdir().unwrap();
    let (real, forger) = (make_key(), make_key());
    let mut g = Gen::new(dir.path(), Some((&forger, trail_gen::key_id(&real))), 40);
    g.lifecycle("start");
    g.lifecycle("stop");
    g.finish(true);
    let b = broken(verify_with(dir.path(), Some(&real)));
    assert_at(&b, &name(1), 3, 3, "signature is not valid");
    // A checkpoint naming another key is refused as such.
    let b = broken(verify_with(dir.path(), Some(&make_key())));
    assert_at(&b, &name(1), 3, 3, "signed by key");
    assert!(verify_with(dir.path(), None).is_ok());
}

#[test]
fn garbage_and_unusable_input() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    standard_trail(dir.path(), &key);
    edit_lines(dir.path(), &name(1), |l| l[9] = "{\"seq\":10, oops".into());
    let b = broken(verify_with(dir.path(), None));
    assert_eq!((b.file.as_str(), b.line), (name(1).as_str(), 10));
    let e = query::query(dir.path(), &Filters::default(), Format::Json, &mut Vec::new()).expect_err("garbage");
    assert!(e.to_string().starts_with(&format!("{} line 10:", name(1))), "{e}");
    agree(dir.path());

    let missing = verify_with(&dir.path().join("nope"), None).unwrap_err();
    assert_eq!(missing.exit_code(), 2, "{missing}");
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(verify_with(empty.path(), None).unwrap_err().exit_code(), 2);
    let bad_key = dir.path().join("key.pem");
    std::fs::write(&bad_key, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    let args = VerifyArgs {
        dir: dir.path().into(),
        public_key: Some(bad_key),
        options: VerifyOptions::default(),
    };
    assert_eq!(verify::run(&args, &mut Vec::new()).unwrap_err().exit_code(), 2);
}

// === query and export ===

/// A day of varied traffic: interleaved completions, a denial, DICOM, a crash.
fn varied_trail(dir: &Path) {
    let key = make_key();
    let mut g = Gen::new(dir, Some((&key, trail_gen::key_id(&key))), 6);
    g.lifecycle("start");
    g.access(&Req {
        id: "r1",
        org: "A81001",
        method: "GET",
        path: "/fhir/Patient/9990000034",
        route: "epr-fhir",
        nhs: Some("9990000034"),
        fhir: Some(("Patient", "9990000034")),
        interaction: Some("read"),
        practitioner: Some("G1234567"),
        ..Req::default()
    });
    g.complete("r1", 200, "ok");
    g.access(&Req {
        id: "r2",
        org: "RX1",
        method: "GET",
        path: "/dicomweb/studies/1.2.826.0.1.3680043.2.1125.1/series",
        route: "pacs",
        study: Some("1.2.826.0.1.3680043.2.1125.1"),
        ..Req::default()
    });
    g.tls_rejected();
    g.access(&Req {
        id: "r3",
        org: "A81001",
        method: "DELETE",
        path: "/fhir/Patient/9990000034",
        route: "epr-fhir",
        deny: Some("not_allowed"),
        nhs: Some("9990000034"),
        ..Req::default()
    });
    g.complete("r3", 403, "ok");
    g.complete("r2", 200, "ok");
    g.access(&Req {
        id: "r4",
        org: "RX1",
        method: "GET",
        path: "/fhir/Observation",
        query: Some("patient=9990000034&code=1,2"),
        route: "epr-fhir",
        nhs: Some("9990000034"),
        ..Req::default()
    });
    g.access(&Req {
        id: "r5",
        org: "A81001",
        method: "POST",
        path: "/fhir/\"odd\",path",
        route: "epr-fhir",
        ..Req::default()
    });
    g.complete("r5", 502, "upstream_error");
    g.complete("r4", 200, "ok");
    g.clock_us += 86_400_000_000; // the next day
    g.access(&Req {
        id: "r6",
        org: "RX1",
        method: "GET",
        path: "/fhir/Patient/9990000042",
        route: "epr-fhir",
        nhs: Some("9990000042"),
        ..Req::default()
    });
    g.complete("r6", 200, "ok");
    g.access(&Req {
        id: "r7",
        org: "A81001",
        method: "GET",
        path: "/fhir/Patient/9990000034",
        route: "epr-fhir",
        nhs: Some("9990000034"),
        ..Req::default()
    });
    // Crash: r7 never completes; the restart shows it never will.
    g.lifecycle("start");
    g.access(&Req {
        id: "r8",
        org: "A81001",
        method: "GET",
        path: "/fhir/Patient",
        route: "epr-fhir",
        ..Req::default()
    });
    g.complete("r8", 200, "ok");
    g.finish(true);
    verify_with(dir, Some(&key)).expect("fixture is intact");
}

#[test]
fn query_filters_and_joins() {
    let dir = tempfile::tempdir().unwrap();
    varied_trail(dir.path());
    let q = |f: Filters| query_rows(dir.path(), &f);

    let all = q(Filters::default());
    // Rows come out as requests complete; r7 at the restart, without a completion.
    assert_eq!(row_ids(&all), ["r1", "r3", "r2", "r5", "r4", "r6", "r7", "r8"]);
    assert_eq!(all[0]["complete"]["status"], 200);
    assert_eq!(all[0]["client"]["org"], "A81001");
    assert_eq!(all[3]["complete"]["outcome"], "upstream_error");
    assert!(all[6]["complete"].is_null());

    let by_org = q(Filters {
        org: Some("RX1".into()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&by_org), ["r2", "r4", "r6"]);
    let by_patient = q(Filters {
        patient: Some("999 000 0034".into()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&by_patient), ["r1", "r3", "r4", "r7"]);
    let by_study = q(Filters {
        study: Some("1.2.826.0.1.3680043.2.1125.1".into()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&by_study), ["r2"]);
    let denied = q(Filters {
        decision: Some(Decision::Deny),
        ..Filters::default()
    });
    assert_eq!(row_ids(&denied), ["r3"]);
    assert_eq!(denied[0]["complete"]["status"], 403);
    let by_route = q(Filters {
        route: Some("pacs".into()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&by_route), ["r2"]);
    let by_id = q(Filters {
        request_id: Some("r4".into()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&by_id), ["r4"]);
    assert_eq!(by_id[0]["request"]["query"], "patient=9990000034&code=1,2");

    let day1 = q(Filters {
        until: Some(query::parse_until("2026-11-22").unwrap()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&day1), ["r1", "r3", "r2", "r5", "r4"]);
    let day2 = q(Filters {
        since: Some(query::parse_since("2026-11-23").unwrap()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&day2), ["r6", "r7", "r8"]);
    // r1's access is at 05:00:00.002 (start is .001); an inclusive instant bound keeps it.
    let at = |s: &str| Some(query::parse_since(s).unwrap());
    let exact = q(Filters {
        since: at("2026-11-22T05:00:00.002Z"),
        until: Some(query::parse_until("2026-11-22T05:00:00.002Z").unwrap()),
        ..Filters::default()
    });
    assert_eq!(row_ids(&exact), ["r1"]);
    let combined = q(Filters {
        org: Some("A81001".into()),
        decision: Some(Decision::Allow),
        since: at("2026-11-22T00:00:00+00:00"),
        ..Filters::default()
    });
    assert_eq!(row_ids(&combined), ["r1", "r5", "r7", "r8"]);
}

#[test]
fn query_formats() {
    let dir = tempfile::tempdir().unwrap();
    varied_trail(dir.path());
    let run = |format| {
        let mut out = Vec::new();
        let args = QueryArgs {
            dir: dir.path().into(),
            filters: Filters::default(),
            format,
        };
        assert_eq!(query::run(&args, &mut out).unwrap(), 8);
        String::from_utf8(out).unwrap()
    };

    let table = run(Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 9, "{table}");
    assert!(lines[0].starts_with("time  ") && lines[0].contains("request_id") && lines[0].ends_with("studies"));
    // Aligned: request_id starts at the same column on every line.
    let col = lines[0].find("request_id").unwrap();
    assert!(lines[1..].iter().all(|l| l[col..].starts_with('r')), "{table}");
    assert!(lines[1].contains("A81001") && lines[1].contains(" 200 ") && lines[1].contains("9990000034"));
    println!("{table}");

    let csv = run(Format::Csv);
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert!(rows[0].starts_with("time,seq,request_id,org,"));
    assert_eq!(rows.len(), 10); // header, 8 rows, and the empty rest after the last CRLF
    let r5 = rows.iter().find(|r| r.contains(",r5,")).unwrap();
    assert!(r5.contains(r#","/fhir/""odd"",path","#), "{r5}");
    let r4 = rows.iter().find(|r| r.contains(",r4,")).unwrap();
    assert!(r4.contains(r#","patient=9990000034&code=1,2","#), "{r4}");

    let json = run(Format::Json);
    assert_eq!(json.lines().count(), 8);
    assert!(json.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
}

#[test]
fn export_fhir_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    varied_trail(dir.path());
    let mut out = Vec::new();
    let args = ExportArgs {
        dir: dir.path().into(),
        filters: Filters::default(),
        all_events: false,
    };
    assert_eq!(export::run(&args, &mut out).unwrap(), 8);
    let events: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let xrequest = |e: &Value| {
        let entities = e["entity"].as_array().unwrap();
        let x = entities
            .iter()
            .find(|x| x["type"]["display"] == "X-Request-Id")
            .unwrap();
        x["what"]["identifier"]["value"].as_str().unwrap().to_string()
    };
    let by_id = |id: &str| events.iter().find(|e| xrequest(e) == id).unwrap();
    for e in &events {
        assert_eq!(e["resourceType"], "AuditEvent");
        // r2 lists a study's series: a DICOMweb (QIDO) query.
        let ty = if xrequest(e) == "r2" { "110112" } else { "rest" };
        assert_eq!(e["type"]["code"], ty);
        assert_eq!(e["source"]["observer"]["display"], "caregate");
        assert!(e["recorded"].as_str().unwrap().starts_with("2026-11-2"));
        // The id is the access record's hash, not a request id.
        let id = e["id"].as_str().unwrap();
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    let r1 = by_id("r1");
    assert_eq!((r1["action"].as_str(), r1["outcome"].as_str()), (Some("R"), Some("0")));
    assert_eq!(r1["subtype"][0]["code"], "read");
    let client = &r1["agent"][0];
    assert_eq!(client["who"]["identifier"]["value"], "A81001");
    assert_eq!(
        client["who"]["identifier"]["system"],
        "https://fhir.nhs.uk/Id/ods-organization-code"
    );
    assert_eq!(client["who"]["display"], "Org A81001");
    assert_eq!(client["requestor"], true);
    assert_eq!(client["network"]["address"], "10.0.0.7");
    // The generator writes its practitioner as `clinical.token_practitioner`, a name of no
    // record format: no user agent. (tests/fhir_export.rs has users from `clinical.token`.)
    assert_eq!(r1["agent"].as_array().unwrap().len(), 2);
    // A read: the client receives the data (Destination), the server sends it (Source).
    assert_eq!(client["type"]["coding"][0]["code"], "110152");
    let patient = r1["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"]["code"] == "1")
        .unwrap();
    assert_eq!(
        patient["what"]["identifier"]["system"],
        "https://fhir.nhs.uk/Id/nhs-number"
    );
    assert_eq!(patient["what"]["identifier"]["value"], "9990000034");

    let r3 = by_id("r3");
    assert_eq!((r3["action"].as_str(), r3["outcome"].as_str()), (Some("D"), Some("4")));
    assert_eq!(r3["outcomeDesc"], "not_allowed");
    assert_eq!(by_id("r5")["outcome"], "8");
    assert_eq!(by_id("r5")["action"], "C");
    let query_entity = by_id("r4")["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"]["code"] == "24")
        .unwrap()
        .clone();
    use base64::Engine as _;
    let q = base64::engine::general_purpose::STANDARD
        .decode(query_entity["query"].as_str().unwrap())
        .unwrap();
    // BALP: the raw request, base64; the query string as sent in the description.
    assert_eq!(
        q,
        b"GET epr.example.nhs.uk/fhir/Observation?patient=9990000034&code=1,2"
    );
    assert_eq!(query_entity["description"], "patient=9990000034&code=1,2");
    assert_eq!(by_id("r4")["subtype"][0]["code"], "search-type");

    // Filters apply as for query.
    let mut out = Vec::new();
    let f = Filters {
        patient: Some("9990000042".into()),
        ..Filters::default()
    };
    assert_eq!(export::export_fhir(dir.path(), &f, &mut out).unwrap(), 1);
}

/// Records in the large-trail test. 1,000,000 in a release build; a debug build (the default for
/// `cargo test`) uses 200,000 to stay near a minute on a shared machine; the benchmark covers 1M.
fn large_n() -> u64 {
    std::env::var("CAREGATE_LARGE_TRAIL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 200_000 } else { 1_000_000 })
}

#[test]
fn large_trail_streams() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key();
    let n = large_n();
    let t = std::time::Instant::now();
    trail_gen::bulk(dir.path(), &key, n);
    eprintln!("generated {n} records in {:?}", t.elapsed());

    let t = std::time::Instant::now();
    let report = verify_with(dir.path(), Some(&key)).expect("intact");
    eprintln!("verify: {report} in {:?}", t.elapsed());
    let requests = (report.records - 1 - report.checkpoints) / 2;

    let t = std::time::Instant::now();
    let f = Filters {
        patient: Some("9990000042".into()),
        ..Filters::default()
    };
    let mut sink = CountingSink::default();
    let rows = query::query(dir.path(), &f, Format::Json, &mut sink).unwrap();
    assert_eq!(rows, requests.div_ceil(10));
    eprintln!("query: {rows} rows, {} bytes in {:?}", sink.0, t.elapsed());

    let t = std::time::Instant::now();
    let f = Filters {
        org: Some("A81001".into()),
        decision: Some(Decision::Deny),
        ..Filters::default()
    };
    let exported = export::export_fhir(dir.path(), &f, &mut CountingSink::default()).unwrap();
    assert_eq!(
        exported,
        (0..requests).filter(|i| i % 2 == 0 && i % 7 == 0).count() as u64
    );
    eprintln!("export: {exported} events in {:?}", t.elapsed());
}

#[derive(Default)]
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
