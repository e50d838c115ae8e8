//! One request (an `access` record joined with its `complete` record) as a BALP-shaped
//! AuditEvent: the mapping table is in the module above.

use base64::Engine as _;
use serde_json::{json, Value};

use super::classify::{classify, Class, Protocol};
use super::{coding, concept, concept_of, dcm, event_id, identifier, network, source, ENTITY_TYPE, OBJECT_ROLE};
use crate::audit::query::Row;
use crate::audit::record::{Access, Client, Clinical, Token};

const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// One request as an AuditEvent; its id is the access record's hash when the row carries its
/// provenance (rows of [`crate::audit::query::for_each_entry`] do), else `seq-N`.
pub fn audit_event(row: &Row) -> Value {
    let a = &row.access;
    let class = classify(a);
    let (outcome, outcome_desc) = outcome(row);
    let hash = row.provenance.as_ref().map_or("", |p| &p.hash);
    let completed = row.provenance.as_ref().and_then(|p| p.completed.as_deref());
    let mut period = json!({ "start": row.time });
    if let Some(end) = completed {
        period["end"] = json!(end);
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": event_id(hash, row.seq),
        "type": event_type(&class),
        "action": class.action,
        "period": period,
        "recorded": completed.unwrap_or(&row.time),
        "outcome": outcome,
        "agent": agents(a, &class),
        "source": source(),
        "entity": entities(a, &class),
    });
    if let Some(subtype) = subtype(&class) {
        event["subtype"] = subtype;
    }
    if let Some(desc) = outcome_desc {
        event["outcomeDesc"] = json!(desc);
    }
    event
}

fn event_type(class: &Class) -> Value {
    match (class.protocol, class.interaction) {
        (Protocol::Fhir, _) => coding(
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
            "Restful Operation",
        ),
        (Protocol::Dicom, "search") => dcm("110112", "Query"),
        (Protocol::Dicom, _) => dcm("110103", "DICOM Instances Accessed"),
    }
}

/// FHIR: the restful-interaction, then the operation's name and the Spine label (codes of no
/// published system, so without one). DICOMweb: none (the `type` says it).
fn subtype(class: &Class) -> Option<Value> {
    if class.protocol != Protocol::Fhir {
        return None;
    }
    let mut codes = vec![coding(
        "http://hl7.org/fhir/restful-interaction",
        class.interaction,
        class.interaction,
    )];
    if let Some(op) = &class.operation {
        codes.push(json!({ "code": op, "display": "FHIR operation" }));
    }
    if let Some(spine) = &class.spine {
        codes.push(json!({ "code": spine, "display": "Ssp-InteractionID" }));
    }
    Some(Value::Array(codes))
}

/// The client system (its organisation and certificate), the server it reached, and the user
/// a token names. Reads make the client the Destination; everything else its Source (BALP).
fn agents(a: &Access, class: &Class) -> Vec<Value> {
    const SOURCE: (&str, &str) = ("110153", "Source Role ID");
    const DESTINATION: (&str, &str) = ("110152", "Destination Role ID");
    let (client_role, server_role) = if class.is_read() {
        (DESTINATION, SOURCE)
    } else {
        (SOURCE, DESTINATION)
    };
    let user = a.clinical.token.as_deref().and_then(user_agent);
    let mut client = json!({
        "type": { "coding": [dcm(client_role.0, client_role.1)] },
        "who": organisation(&a.client),
        // The user, when a token names one, initiated the request through the client.
        "requestor": user.is_none(),
        "network": { "address": a.client.ip, "type": "2" },
    });
    if let Some(subject) = &a.client.subject {
        client["altId"] = json!(subject);
    }
    if let Some(fp) = &a.client.fingerprint {
        // BALP records the security token used as the agent's policy: here the certificate.
        client["policy"] = json!([fp]);
    }
    let host = a.request.host.as_deref().map(strip_port);
    let mut server = json!({
        "type": { "coding": [dcm(server_role.0, server_role.1)] },
        "who": { "display": host.or(a.route.as_deref()).unwrap_or("caregate") },
        "requestor": false,
    });
    if let Some(host) = host {
        server["network"] = network(host);
    }
    let mut agents = vec![client, server];
    agents.extend(user);
    agents
}

fn organisation(c: &Client) -> Value {
    let mut who = match &c.org {
        Some(org) => json!({ "identifier": { "system": ODS, "value": org } }),
        None => json!({}),
    };
    match (&c.org_name, &c.org, &c.subject) {
        (Some(name), _, _) => who["display"] = json!(name),
        (None, None, Some(subject)) => who["display"] = json!(subject),
        (None, None, None) => who["display"] = json!("unidentified client"),
        (None, Some(_), _) => {}
    }
    who
}

/// `host:port` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        Some((h, port)) if h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The practitioner a GP Connect token names: BALP's user agent (information recipient).
fn user_agent(t: &Token) -> Option<Value> {
    if t.practitioner.is_none() && t.practitioner_name.is_none() {
        return None;
    }
    let mut who = json!({});
    if let Some(id) = &t.practitioner {
        who["identifier"] = identifier(id);
    }
    if let Some(name) = &t.practitioner_name {
        who["display"] = json!(name);
    }
    let mut user = json!({
        "type": concept(
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "IRCP",
            "information recipient",
        ),
        "who": who,
        "requestor": true,
    });
    if let Some(name) = &t.practitioner_name {
        user["name"] = json!(name);
    }
    if let Some(role) = &t.role {
        user["role"] = json!([concept_of(role)]);
    }
    if let Some(reason) = &t.reason {
        user["purposeOfUse"] = json!([purpose(reason)]);
    }
    Some(user)
}

/// GP Connect's `reason_for_request`, kept as text; `directcare` is also HL7's TREAT.
fn purpose(reason: &str) -> Value {
    if reason.eq_ignore_ascii_case("directcare") {
        json!({
            "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT", "treatment")],
            "text": reason,
        })
    } else {
        json!({ "text": reason })
    }
}

fn entities(a: &Access, class: &Class) -> Vec<Value> {
    let c = &a.clinical;
    let mut entities = Vec::new();
    for n in every(&c.nhs_numbers, &c.nhs_number) {
        entities.push(patient(c, json!({ "system": NHS_NUMBER, "value": n }), n));
    }
    for id in &c.patient_ids {
        entities.push(patient(c, identifier(id), id));
    }
    if class.protocol == Protocol::Fhir {
        let what = match (&c.fhir_type, &c.fhir_id) {
            (Some(ty), Some(id)) => Some(json!({ "reference": format!("{ty}/{id}") })),
            (Some(ty), None) if class.action == "C" => Some(json!({ "type": ty })),
            _ => None,
        };
        if let Some(what) = what {
            entities.push(json!({
                "what": what,
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
            }));
        }
    }
    for uid in every(&c.study_uids, &c.study_uid) {
        entities.push(json!({
            "what": { "identifier": {
                "type": { "coding": [dcm("110180", "Study Instance UID")] },
                "system": "urn:dicom:uid",
                "value": format!("urn:oid:{uid}"),
            } },
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "3", "Report"),
        }));
    }
    if class.is_query() {
        entities.push(query(a));
    }
    entities.push(transaction(a));
    entities
}

/// Every value of a list field (or its first-format single field), once each, in order.
fn every<'a>(list: &'a [String], first: &'a Option<String>) -> impl Iterator<Item = &'a str> {
    let extra = first.as_deref().filter(|f| !list.iter().any(|x| x == f));
    extra.into_iter().chain(list.iter().map(String::as_str))
}

/// A patient (BALP: type 1 Person, role 1 Patient) by identifier; by reference too when the
/// request addressed that Patient resource.
fn patient(c: &Clinical, identifier: Value, id: &str) -> Value {
    let mut what = json!({ "type": "Patient", "identifier": identifier });
    if c.fhir_type.as_deref() == Some("Patient") && c.fhir_id.as_deref() == Some(id) {
        what["reference"] = json!(format!("Patient/{id}"));
    }
    json!({
        "what": what,
        "type": coding(ENTITY_TYPE, "1", "Person"),
        "role": coding(OBJECT_ROLE, "1", "Patient"),
    })
}

/// BALP's query entity: the raw request, base64, and the query string as sent.
fn query(a: &Access) -> Value {
    let r = &a.request;
    let mut raw = format!("{} {}{}", r.method, r.host.as_deref().unwrap_or(""), r.path);
    let q = r.query.as_deref().filter(|q| !q.is_empty());
    if let Some(q) = q {
        raw.push('?');
        raw.push_str(q);
    }
    let mut entity = json!({
        "type": coding(ENTITY_TYPE, "2", "System Object"),
        "role": coding(OBJECT_ROLE, "24", "Query"),
        "query": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    if let Some(q) = q {
        entity["description"] = json!(q);
    }
    entity
}

/// BALP's transaction entity: caregate's `X-Request-Id`, sent upstream and back to the client.
fn transaction(a: &Access) -> Value {
    let mut entity = json!({
        "what": { "identifier": { "value": a.request_id } },
        "type": coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id"),
    });
    let c = &a.clinical;
    let trace = c.ssp.as_ref().and_then(|s| s.trace_id.as_ref()).or(c.trace_id.as_ref());
    let details: Vec<Value> = [
        ("client X-Request-Id", a.client_request_id.as_ref()),
        ("Ssp-TraceID", trace),
    ]
    .into_iter()
    .filter_map(|(ty, v)| v.map(|v| json!({ "type": ty, "valueString": v })))
    .collect();
    if !details.is_empty() {
        entity["detail"] = Value::Array(details);
    }
    entity
}

/// `outcome` (audit-event-outcome) and `outcomeDesc`:
/// - `0` success;
/// - `4` minor failure: refused by caregate or the upstream with a 4xx, or the client went away;
/// - `8` serious failure: a 5xx, an upstream error or timeout;
/// - `12` major failure: caregate itself could not serve (`audit_unavailable`: it failed
///   closed), or an allowed request never completed (the gateway stopped mid-request).
pub fn outcome(row: &Row) -> (&'static str, Option<String>) {
    let a = &row.access;
    let reason = (a.reason != "allowed").then(|| a.reason.to_string());
    if a.reason == "audit_unavailable" {
        return ("12", reason);
    }
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
        None => (
            "12",
            Some("no completion recorded: the gateway stopped mid-request".into()),
        ),
    }
}
