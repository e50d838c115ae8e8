//! One request (an `access` record joined with its `complete` record) as a BALP-shaped
//! AuditEvent: the mapping table is in the module above.

use std::borrow::Cow;
use std::io::Write;

use base64::Engine as _;
use serde_json::Value;

use super::classify::{classify, Class, Protocol};
use super::fhir::{Agent, AuditEvent, Coding, Concept, Detail, Entity, Identifier, Period, Reference, Source, Text};
use super::{concept_of, dcm, event_id, identifier, network, ENTITY_TYPE, OBJECT_ROLE, SYSTEM_OBJECT};
use crate::audit::query::Row;
use crate::audit::record::{Access, Client, Clinical, Token};

const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const PERSON: Coding<'static> = Coding::new(ENTITY_TYPE, "1", "Person");
const PATIENT: Coding<'static> = Coding::new(OBJECT_ROLE, "1", "Patient");
const REPORT: Coding<'static> = Coding::new(OBJECT_ROLE, "3", "Report");
const DOMAIN_RESOURCE: Coding<'static> = Coding::new(OBJECT_ROLE, "4", "Domain Resource");
const QUERY: Coding<'static> = Coding::new(OBJECT_ROLE, "24", "Query");
const SOURCE_ROLE: Coding<'static> = dcm("110153", "Source Role ID");
const DESTINATION_ROLE: Coding<'static> = dcm("110152", "Destination Role ID");

/// One request as an AuditEvent, as JSON; its id is the access record's hash when the row
/// carries its provenance (rows of [`crate::audit::query::for_each_entry`] do), else `seq-N`.
pub fn audit_event(row: &Row) -> Value {
    let class = classify(&row.access);
    serde_json::to_value(event(row, &class)).expect("an AuditEvent is JSON")
}

/// One request as an AuditEvent, written as one line of JSON (without the newline).
pub(super) fn write(row: &Row, out: &mut impl Write) -> std::io::Result<()> {
    let class = classify(&row.access);
    serde_json::to_writer(out, &event(row, &class)).map_err(std::io::Error::from)
}

fn event<'a>(row: &'a Row, class: &'a Class) -> AuditEvent<'a> {
    let a = &row.access;
    let hash = row.provenance.as_ref().map_or("", |p| &p.hash);
    let completed = row.provenance.as_ref().and_then(|p| p.completed.as_deref());
    let (outcome, outcome_desc) = outcome(row);
    AuditEvent {
        resource_type: "AuditEvent",
        id: event_id(hash, row.seq),
        ty: event_type(class),
        subtype: subtype(class),
        action: class.action,
        period: Period {
            start: &row.time,
            end: completed,
        },
        recorded: completed.unwrap_or(&row.time),
        outcome,
        outcome_desc,
        agent: agents(a, class),
        source: Source,
        entity: entities(a, class),
    }
}

fn event_type(class: &Class) -> Coding<'static> {
    match (class.protocol, class.interaction) {
        (Protocol::Fhir, _) => Coding::new(
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
fn subtype(class: &Class) -> Vec<Coding<'_>> {
    if class.protocol != Protocol::Fhir {
        return Vec::new();
    }
    let mut codes = vec![Coding::new(
        "http://hl7.org/fhir/restful-interaction",
        class.interaction,
        class.interaction,
    )];
    let bare = |code, display| Coding {
        system: None,
        code,
        display: Some(display),
    };
    if let Some(op) = &class.operation {
        codes.push(bare(op, "FHIR operation"));
    }
    if let Some(spine) = &class.spine {
        codes.push(bare(spine, "Ssp-InteractionID"));
    }
    codes
}

/// The client system (its organisation and certificate), the server it reached, and the user
/// a token names. Reads make the client the Destination; everything else its Source (BALP).
fn agents<'a>(a: &'a Access, class: &Class) -> Vec<Agent<'a>> {
    let (client_role, server_role) = if class.is_read() {
        (DESTINATION_ROLE, SOURCE_ROLE)
    } else {
        (SOURCE_ROLE, DESTINATION_ROLE)
    };
    let user = a.clinical.token.as_deref().and_then(user_agent);
    let client = Agent {
        ty: Concept::of(client_role),
        who: organisation(&a.client),
        alt_id: a.client.subject.as_deref(),
        // The user, when a token names one, initiated the request through the client.
        requestor: user.is_none(),
        // BALP records the security token used as the agent's policy: here the certificate.
        policy: a.client.fingerprint.as_deref().into_iter().collect(),
        network: Some(super::fhir::Network {
            address: &a.client.ip,
            ty: "2",
        }),
        ..Agent::default()
    };
    let host = a.request.host.as_deref().map(strip_port);
    let server = Agent {
        ty: Concept::of(server_role),
        who: Reference::display(host.or(a.route.as_deref()).unwrap_or("caregate")),
        requestor: false,
        network: host.map(network),
        ..Agent::default()
    };
    let mut agents = vec![client, server];
    agents.extend(user);
    agents
}

fn organisation(c: &Client) -> Reference<'_> {
    let display = match (&c.org_name, &c.org, &c.subject) {
        (Some(name), _, _) => Some(&**name),
        (None, None, Some(subject)) => Some(&**subject),
        (None, None, None) => Some("unidentified client"),
        (None, Some(_), _) => None,
    };
    Reference {
        identifier: c.org.as_deref().map(|org| Identifier::new(Some(ODS), org)),
        display,
        ..Reference::default()
    }
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
fn user_agent(t: &Token) -> Option<Agent<'_>> {
    if t.practitioner.is_none() && t.practitioner_name.is_none() {
        return None;
    }
    Some(Agent {
        ty: Concept::of(Coding::new(
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "IRCP",
            "information recipient",
        )),
        role: t.role.as_deref().map(concept_of).into_iter().collect(),
        who: Reference {
            identifier: t.practitioner.as_deref().map(identifier),
            display: t.practitioner_name.as_deref(),
            ..Reference::default()
        },
        name: t.practitioner_name.as_deref(),
        requestor: true,
        purpose_of_use: t.reason.as_deref().map(purpose).into_iter().collect(),
        ..Agent::default()
    })
}

/// GP Connect's `reason_for_request`, kept as text; `directcare` is also HL7's TREAT.
fn purpose(reason: &str) -> Concept<'_> {
    let coding = if reason.eq_ignore_ascii_case("directcare") {
        vec![Coding::new(
            "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "TREAT",
            "treatment",
        )]
    } else {
        Vec::new()
    };
    Concept {
        coding,
        text: Some(reason),
    }
}

fn entities<'a>(a: &'a Access, class: &Class) -> Vec<Entity<'a>> {
    let c = &a.clinical;
    let mut entities = Vec::new();
    for n in every(&c.nhs_numbers, &c.nhs_number) {
        entities.push(patient(c, Identifier::new(Some(NHS_NUMBER), n), n));
    }
    for id in &c.patient_ids {
        entities.push(patient(c, identifier(id), id));
    }
    if class.protocol == Protocol::Fhir {
        let what = match (&c.fhir_type, &c.fhir_id) {
            (Some(ty), Some(id)) => Some(Reference {
                reference: Some(Cow::Owned(format!("{ty}/{id}"))),
                ..Reference::default()
            }),
            (Some(ty), None) if class.action == "C" => Some(Reference {
                ty: Some(ty),
                ..Reference::default()
            }),
            _ => None,
        };
        if what.is_some() {
            entities.push(Entity {
                what,
                ty: Some(SYSTEM_OBJECT),
                role: Some(DOMAIN_RESOURCE),
                ..Entity::default()
            });
        }
    }
    for uid in every(&c.study_uids, &c.study_uid) {
        entities.push(Entity {
            what: Some(Reference::identifier(Identifier {
                ty: Some(Concept::of(dcm("110180", "Study Instance UID"))),
                system: Some("urn:dicom:uid"),
                value: Cow::Owned(format!("urn:oid:{uid}")),
            })),
            ty: Some(SYSTEM_OBJECT),
            role: Some(REPORT),
            ..Entity::default()
        });
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
fn patient<'a>(c: &Clinical, identifier: Identifier<'a>, id: &str) -> Entity<'a> {
    let addressed = c.fhir_type.as_deref() == Some("Patient") && c.fhir_id.as_deref() == Some(id);
    Entity {
        what: Some(Reference {
            reference: addressed.then(|| Cow::Owned(format!("Patient/{id}"))),
            ty: Some("Patient"),
            identifier: Some(identifier),
            display: None,
        }),
        ty: Some(PERSON),
        role: Some(PATIENT),
        ..Entity::default()
    }
}

/// BALP's query entity: the raw request, base64, and the query string as sent.
fn query(a: &Access) -> Entity<'_> {
    let r = &a.request;
    let mut raw = format!("{} {}{}", r.method, r.host.as_deref().unwrap_or(""), r.path);
    let q = r.query.as_deref().filter(|q| !q.is_empty());
    if let Some(q) = q {
        raw.push('?');
        raw.push_str(q);
    }
    Entity {
        ty: Some(SYSTEM_OBJECT),
        role: Some(QUERY),
        description: q,
        query: Some(base64::engine::general_purpose::STANDARD.encode(raw)),
        ..Entity::default()
    }
}

/// BALP's transaction entity: caregate's `X-Request-Id`, sent upstream and back to the client.
fn transaction(a: &Access) -> Entity<'_> {
    let c = &a.clinical;
    let trace = c
        .ssp
        .as_ref()
        .and_then(|s| s.trace_id.as_deref())
        .or(c.trace_id.as_deref());
    let detail = [
        ("client X-Request-Id", a.client_request_id.as_deref()),
        ("Ssp-TraceID", trace),
    ]
    .into_iter()
    .filter_map(|(ty, v)| v.map(|value| Detail { ty, value }))
    .collect();
    Entity {
        what: Some(Reference::identifier(Identifier::new(None, &*a.request_id))),
        ty: Some(Coding::new(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")),
        detail,
        ..Entity::default()
    }
}

/// `outcome` (audit-event-outcome) and `outcomeDesc`:
/// - `0` success;
/// - `4` minor failure: refused by caregate or the upstream with a 4xx, or the client went away;
/// - `8` serious failure: a 5xx, an upstream error or timeout;
/// - `12` major failure: caregate itself could not serve (`audit_unavailable`: it failed
///   closed), or an allowed request never completed (the gateway stopped mid-request).
pub fn outcome(row: &Row) -> (&'static str, Option<Text<'_>>) {
    let a = &row.access;
    let reason = (a.reason != "allowed").then(|| Cow::Borrowed(&*a.reason));
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
            let desc = reason.or_else(|| (done.outcome != "ok").then(|| Cow::Borrowed(&*done.outcome)));
            (code, desc)
        }
        None if a.decision == "deny" => ("4", reason),
        None => (
            "12",
            Some(Cow::Borrowed("no completion recorded: the gateway stopped mid-request")),
        ),
    }
}
