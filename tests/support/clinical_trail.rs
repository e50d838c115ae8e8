//! A clinic's day in the record format of SPEC §8 (several patients per record, client request
//! ids that collide, DICOM studies, GP Connect tokens and Spine headers), written from the SPEC
//! by hand through the independent generator (trail_gen.rs), for the query and export tests.

#![allow(dead_code)] // Each test file uses a different part.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::trail_gen::Gen;

pub const STUDY_A: &str = "1.2.826.0.1.3680043.2.1125.1";
pub const STUDY_B: &str = "1.2.826.0.1.3680043.2.1125.2";
pub const GPC_GET_RECORD: &str = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
pub const GPC_READ_PATIENT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1";
pub const SDS_USER: &str = "https://fhir.nhs.uk/Id/sds-user-id";
pub const MRN: &str = "https://trust.example.nhs.uk/Id/mrn";

/// One access record: `base` members over the defaults (org A81001, GET, allowed on epr-fhir).
pub fn access(g: &mut Gen<'_>, id: &str, base: Value) {
    let mut r = json!({
        "request_id": id,
        "client": {
            "org": "A81001", "org_name": "Org A81001",
            "subject": "CN=system.a81001.nhs.uk,O=A81001",
            "fingerprint": format!("sha256:{}", "ab".repeat(32)),
            "serial": "01ab", "ip": "10.0.0.7", "port": 51234,
        },
        "request": { "method": "GET", "host": "epr.example.nhs.uk", "path": "/", "version": "HTTP/1.1" },
        "route": "epr-fhir", "class": "standard", "decision": "allow", "reason": "allowed",
        "rule": "epr-fhir/allow[0]",
    });
    merge(&mut r, base);
    append(g, "access", &r);
}

pub fn complete(g: &mut Gen<'_>, id: &str, status: u16, outcome: &str) {
    let fields = json!({
        "request_id": id, "status": status, "bytes_in": 10, "bytes_out": 1234,
        "duration_ms": 12, "outcome": outcome,
    });
    append(g, "complete", &fields);
}

pub fn lifecycle(g: &mut Gen<'_>, action: &str) {
    let fields = json!({ "action": action, "config_sha256": "c".repeat(64), "instance": "gw-a" });
    append(g, "lifecycle", &fields);
}

/// Members of `fields` after the writer's `seq`, `time`, `event`.
fn append(g: &mut Gen<'_>, event: &str, fields: &Value) {
    let text = serde_json::to_string(fields).unwrap();
    let inner = &text[1..text.len() - 1];
    g.append(event, &format!(",{inner}"));
}

/// Deep merge: objects member by member, `null` removes a member (the writer leaves out what
/// it does not know), anything else replaces it.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                } else {
                    merge(a.entry(k).or_insert(Value::Object(Map::new())), v);
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Every request of [`clinic_day`]: what the export must make of it.
pub struct Expect {
    pub id: &'static str,
    pub action: &'static str,
    /// The restful-interaction code; `""` for DICOMweb (`type` DCM 110112 for a search,
    /// 110103 otherwise, and no subtype).
    pub subtype: &'static str,
    /// Whether the client is the Destination (reads) or the Source (everything else).
    pub client_is_destination: bool,
    pub outcome: &'static str,
    /// Every patient the request named: NHS numbers, then other ids.
    pub patients: &'static [&'static str],
    pub studies: &'static [&'static str],
}

const fn x(
    id: &'static str,
    action: &'static str,
    subtype: &'static str,
    client_is_destination: bool,
    outcome: &'static str,
    patients: &'static [&'static str],
    studies: &'static [&'static str],
) -> Expect {
    Expect {
        id,
        action,
        subtype,
        client_is_destination,
        outcome,
        patients,
        studies,
    }
}

const N34: &str = "9990000034";
const N42: &str = "9990000042";

/// In completion order, as query and export emit them.
pub const EXPECT: &[Expect] = &[
    x("pat-read", "R", "read", true, "0", &[N42], &[]),
    x(
        "obs-search",
        "E",
        "search-type",
        false,
        "0",
        &[N34, N42, "https://trust.example.nhs.uk/Id/mrn|MRN123"],
        &[],
    ),
    x("gpc-1", "E", "operation", false, "0", &[N34], &[]),
    x("qido", "E", "", false, "0", &["PAT-77"], &[STUDY_A, STUDY_B]),
    x("wado", "R", "", true, "0", &[], &[STUDY_A]),
    x("stow", "C", "", false, "0", &["PAT-77"], &[STUDY_B]),
    x("obs-create", "C", "create", false, "0", &[N34, N42], &[]),
    x("obs-patch", "U", "patch", false, "4", &[], &[]),
    x("obs-update", "U", "update", false, "0", &[N34], &[]),
    x("obs-delete", "D", "delete", false, "4", &[N34], &[]),
    x("vread", "R", "vread", true, "0", &[N34], &[]),
    x("history", "R", "history-instance", true, "0", &[N34], &[]),
    x("everything", "E", "operation", false, "8", &[N34], &[]),
    x("spine-read", "R", "read", true, "8", &[N42], &[]),
    x("limited", "E", "search-type", false, "4", &[], &[]),
    x("unknown", "R", "read", true, "4", &[N34], &[]),
    x("no-audit", "R", "read", true, "12", &[N34], &[]),
    x("legacy", "R", "read", true, "0", &[N34], &[]),
    x("crashed", "E", "search-type", false, "12", &[N42], &[]),
];

/// The day: every request of [`EXPECT`], in an interleaved order, two refused handshakes and
/// the gateway's start, reload, failed reload, crash, restart and stop.
pub fn clinic_day(dir: &Path) {
    let key = super::trail_gen::new_key();
    let mut g = Gen::new(dir, Some((&key, super::trail_gen::key_id(&key))), 16);
    g.checkpoint_every = 20;
    lifecycle(&mut g, "start");
    // GP Connect: a POST that reads the structured record, with a token naming the clinician.
    access(
        &mut g,
        "gpc-1",
        json!({
            "client_request_id": "cli-1",
            "request": { "method": "POST", "path": "/B82617/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord" },
            "route": "gpc",
            "clinical": {
                "fhir_type": "Patient", "nhs_number": "9990000034", "nhs_numbers": ["9990000034"],
                "interaction": GPC_GET_RECORD, "trace_id": "trace-1",
                "ssp": { "from": "200000000359", "to": "918999198993", "interaction": GPC_GET_RECORD, "trace_id": "trace-1" },
                "token": {
                    "practitioner": format!("{SDS_USER}|G13579135"), "practitioner_name": "Dr Jane Smith",
                    "role": "https://fhir.nhs.uk/Id/sds-role-profile-id|200000000117",
                    "organisation": "A81001", "reason": "directcare", "scope": "patient/*.read",
                    "patient": "9990000034", "iat": 1795300000, "exp": 1795300300,
                },
            },
            "body_inspected": true,
        }),
    );
    // A search naming two NHS numbers and a trust MRN; its client id collides with pat-read's.
    access(
        &mut g,
        "obs-search",
        json!({
            "client_request_id": "dup",
            "request": { "path": "/fhir/Observation", "query": "patient=9990000034,9990000042&subject.identifier=https://trust.example.nhs.uk/Id/mrn|MRN123" },
            "clinical": {
                "fhir_type": "Observation", "interaction": "search-type",
                "nhs_number": "9990000034", "nhs_numbers": ["9990000034", "9990000042"],
                "patient_ids": [format!("{MRN}|MRN123")],
            },
        }),
    );
    access(
        &mut g,
        "pat-read",
        json!({
            "client_request_id": "dup",
            "request": { "path": "/fhir/Patient/9990000042" },
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000042", "interaction": "read",
                          "nhs_number": "9990000042", "nhs_numbers": ["9990000042"] },
        }),
    );
    complete(&mut g, "pat-read", 200, "ok");
    complete(&mut g, "obs-search", 200, "ok");
    complete(&mut g, "gpc-1", 200, "ok");
    g.append(
        "tls_rejected",
        r#","client":{"ip":"10.9.9.9","port":40000},"sni":"gw.example.nhs.uk","reason":"no_certificate""#,
    );
    // DICOMweb: a QIDO search over two studies for a PACS patient id, a retrieve, a store.
    access(
        &mut g,
        "qido",
        json!({
            "client": { "org": "RX1", "org_name": "Org RX1" },
            "request": { "host": "pacs.example.nhs.uk:8443", "path": "/dicomweb/studies", "query": format!("PatientID=PAT-77&StudyInstanceUID={STUDY_A},{STUDY_B}") },
            "route": "pacs",
            "clinical": { "patient_ids": ["PAT-77"], "study_uid": STUDY_A, "study_uids": [STUDY_A, STUDY_B] },
        }),
    );
    complete(&mut g, "qido", 200, "ok");
    access(
        &mut g,
        "wado",
        json!({
            "client": { "org": "RX1", "org_name": "Org RX1" },
            "request": { "host": "10.1.2.3", "path": format!("/dicomweb/studies/{STUDY_A}") },
            "route": "pacs",
            "clinical": { "study_uid": STUDY_A },
        }),
    );
    access(
        &mut g,
        "stow",
        json!({
            "client": { "org": "RX1", "org_name": "Org RX1" },
            "request": { "method": "POST", "path": "/dicomweb/studies" },
            "route": "pacs",
            "clinical": { "patient_ids": ["PAT-77"], "study_uid": STUDY_B, "study_uids": [STUDY_B] },
            "body_inspected": true,
        }),
    );
    complete(&mut g, "wado", 200, "ok");
    complete(&mut g, "stow", 200, "ok");
    // Writes: a body naming two patients, an update, a refused patch and delete.
    access(
        &mut g,
        "obs-create",
        json!({
            "client_request_id": "cli-create",
            "request": { "method": "POST", "path": "/fhir/Observation" },
            "clinical": { "fhir_type": "Observation", "interaction": "create",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034", "9990000042"] },
            "body_inspected": true,
        }),
    );
    complete(&mut g, "obs-create", 201, "ok");
    access(
        &mut g,
        "obs-update",
        json!({
            "request": { "method": "PUT", "path": "/fhir/Observation/obs-9" },
            "clinical": { "fhir_type": "Observation", "fhir_id": "obs-9", "interaction": "update",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
            "body_inspected": true,
        }),
    );
    access(
        &mut g,
        "obs-patch",
        json!({
            "request": { "method": "PATCH", "path": "/fhir/Observation/obs-9" },
            "decision": "deny", "reason": "body_too_large", "rule": null,
            "clinical": { "fhir_type": "Observation", "fhir_id": "obs-9", "interaction": "patch" },
            "body_inspected": false,
        }),
    );
    complete(&mut g, "obs-patch", 413, "ok");
    complete(&mut g, "obs-update", 200, "ok");
    access(
        &mut g,
        "obs-delete",
        json!({
            "request": { "method": "DELETE", "path": "/fhir/Observation/obs-9" },
            "decision": "deny", "reason": "not_allowed", "rule": null,
            "clinical": { "fhir_type": "Observation", "fhir_id": "obs-9", "interaction": "delete",
                          "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "obs-delete", 403, "ok");
    lifecycle(&mut g, "reload");
    access(
        &mut g,
        "vread",
        json!({
            "request": { "path": "/fhir/Patient/9990000034/_history/2" },
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "vread",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "vread", 200, "ok");
    access(
        &mut g,
        "history",
        json!({
            "request": { "path": "/fhir/Patient/9990000034/_history" },
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "history-instance",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "history", 200, "ok");
    access(
        &mut g,
        "everything",
        json!({
            "request": { "path": "/fhir/Patient/9990000034/$everything", "query": "_count=10" },
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "$everything",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "everything", 502, "upstream_error");
    // A Spine-labelled read whose token names a practitioner without a system or a name.
    access(
        &mut g,
        "spine-read",
        json!({
            "client_request_id": "cli-spine",
            "request": { "path": "/gpc/fhir/Patient/9990000042" },
            "route": "gpc",
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000042", "interaction": GPC_READ_PATIENT,
                          "nhs_number": "9990000042", "nhs_numbers": ["9990000042"],
                          "ssp": { "interaction": GPC_READ_PATIENT, "trace_id": "trace-2" },
                          "token": { "practitioner": "G22222222", "reason": "secondaryuses" } },
        }),
    );
    complete(&mut g, "spine-read", 504, "timeout");
    lifecycle(&mut g, "reload_failed");
    access(
        &mut g,
        "limited",
        json!({
            "request": { "path": "/fhir/Observation" },
            "decision": "deny", "reason": "rate_limited",
            "clinical": { "fhir_type": "Observation", "interaction": "search-type" },
        }),
    );
    complete(&mut g, "limited", 429, "ok");
    access(
        &mut g,
        "unknown",
        json!({
            "client": { "org": null, "org_name": null },
            "request": { "path": "/fhir/Patient/9990000034" },
            "decision": "deny", "reason": "unknown_org", "route": null, "rule": null,
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "read",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "unknown", 403, "ok");
    access(
        &mut g,
        "no-audit",
        json!({
            "request": { "path": "/fhir/Patient/9990000034" },
            "decision": "deny", "reason": "audit_unavailable",
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "read",
                          "nhs_number": "9990000034", "nhs_numbers": ["9990000034"] },
        }),
    );
    complete(&mut g, "no-audit", 503, "ok");
    // The first record format: `nhs_number` alone.
    access(
        &mut g,
        "legacy",
        json!({
            "request": { "path": "/fhir/Patient/9990000034" },
            "clinical": { "fhir_type": "Patient", "fhir_id": "9990000034", "interaction": "read",
                          "nhs_number": "9990000034" },
        }),
    );
    complete(&mut g, "legacy", 200, "ok");
    g.append(
        "tls_rejected",
        r#","client":{"ip":"10.9.9.8","port":40001,"subject":"CN=old.example,O=X","fingerprint":"sha256:0102"},"sni":"gw.example.nhs.uk","reason":"expired""#,
    );
    // A crash: `crashed` never completes, the restart shows it never will.
    access(
        &mut g,
        "crashed",
        json!({
            "request": { "path": "/fhir/Observation", "query": "patient=9990000042" },
            "clinical": { "fhir_type": "Observation", "interaction": "search-type",
                          "nhs_number": "9990000042", "nhs_numbers": ["9990000042"] },
        }),
    );
    lifecycle(&mut g, "start");
    lifecycle(&mut g, "stop");
    g.finish(true);
}
