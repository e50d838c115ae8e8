//! No patient access slips past the audit (issue 18): every way a real GP Connect, FHIR or
//! DICOMweb request names a patient, sent through a running gateway, is in its access record,
//! and `caregate audit query --patient` finds the request by each patient it named. Bodies that
//! may name a patient are read before the record is made, within their limits.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use caregate::audit::query::Filters;
use serde_json::{json, Value};
use support::trail::row_ids;
use support::*;

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";
const STRUCTURED: &str = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";

fn config(pki: &TestPki, up: &Upstream) -> GatewayConfig {
    let gp = || Allow::groups(&["gp"]);
    pki.config()
        .standard_organisations()
        .upstream("epr", [up.url()])
        .timeouts("1s", "2s")
        .route(
            Route::new("fhir", "/fhir/", "epr", "epr")
                .set("inspect_body_limit = \"4KiB\"")
                .allow(gp()),
        )
        .route(
            Route::new("opaque", "/opaque/", "epr", "epr")
                .set("patient_ids_are_nhs_numbers = false")
                .allow(gp()),
        )
        .route(
            Route::new("uninspected", "/uninspected/", "epr", "epr")
                .set("inspect_body = false")
                .allow(gp()),
        )
        .route(Route::new("pacs", "/dicomweb/", "epr", "image").allow(gp()))
}

/// An unsigned GP Connect-style token that asks for `nhs_number`'s record.
fn token(nhs_number: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({
        "iss": "https://gpsystem.a81001.example.nhs.uk",
        "reason_for_request": "directcare",
        "requested_scope": "patient/*.read",
        "requesting_organization": {"resourceType": "Organization",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}]},
        "requested_record": {"resourceType": "Patient",
            "identifier": [{"system": NHS, "value": nhs_number}]},
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("Bearer {header}.{payload}.")
}

/// One way of naming patients, and what the record must say.
struct Form {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    nhs_numbers: &'static [&'static str],
    patient_ids: &'static [&'static str],
    study_uids: &'static [&'static str],
}

fn get(what: &'static str, path: &str) -> Form {
    Form {
        what,
        method: "GET",
        path: path.to_string(),
        headers: Vec::new(),
        body: None,
        nhs_numbers: &[],
        patient_ids: &[],
        study_uids: &[],
    }
}

fn post(what: &'static str, path: &str, content_type: &str, body: String) -> Form {
    Form {
        method: "POST",
        headers: vec![("content-type", content_type.to_string())],
        body: Some(body),
        ..get(what, path)
    }
}

impl Form {
    fn nhs(self, n: &'static [&'static str]) -> Form {
        Form { nhs_numbers: n, ..self }
    }
    fn ids(self, ids: &'static [&'static str]) -> Form {
        Form {
            patient_ids: ids,
            ..self
        }
    }
    fn studies(self, uids: &'static [&'static str]) -> Form {
        Form {
            study_uids: uids,
            ..self
        }
    }
    fn header(mut self, name: &'static str, value: String) -> Form {
        self.headers.push((name, value));
        self
    }
}

fn forms() -> Vec<Form> {
    let structured = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patientNHSNumber", "valueIdentifier": {"system": NHS, "value": "9990000107"}},
        {"name": "includeAllergies", "part": [{"name": "includeResolvedAllergies", "valueBoolean": true}]},
    ]});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/9990000115"}},
        {"request": {"method": "GET", "url": "Observation?patient=Patient/9990000123"}},
    ]});
    vec![
        get("a Patient read", "/fhir/Patient/9990000018").nhs(&["9990000018"]),
        get(
            "identifier OR list with the NHS system",
            &format!("/fhir/Patient?identifier={NHS}|9990000026,{NHS}|9990000034"),
        )
        .nhs(&["9990000026", "9990000034"]),
        get(
            "repeated identifier, no system and an empty one",
            "/fhir/Patient?identifier=9990000042&identifier=%7C9990000050",
        )
        .nhs(&["9990000042", "9990000050"]),
        get(
            "subject:Patient.identifier with the OID",
            "/fhir/Observation?subject:Patient.identifier=urn:oid:2.16.840.1.113883.2.1.4.1|9990000069",
        )
        .nhs(&["9990000069"]),
        get("patient reference", "/fhir/Observation?patient=Patient/9990000077").nhs(&["9990000077"]),
        get(
            "patient.identifier with the legacy system",
            "/fhir/Observation?patient.identifier=http://fhir.nhs.net/Id/nhs-number|9990000085",
        )
        .nhs(&["9990000085"]),
        post(
            "a form-encoded POST _search",
            "/fhir/Patient/_search",
            "application/x-www-form-urlencoded",
            format!(
                "identifier={}%7C9990000093",
                NHS.replace(':', "%3A").replace('/', "%2F")
            ),
        )
        .nhs(&["9990000093"]),
        post(
            "GP Connect's $gpc.getstructuredrecord",
            "/fhir/Patient/$gpc.getstructuredrecord",
            "application/fhir+json;charset=utf-8",
            structured.to_string(),
        )
        .header("ssp-interactionid", STRUCTURED.into())
        .nhs(&["9990000107"]),
        post(
            "a transaction Bundle",
            "/fhir/",
            "application/fhir+json",
            bundle.to_string(),
        )
        .nhs(&["9990000115", "9990000123"]),
        get("an opaque Patient id", "/fhir/Patient/abc-123").ids(&["abc-123"]),
        get("a 10-digit id where ids are opaque", "/opaque/fhir/Patient/9990000131").ids(&["9990000131"]),
        get(
            "a QIDO-RS query by PatientID",
            "/dicomweb/studies?PatientID=MRN-42&StudyInstanceUID=1.2.826.0.1.3680043.10.543.7",
        )
        .ids(&["MRN-42"])
        .studies(&["1.2.826.0.1.3680043.10.543.7"]),
        get(
            "a WADO-URI retrieve",
            "/dicomweb/wado?requestType=WADO&studyUID=1.2.826.0.1.3680043.10.543.8&seriesUID=1.2.3&objectUID=1.2.3.4",
        )
        .studies(&["1.2.826.0.1.3680043.10.543.8"]),
        get(
            "the token's requested record beside the path",
            "/fhir/Patient/9990000018",
        )
        .header("authorization", token("9990000158"))
        .nhs(&["9990000018", "9990000158"]),
    ]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The request ids `caregate audit query --patient` answers for `patient`.
fn query_patient(dir: &std::path::Path, patient: &str) -> Vec<String> {
    let filters = Filters {
        patient: Some(patient.to_string()),
        ..Filters::default()
    };
    row_ids(&support::trail::query_rows(dir, &filters))
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_form_of_naming_a_patient_is_recorded_and_found_by_query() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up)).await;
    let gp = pki.client("A81001");

    let mut sent = Vec::new();
    for form in forms() {
        let mut req = gw
            .request(&gp)
            .method(form.method)
            .path(&form.path)
            .headers(&form.headers);
        if let Some(body) = &form.body {
            req = req.body(body.clone());
        }
        let a = req.send().await;
        assert_eq!(a.status, 200, "{}: {:?}", form.what, a.body);
        let record = gw.access_of(&a);
        let c = &record["clinical"];
        assert_eq!(strings(&c["nhs_numbers"]), form.nhs_numbers, "{}: {c}", form.what);
        assert_eq!(
            c["nhs_number"].as_str(),
            form.nhs_numbers.first().copied(),
            "{}",
            form.what
        );
        assert_eq!(strings(&c["patient_ids"]), form.patient_ids, "{}: {c}", form.what);
        assert_eq!(strings(&c["study_uids"]), form.study_uids, "{}: {c}", form.what);
        let inspected = form.body.is_some().then_some(true);
        assert_eq!(record["body_inspected"].as_bool(), inspected, "{}", form.what);
        sent.push((form, a.request_id().to_string()));
    }
    // What was inspected went upstream unchanged.
    let seen = up.seen();
    for (form, _) in sent.iter().filter(|(f, _)| f.body.is_some()) {
        let body = form.body.as_ref().unwrap();
        let got = seen.iter().find(|s| s.uri == form.path).expect("forwarded");
        assert_eq!(got.body_len, body.len(), "{}", form.what);
        assert_eq!(got.body_sha, sha256_hex(body.as_bytes()), "{}", form.what);
    }

    gw.stop().await;
    for (form, id) in &sent {
        for patient in form.nhs_numbers.iter().chain(form.patient_ids) {
            let found = query_patient(&gw.audit_dir, patient);
            assert!(found.contains(id), "--patient {patient} misses {}", form.what);
        }
    }
}

#[tokio::test]
async fn bodies_are_read_within_their_limits_and_a_body_that_lies_about_json_is_refused() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, config(&pki, &up)).await;
    let gp = pki.client("A81001");
    let json = |path: &str, body: String| {
        gw.request(&gp)
            .method("POST")
            .path(path)
            .header("content-type", "application/fhir+json")
            .body(body)
    };

    // Over the route's inspect_body_limit (4 KiB): 413, and nothing reaches the upstream.
    let big = json!({"resourceType": "Patient", "text": "x".repeat(8 << 10)}).to_string();
    let a = json("/fhir/Patient", big.clone()).send().await;
    assert_eq!(
        (a.status, a.json()["issue"][0]["details"]["text"].as_str()),
        (413, Some("body_too_large"))
    );
    // A body that says it is FHIR JSON but is not: 400.
    let a = json("/fhir/Patient", "{not json".into()).send().await;
    assert_eq!(a.status, 400);
    assert!(up.seen().is_empty(), "refused bodies never reach the upstream");

    // A route that does not inspect says so in the record, and streams the body on.
    let a = json("/uninspected/fhir/Patient", big.clone()).send().await;
    assert_eq!(a.status, 200);
    assert_eq!(gw.access_of(&a)["body_inspected"], false);
    assert_eq!(up.seen()[0].body_len, big.len());
    // A body that cannot name a patient (DICOM, binaries) is not read: no body_inspected.
    let a = gw
        .request(&gp)
        .method("POST")
        .path("/fhir/Binary")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 64 << 10])
        .send()
        .await;
    assert_eq!(a.status, 200);
    assert!(gw.access_of(&a).get("body_inspected").is_none());

    let records = gw.stop().await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "access" && r["decision"] == "deny")
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["body_too_large", "bad_request"]);
}

fn sha256_hex(b: &[u8]) -> String {
    caregate::hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}
