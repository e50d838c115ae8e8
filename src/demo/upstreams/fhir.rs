//! The sample FHIR R4 EPR: the capability statement, Patient read and search by NHS number,
//! Observation search by patient, and a create that stores nothing.

use super::shared::{full, query_param, respond, Body};
use super::PATIENTS;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

const FHIR_JSON: &str = "application/fhir+json";
const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Answers a request to the EPR other than `/bytes/<n>` and `/echo`.
pub(super) async fn handle(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let Some(rest) = path.strip_prefix("/fhir/") else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such FHIR endpoint");
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if req.method() == Method::POST && segs.len() == 1 {
        // A create: the sample EPR stores nothing, it answers as if it had.
        let ty = segs[0].to_string();
        return match Limited::new(req.into_body(), 1 << 20).collect().await {
            Ok(body) => {
                let mut resp = fhir_json(StatusCode::CREATED, body.to_bytes());
                if let Ok(v) = format!("/fhir/{ty}/sample-1").parse() {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            Err(_) => outcome(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", "body over 1 MiB"),
        };
    }
    if req.method() != Method::GET {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "the sample EPR answers GET, and POST to create",
        );
    }
    match segs.as_slice() {
        ["metadata"] => json_resp(capability_statement()),
        ["Patient", id] => match PATIENTS.iter().find(|p| p.0 == *id) {
            Some(p) => json_resp(patient(p)),
            None => outcome(StatusCode::NOT_FOUND, "not-found", "no such Patient"),
        },
        ["Patient"] => {
            let wanted = query_param(&query, "identifier");
            let nhs = wanted.as_deref().and_then(|v| match v.split_once('|') {
                Some((system, value)) if system == NHS_NUMBER_SYSTEM || system.is_empty() => Some(value.to_string()),
                Some(_) => None,
                None => Some(v.to_string()),
            });
            let hits: Vec<Value> = PATIENTS
                .iter()
                .filter(|p| nhs.as_deref() == Some(p.0))
                .map(patient)
                .collect();
            json_resp(bundle(&format!("/fhir/Patient?{query}"), hits))
        }
        ["Observation"] => {
            let wanted = query_param(&query, "patient").unwrap_or_default();
            let nhs = wanted.strip_prefix("Patient/").unwrap_or(&wanted);
            let hits = match PATIENTS.iter().find(|p| p.0 == nhs) {
                Some(p) => observations(p.0),
                None => Vec::new(),
            };
            json_resp(bundle(&format!("/fhir/Observation?{query}"), hits))
        }
        _ => outcome(StatusCode::NOT_FOUND, "not-found", "no such FHIR endpoint"),
    }
}

fn capability_statement() -> Value {
    let search = |name: &str, ty: &str| json!({"name": name, "type": ty});
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "kind": "instance",
        "software": {"name": "caregate sample EPR"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "resource": [
                {
                    "type": "Patient",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [search("identifier", "token")]
                },
                {
                    "type": "Observation",
                    "interaction": [{"code": "search-type"}, {"code": "create"}],
                    "searchParam": [search("patient", "reference")]
                }
            ]
        }]
    })
}

fn patient(p: &(&str, &str, &str, &str, &str)) -> Value {
    let (nhs, family, given, gender, birth) = *p;
    json!({
        "resourceType": "Patient",
        "id": nhs,
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": nhs}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth
    })
}

fn observations(nhs: &str) -> Vec<Value> {
    let obs = |id: &str, code: &str, display: &str, value: f64, unit: &str, ucum: &str| {
        json!({
            "resourceType": "Observation",
            "id": format!("{nhs}-{id}"),
            "status": "final",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": format!("Patient/{nhs}")},
            "effectiveDateTime": "2024-05-01T09:30:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum}
        })
    };
    vec![
        obs("hr", "364075005", "Heart rate", 72.0, "beats/minute", "/min"),
        obs("wt", "27113001", "Body weight", 70.5, "kg", "kg"),
    ]
}

fn bundle(self_link: &str, resources: Vec<Value>) -> Value {
    let total = resources.len();
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "/fhir/{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            );
            json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": self_link}],
        "entry": entry
    })
}

/// A FHIR `OperationOutcome` with one error issue.
fn outcome(status: StatusCode, code: &str, text: &str) -> Response<Body> {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}]
    });
    fhir_json(status, Bytes::from(body.to_string()))
}

fn json_resp(v: Value) -> Response<Body> {
    fhir_json(StatusCode::OK, Bytes::from(v.to_string()))
}

fn fhir_json(status: StatusCode, body: Bytes) -> Response<Body> {
    respond(status, FHIR_JSON, full(body))
}
