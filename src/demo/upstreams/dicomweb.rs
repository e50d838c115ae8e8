//! The sample DICOMweb PACS: QIDO-RS study search (all, or by `PatientID`) and WADO-RS
//! retrieval of a whole study as generated multipart DICOM.

use super::shared::{fill, full, generated, query_param, respond, Body, Parts};
use super::{INSTANCE_BYTES, PATIENTS, STUDIES};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

const BOUNDARY: &str = "caregate-sample-dicom-boundary";

/// Answers a request to the PACS other than `/bytes/<n>` and `/echo`.
pub(super) fn handle(req: &Request<Incoming>, pattern: &Bytes) -> Response<Body> {
    let not_found = || dicom_json(StatusCode::NOT_FOUND, json!({"error": "not found"}));
    if req.method() != Method::GET {
        return dicom_json(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "GET only"}));
    }
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/dicomweb/studies") else {
        return not_found();
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        // QIDO-RS: all studies, or those of one patient (?PatientID=).
        let query = req.uri().query().unwrap_or("");
        let patient = query_param(query, "PatientID").or_else(|| query_param(query, "00100020"));
        let studies: Vec<Value> = STUDIES
            .iter()
            .filter(|s| patient.as_deref().is_none_or(|p| p == s.1))
            .map(study_json)
            .collect();
        return dicom_json(StatusCode::OK, Value::Array(studies));
    }
    let uid = rest.trim_start_matches('/');
    match STUDIES.iter().find(|s| s.0 == uid) {
        // WADO-RS: the whole study as multipart/related application/dicom.
        Some(s) => {
            let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
            let (len, parts) = study_body(s.4, pattern.clone());
            generated(len, parts, &content_type)
        }
        None => not_found(),
    }
}

fn study_json(s: &(&str, &str, &str, &str, u64)) -> Value {
    let (uid, nhs, description, modality, instances) = *s;
    let name = PATIENTS
        .iter()
        .find(|p| p.0 == nhs)
        .map(|p| format!("{}^{}", p.1.to_uppercase(), p.2))
        .unwrap_or_default();
    let tag = |vr: &str, v: Value| json!({"vr": vr, "Value": [v]});
    json!({
        "00080020": tag("DA", json!("20240501")),
        "00080050": tag("SH", json!(format!("ACC{}", &uid[uid.len() - 1..]))),
        "00080061": tag("CS", json!(modality)),
        "00081030": tag("LO", json!(description)),
        "00100010": tag("PN", json!({"Alphabetic": name})),
        "00100020": tag("LO", json!(nhs)),
        "0020000D": tag("UI", json!(uid)),
        "00201206": tag("IS", json!(1)),
        "00201208": tag("IS", json!(instances)),
    })
}

/// The multipart body of a study of `instances` generated instances, and its exact length.
pub(in crate::demo) fn study_body(instances: u64, pattern: Bytes) -> (u64, Parts) {
    let head = Bytes::from(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"));
    // DICOM Part 10: a 128-byte preamble and "DICM"; the rest is filler.
    let mut pre = vec![0u8; 128];
    pre.extend_from_slice(b"DICM");
    let pre = Bytes::from(pre);
    let tail = Bytes::from_static(b"\r\n");
    let end = Bytes::from(format!("--{BOUNDARY}--\r\n"));
    let per = head.len() as u64 + INSTANCE_BYTES + tail.len() as u64;
    let len = instances * per + end.len() as u64;
    let filler = INSTANCE_BYTES - pre.len() as u64;
    let parts = (0..instances)
        .flat_map(move |_| {
            [head.clone(), pre.clone()]
                .into_iter()
                .chain(fill(filler, &pattern))
                .chain(std::iter::once(tail.clone()))
        })
        .chain(std::iter::once(end));
    (len, Box::new(parts))
}

fn dicom_json(status: StatusCode, v: Value) -> Response<Body> {
    respond(status, "application/dicom+json", full(Bytes::from(v.to_string())))
}
