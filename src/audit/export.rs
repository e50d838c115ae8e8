//! `caregate audit export --format fhir`: each request as a FHIR R4 `AuditEvent`, one per line
//! (NDJSON, as FHIR bulk data uses), shaped like IHE BALP (Basic Audit Log Patterns) RESTful
//! events so that a national audit repository or any FHIR server can take them in.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use super::query::{for_each_row, Filters, QueryError, Row};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";

/// What `caregate audit export DIR --format fhir [filters]` needs.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub dir: PathBuf,
    pub filters: Filters,
}

/// The command: writes one AuditEvent per matching request; returns how many. Errors (and exit
/// codes) are those of `audit query`.
pub fn run(args: &ExportArgs, out: &mut impl Write) -> Result<u64, QueryError> {
    export_fhir(&args.dir, &args.filters, out)
}

pub fn export_fhir(dir: &Path, filters: &Filters, out: &mut impl Write) -> Result<u64, QueryError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let n = for_each_row(dir, filters, |row| {
        serde_json::to_writer(&mut out, &audit_event(&row)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

/// One request as a BALP-shaped AuditEvent.
pub fn audit_event(row: &Row) -> Value {
    let a = &row.access;
    let c = &a.clinical;
    let method = &*a.request.method;
    let (outcome, outcome_desc) = outcome(row);

    let mut client = json!({
        "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
        "who": {
            "identifier": {
                "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                "value": a.client.org.as_deref().unwrap_or("unknown"),
            },
        },
        "requestor": true,
        "network": { "address": a.client.ip, "type": "2" },
    });
    if let Some(name) = &a.client.org_name {
        client["who"]["display"] = json!(name);
    }
    if let Some(subject) = &a.client.subject {
        // The certificate subject names the calling system within the organisation.
        client["altId"] = json!(subject);
    }
    let mut server = json!({
        "type": { "coding": [{ "system": DCM, "code": "110152", "display": "Destination Role ID" }] },
        "who": { "display": "caregate" },
        "requestor": false,
    });
    if let Some(host) = &a.request.host {
        server["network"] = json!({ "address": host, "type": "1" });
    }
    let mut agents = vec![client, server];
    if let Some(practitioner) = c.token.as_ref().and_then(|t| t.practitioner.as_ref()) {
        // From a GP Connect token: recorded as the user the client system acted for.
        agents.push(json!({
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP", "display": "information recipient",
            }] },
            "who": { "identifier": { "value": practitioner } },
            "requestor": true,
        }));
    }

    let mut entities = Vec::new();
    if let Some(nhs) = &c.nhs_number {
        entities.push(json!({
            "what": { "identifier": { "system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs } },
            "type": { "system": ENTITY_TYPE, "code": "1", "display": "Person" },
            "role": { "system": OBJECT_ROLE, "code": "1", "display": "Patient" },
        }));
    }
    if let (Some(ty), Some(id)) = (&c.fhir_type, &c.fhir_id) {
        entities.push(json!({
            "what": { "reference": format!("{ty}/{id}") },
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            "role": { "system": OBJECT_ROLE, "code": "4", "display": "Domain Resource" },
        }));
    }
    if let Some(study) = &c.study_uid {
        entities.push(json!({
            "what": { "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{study}") } },
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            "role": { "system": OBJECT_ROLE, "code": "3", "display": "Report" },
            "description": "DICOM study",
        }));
    }
    entities.push(json!({
        "what": { "identifier": { "value": a.request_id } },
        "type": { "system": BALP_ENTITY_TYPE, "code": "XrequestId", "display": "X-Request-Id" },
    }));
    if let Some(query) = a.request.query.as_deref().filter(|q| !q.is_empty()) {
        entities.push(json!({
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            "role": { "system": OBJECT_ROLE, "code": "24", "display": "Query" },
            "query": base64::engine::general_purpose::STANDARD.encode(query),
        }));
    }

    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": a.request_id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest", "display": "Restful Operation",
        },
        "subtype": [{
            "system": "http://hl7.org/fhir/restful-interaction",
            "code": interaction(row),
        }],
        "action": action(method),
        "recorded": row.time,
        "outcome": outcome,
        "agent": agents,
        "source": {
            "observer": { "display": "caregate" },
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4", "display": "Application Server",
            }],
        },
        "entity": entities,
    });
    if let Some(desc) = outcome_desc {
        event["outcomeDesc"] = json!(desc);
    }
    event
}

/// C/R/U/D/E from the HTTP method, as BALP maps the RESTful interactions.
fn action(method: &str) -> &'static str {
    match method {
        "POST" => "C",
        "GET" | "HEAD" => "R",
        "PUT" | "PATCH" => "U",
        "DELETE" => "D",
        _ => "E",
    }
}

/// FHIR restful-interaction code: the recorded FHIR interaction when it is one, else from the
/// method (a Spine interaction ID such as `urn:nhs:names:services:…` is not a FHIR code).
fn interaction(row: &Row) -> &str {
    const CODES: &[&str] = &[
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search",
        "search-type",
        "search-system",
        "capabilities",
        "transaction",
        "batch",
        "operation",
    ];
    let c = &row.access.clinical;
    if let Some(i) = c.interaction.as_deref() {
        if let Some(code) = CODES.iter().find(|code| **code == i) {
            return code;
        }
        if i.starts_with('$') {
            return "operation";
        }
    }
    match &*row.access.request.method {
        "GET" | "HEAD" if c.fhir_id.is_some() => "read",
        "GET" | "HEAD" => "search-type",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "operation",
    }
}

/// BALP outcome: 0 success, 4 minor failure (refused, client error, client gone), 8 serious
/// failure (upstream error, timeout, 5xx); the reason goes in outcomeDesc unless it is `allowed`.
fn outcome(row: &Row) -> (&'static str, Option<String>) {
    let a = &row.access;
    let reason = (a.reason != "allowed").then(|| a.reason.to_string());
    match &row.complete {
        Some(done) => {
            let code = if done.status >= 500 || matches!(&*done.outcome, "upstream_error" | "timeout") {
                "8"
            } else if done.status >= 400 || done.outcome == "client_aborted" || a.decision == "deny" {
                "4"
            } else {
                "0"
            };
            let desc = reason.or_else(|| (done.outcome != "ok").then(|| done.outcome.to_string()));
            (code, desc)
        }
        None if a.decision == "deny" => ("4", reason),
        // Allowed but never completed: the gateway stopped mid-request.
        None => ("8", Some("no completion recorded".into())),
    }
}
