//! `caregate audit export --format fhir` against FHIR R4 and IHE BALP: every event of the test
//! trails through a real FHIR model validator (tests/fhir_validate.py, the `fhir.resources`
//! package: missing, it fails this test), and BALP's rules as assertions.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use caregate::audit::export::{self, ExportArgs};
use caregate::audit::query::{self, Filters};
use serde_json::Value;
use support::clinical_trail::{self, clinic_day, EXPECT, GPC_GET_RECORD, MRN, SDS_USER, STUDY_A, STUDY_B};
use support::trail_gen::{self, Gen, Req};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

fn export(dir: &Path, filters: Filters, all_events: bool) -> Vec<Value> {
    let mut out = Vec::new();
    let args = ExportArgs {
        dir: dir.into(),
        filters,
        all_events,
    };
    let n = export::run(&args, &mut out).expect("export");
    let events: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(n as usize, events.len());
    events
}

/// The first-format trail of the reader's tests: odd paths, a query with a comma, a crash.
fn first_format_trail(dir: &Path) {
    let key = trail_gen::new_key();
    let mut g = Gen::new(dir, Some((&key, trail_gen::key_id(&key))), 50);
    g.lifecycle("start");
    let reqs = [
        ("a1", "GET", "/fhir/Patient/9990000034", None, Some("9990000034"), None),
        (
            "a2",
            "GET",
            "/fhir/Observation",
            Some("patient=9990000034&code=1,2"),
            Some("9990000034"),
            None,
        ),
        ("a3", "POST", "/fhir/\"odd\",path", None, None, None),
        ("a4", "GET", "/dicomweb/studies/1.2.3/series", None, None, Some("1.2.3")),
    ];
    for (id, method, path, query, nhs, study) in reqs {
        g.access(&Req {
            id,
            org: "A81001",
            method,
            path,
            query,
            route: "epr-fhir",
            nhs,
            study,
            practitioner: Some("G1234567"),
            ..Req::default()
        });
        g.complete(id, 200, "ok");
    }
    g.tls_rejected();
    g.access(&Req {
        id: "a5",
        org: "RX1",
        method: "GET",
        path: "/fhir/Patient",
        route: "epr-fhir",
        deny: Some("not_allowed"),
        ..Req::default()
    });
    g.lifecycle("start");
    g.finish(true);
}

#[test]
fn fhir_export_validates_as_r4() {
    let work = tempfile::tempdir().unwrap();
    let mut ndjson = Vec::new();
    for (name, make) in [("clinic", clinic_day as fn(&Path)), ("first", first_format_trail)] {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        make(&dir);
        let args = ExportArgs {
            dir,
            filters: Filters::default(),
            all_events: true,
        };
        export::run(&args, &mut ndjson).expect("export");
    }
    let events = ndjson.iter().filter(|b| **b == b'\n').count();
    assert!(events > 30, "{events}");
    // CAREGATE_KEEP_EXPORT=FILE keeps a copy to read.
    let file = std::env::var_os("CAREGATE_KEEP_EXPORT").map_or_else(|| work.path().join("events.ndjson"), Into::into);
    std::fs::write(&file, &ndjson).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fhir_validate.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("python3 runs (the FHIR validator needs it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(out.status.success(), "FHIR R4 validation failed:\n{stderr}{stdout}");
    assert!(stdout.contains(&format!("{events} valid and 0 invalid")), "{stdout}");
}

fn coding_codes(v: &Value) -> Vec<&str> {
    v["coding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect()
}

fn entities<'a>(e: &'a Value, role: &str) -> Vec<&'a Value> {
    e["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["role"]["code"] == role)
        .collect()
}

/// caregate's request id, from BALP's transaction entity.
fn xrequest_id(e: &Value) -> &str {
    entities_of_type(e, "XrequestId")["what"]["identifier"]["value"]
        .as_str()
        .unwrap()
}

fn by_xrequest<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events
        .iter()
        .find(|e| xrequest_id(e) == id)
        .unwrap_or_else(|| panic!("no event for {id}"))
}

#[test]
fn fhir_export_follows_balp() {
    let dir = tempfile::tempdir().unwrap();
    clinic_day(dir.path());
    let events = export(dir.path(), Filters::default(), false);
    assert_eq!(events.len(), EXPECT.len());
    // In completion order, as the trail says.
    let order: Vec<String> = events.iter().map(|e| xrequest_id(e).to_string()).collect();
    assert_eq!(order, EXPECT.iter().map(|x| x.id).collect::<Vec<_>>());

    // Ids: valid FHIR ids, unique, the access record's hash (never a client's id).
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len());
    for id in &ids {
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    for x in EXPECT {
        let e = by_xrequest(&events, x.id);
        let ctx = x.id;
        assert_eq!(e["action"], x.action, "{ctx}");
        assert_eq!(e["outcome"], x.outcome, "{ctx}");
        if x.subtype.is_empty() {
            let code = if x.action == "E" { "110112" } else { "110103" };
            assert_eq!(
                (&e["type"]["system"], &e["type"]["code"]),
                (&DCM.into(), &code.into()),
                "{ctx}"
            );
            assert!(e.get("subtype").is_none(), "{ctx}");
        } else {
            assert_eq!(e["type"]["code"], "rest", "{ctx}");
            assert_eq!(
                e["subtype"][0]["system"], "http://hl7.org/fhir/restful-interaction",
                "{ctx}"
            );
            assert_eq!(e["subtype"][0]["code"], x.subtype, "{ctx}");
        }
        // Agents: the client's role follows the direction of the data (BALP).
        let agents = e["agent"].as_array().unwrap();
        let (client_role, server_role) = if x.client_is_destination {
            ("110152", "110153")
        } else {
            ("110153", "110152")
        };
        let client = &agents[0];
        assert_eq!(coding_codes(&client["type"]), [client_role], "{ctx}");
        assert_eq!(client["network"]["address"], "10.0.0.7", "{ctx}");
        assert_eq!(client["altId"], "CN=system.a81001.nhs.uk,O=A81001", "{ctx}");
        assert_eq!(client["policy"][0], format!("sha256:{}", "ab".repeat(32)), "{ctx}");
        assert_eq!(coding_codes(&agents[1]["type"]), [server_role], "{ctx}");
        assert_eq!(agents[1]["requestor"], false, "{ctx}");
        // A patient entity for every patient the record names; a study entity for each study.
        let patients: Vec<String> = entities(e, "1")
            .iter()
            .map(|p| {
                assert_eq!(p["type"]["code"], "1", "{ctx}");
                assert_eq!(p["what"]["type"], "Patient", "{ctx}");
                let id = &p["what"]["identifier"];
                match id["system"].as_str() {
                    Some("https://fhir.nhs.uk/Id/nhs-number") => id["value"].as_str().unwrap().to_string(),
                    Some(system) => format!("{system}|{}", id["value"].as_str().unwrap()),
                    None => id["value"].as_str().unwrap().to_string(),
                }
            })
            .collect();
        assert_eq!(patients, x.patients, "{ctx}");
        let studies: Vec<&str> = entities(e, "3")
            .iter()
            .map(|s| {
                assert_eq!(coding_codes(&s["what"]["identifier"]["type"]), ["110180"], "{ctx}");
                s["what"]["identifier"]["value"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("urn:oid:")
                    .unwrap()
            })
            .collect();
        assert_eq!(studies, x.studies, "{ctx}");
        // Searches and operations carry the request as BALP's query entity; nothing else does.
        assert_eq!(entities(e, "24").len(), usize::from(x.action == "E"), "{ctx}");
        // Times: the period runs from access to completion, recorded at completion.
        assert!(
            e["period"]["start"].as_str().unwrap() <= e["recorded"].as_str().unwrap(),
            "{ctx}"
        );
        if x.outcome != "12" || x.id == "no-audit" {
            assert_eq!(e["period"]["end"], e["recorded"], "{ctx}");
        }
    }

    // The GP Connect structured record: a POST that reads, an operation, never a create.
    let gpc = by_xrequest(&events, "gpc-1");
    let sub: Vec<&str> = gpc["subtype"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(sub, ["operation", "$gpc.getstructuredrecord", GPC_GET_RECORD]);
    // The user from the token: SDS user id with its system, name, role, purpose of use.
    let user = gpc["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| coding_codes(&a["type"]) == ["IRCP"])
        .unwrap();
    assert_eq!(user["who"]["identifier"]["system"], SDS_USER);
    assert_eq!(user["who"]["identifier"]["value"], "G13579135");
    assert_eq!(user["name"], "Dr Jane Smith");
    assert_eq!(user["requestor"], true);
    assert_eq!(gpc["agent"][0]["requestor"], false);
    assert_eq!(user["role"][0]["coding"][0]["code"], "200000000117");
    assert_eq!(user["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(user["purposeOfUse"][0]["text"], "directcare");
    assert_eq!(
        gpc["agent"][0]["who"]["identifier"]["system"],
        "https://fhir.nhs.uk/Id/ods-organization-code"
    );
    assert_eq!(gpc["agent"][0]["who"]["identifier"]["value"], "A81001");
    let tx = entities_of_type(gpc, "XrequestId");
    let details: Vec<(&str, &str)> = tx["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["type"].as_str().unwrap(), d["valueString"].as_str().unwrap()))
        .collect();
    assert_eq!(details, [("client X-Request-Id", "cli-1"), ("Ssp-TraceID", "trace-1")]);

    // The search: the raw request, base64, and the query string as sent.
    let search = by_xrequest(&events, "obs-search");
    let q = entities(search, "24")[0];
    let raw = base64::engine::general_purpose::STANDARD
        .decode(q["query"].as_str().unwrap())
        .unwrap();
    let query = format!("patient=9990000034,9990000042&subject.identifier={MRN}|MRN123");
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        format!("GET epr.example.nhs.uk/fhir/Observation?{query}")
    );
    assert_eq!(q["description"], query);
    assert!(q.get("what").is_none());
    // A read addresses the resource: the data entity, and the patient by reference too.
    let read = by_xrequest(&events, "pat-read");
    assert_eq!(entities(read, "4")[0]["what"]["reference"], "Patient/9990000042");
    assert_eq!(entities(read, "1")[0]["what"]["reference"], "Patient/9990000042");
    // A Spine-labelled read keeps its label; a practitioner without a system is a bare value.
    let spine = by_xrequest(&events, "spine-read");
    assert_eq!(spine["subtype"][1]["code"], clinical_trail::GPC_READ_PATIENT);
    let user = &spine["agent"][2];
    assert_eq!(user["who"]["identifier"]["value"], "G22222222");
    assert!(user["who"]["identifier"].get("system").is_none());
    assert_eq!(user["purposeOfUse"][0]["text"], "secondaryuses");
    // DICOMweb: the server agent is the host the client addressed, port or not.
    let qido = by_xrequest(&events, "qido");
    assert_eq!(
        qido["agent"][1]["network"],
        serde_json::json!({"address": "pacs.example.nhs.uk", "type": "1"})
    );
    let wado = by_xrequest(&events, "wado");
    assert_eq!(
        wado["agent"][1]["network"],
        serde_json::json!({"address": "10.1.2.3", "type": "2"})
    );
    assert_eq!(entities(qido, "3").len(), 2);
    assert!([STUDY_A, STUDY_B].iter().all(|s| qido.to_string().contains(s)));
    // Refusals say why; an unidentified client is named by its certificate.
    assert_eq!(by_xrequest(&events, "obs-delete")["outcomeDesc"], "not_allowed");
    assert_eq!(by_xrequest(&events, "no-audit")["outcomeDesc"], "audit_unavailable");
    let unknown = by_xrequest(&events, "unknown");
    assert_eq!(
        unknown["agent"][0]["who"]["display"],
        "CN=system.a81001.nhs.uk,O=A81001"
    );
    assert!(unknown["agent"][0]["who"].get("identifier").is_none());
    let crashed = by_xrequest(&events, "crashed");
    assert!(crashed["period"].get("end").is_none());
}

fn entities_of_type<'a>(e: &'a Value, code: &str) -> &'a Value {
    e["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"]["code"] == code)
        .unwrap()
}

#[test]
fn fhir_export_all_events_as_atna() {
    let dir = tempfile::tempdir().unwrap();
    clinic_day(dir.path());
    let all = export(dir.path(), Filters::default(), true);
    let system: Vec<&Value> = all.iter().filter(|e| e["type"]["code"] != "rest").collect();
    let kinds: Vec<(String, String, String)> = system
        .iter()
        .filter(|e| e["type"]["system"] == DCM && !["110103", "110112"].contains(&e["type"]["code"].as_str().unwrap()))
        .map(|e| {
            (
                e["type"]["code"].as_str().unwrap().to_string(),
                e["subtype"][0]["code"].as_str().unwrap_or("").to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let k = |t: &str, s: &str, o: &str| (t.to_string(), s.to_string(), o.to_string());
    assert_eq!(
        kinds,
        [
            k("110100", "110120", "0"), // start
            k("110113", "110126", "4"), // tls_rejected: no certificate
            k("110113", "110129", "0"), // reload
            k("110113", "110129", "4"), // reload_failed
            k("110113", "110126", "4"), // tls_rejected: expired
            k("110100", "110120", "0"), // restart
            k("110100", "110121", "0"), // stop
        ]
    );
    // The request cut off by the crash comes before the restart that shows it.
    let pos = |f: &dyn Fn(&Value) -> bool| all.iter().position(f).unwrap();
    let crashed = pos(&|e| e.to_string().contains("\"crashed\""));
    let restart = all.iter().rposition(|e| e["subtype"][0]["code"] == "110120").unwrap();
    assert!(crashed < restart);
    let expired = system.iter().find(|e| e["outcomeDesc"] == "expired").unwrap();
    assert_eq!(expired["agent"][0]["network"]["address"], "10.9.9.8");
    assert_eq!(expired["entity"][0]["what"]["identifier"]["value"], "sha256:0102");
    let start = system[0];
    assert_eq!(start["agent"][0]["who"]["identifier"]["value"], "gw-a");
    assert_eq!(
        start["entity"][0]["what"]["identifier"]["value"],
        format!("sha256:{}", "c".repeat(64))
    );
    let ids: HashSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len());

    // Without the flag, requests only; a request filter leaves the rest out, time bounds do not.
    assert_eq!(export(dir.path(), Filters::default(), false).len(), EXPECT.len());
    let by_patient = Filters {
        patient: Some("999 000 0042".into()),
        ..Filters::default()
    };
    let rows = export(dir.path(), by_patient, true);
    assert!(rows.iter().all(|e| e["type"]["code"] == "rest"));
    assert_eq!(rows.len(), 5, "obs-search, pat-read, obs-create, spine-read, crashed");
    let since = Filters {
        since: Some(query::parse_since("2026-11-22").unwrap()),
        ..Filters::default()
    };
    assert_eq!(export(dir.path(), since, true).len(), all.len());
}

#[test]
fn cli_export_all_events_and_client_request_id() {
    let dir = tempfile::tempdir().unwrap();
    clinic_day(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_caregate"))
            .args(["audit"])
            .args(args)
            .arg(dir.path())
            .output()
            .expect("run caregate");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let all = run(&["export", "--format", "fhir", "--all-events"]);
    let requests = run(&["export", "--format", "fhir"]);
    assert_eq!(requests.lines().count(), EXPECT.len());
    assert_eq!(all.lines().count(), EXPECT.len() + 7);
    let dup = run(&["query", "--client-request-id", "dup", "--format", "csv"]);
    let rows: Vec<&str> = dup.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{dup}");
    assert!(
        rows[0].contains(",pat-read,") && rows[1].contains(",obs-search,"),
        "{dup}"
    );
    let mrn = run(&["query", "--patient", "MRN123", "--format", "json"]);
    assert_eq!(mrn.lines().count(), 1);
    assert!(mrn.contains("\"obs-search\""));
}
