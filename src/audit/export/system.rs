//! The records that are not requests, for `--all-events`, as ATNA (DICOM PS3.15) codes them:
//!
//! | record | `type` | `subtype` | `action` | `outcome` |
//! | --- | --- | --- | --- | --- |
//! | `tls_rejected` | DCM 110113 Security Alert | DCM 110126 Node Authentication | E | 4, the reason in `outcomeDesc` |
//! | `lifecycle` `start` | DCM 110100 Application Activity | DCM 110120 Application Start | E | 0 |
//! | `lifecycle` `stop` | DCM 110100 Application Activity | DCM 110121 Application Stop | E | 0 |
//! | `lifecycle` `reload` | DCM 110113 Security Alert | DCM 110129 Security Configuration | E | 0 |
//! | `lifecycle` `reload_failed` | DCM 110113 Security Alert | DCM 110129 Security Configuration | E | 4 (the old configuration stays) |
//!
//! A reload swaps certificates, CAs, CRLs and policy: a change of security configuration. The
//! configuration's SHA-256 is an entity of each lifecycle event.

use std::borrow::Cow;
use std::io::Write;

use serde_json::Value;

use super::fhir::{Agent, AuditEvent, Coding, Concept, Entity, Identifier, Network, Period, Reference, Source};
use super::{dcm, event_id, network, OBJECT_ROLE, SYSTEM_OBJECT};
use crate::audit::query::{LifecycleLine, SystemEvent, SystemRecord};
use crate::audit::record::TlsRejected;

/// One `tls_rejected` or `lifecycle` record as an AuditEvent, as JSON.
pub fn system_event(r: &SystemRecord) -> Value {
    serde_json::to_value(event(r)).expect("an AuditEvent is JSON")
}

/// One record as an AuditEvent, written as one line of JSON (without the newline).
pub(super) fn write(r: &SystemRecord, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(out, &event(r)).map_err(std::io::Error::from)
}

/// What differs between the kinds of record.
struct Kind<'a> {
    ty: Coding<'static>,
    subtype: Option<Coding<'static>>,
    outcome: &'static str,
    outcome_desc: &'a str,
    agent: Vec<Agent<'a>>,
    entity: Vec<Entity<'a>>,
}

fn event(r: &SystemRecord) -> AuditEvent<'_> {
    let k = match &r.event {
        SystemEvent::TlsRejected(t) => tls_rejected(t),
        SystemEvent::Lifecycle(l) => lifecycle(l),
    };
    AuditEvent {
        resource_type: "AuditEvent",
        id: event_id(&r.hash, r.seq),
        ty: k.ty,
        subtype: k.subtype.into_iter().collect(),
        action: "E",
        period: Period {
            start: &r.time,
            end: Some(&r.time),
        },
        recorded: &r.time,
        outcome: k.outcome,
        outcome_desc: Some(Cow::Borrowed(k.outcome_desc)),
        agent: k.agent,
        source: Source,
        entity: k.entity,
    }
}

fn tls_rejected(t: &TlsRejected) -> Kind<'_> {
    let c = &t.client;
    let peer = Agent {
        ty: Concept::of(dcm("110153", "Source Role ID")),
        who: Reference::display(c.subject.as_deref().unwrap_or(&c.ip)),
        requestor: true,
        policy: c.fingerprint.as_deref().into_iter().collect(),
        network: Some(Network {
            address: &c.ip,
            ty: "2",
        }),
        ..Agent::default()
    };
    let gateway = Agent {
        ty: Concept::of(dcm("110152", "Destination Role ID")),
        who: Reference::display(t.sni.as_deref().unwrap_or("caregate")),
        requestor: false,
        network: t.sni.as_deref().map(network),
        ..Agent::default()
    };
    let cert = c.fingerprint.as_deref().map(|fp| Entity {
        what: Some(Reference::identifier(Identifier::new(None, fp))),
        ty: Some(SYSTEM_OBJECT),
        role: Some(Coding::new(OBJECT_ROLE, "13", "Security Resource")),
        name: c.subject.as_deref(),
        description: Some("client certificate"),
        ..Entity::default()
    });
    Kind {
        ty: dcm("110113", "Security Alert"),
        subtype: Some(dcm("110126", "Node Authentication")),
        outcome: "4",
        outcome_desc: &t.reason,
        agent: vec![peer, gateway],
        entity: cert.into_iter().collect(),
    }
}

fn lifecycle(l: &LifecycleLine) -> Kind<'_> {
    let activity = dcm("110100", "Application Activity");
    let security = dcm("110113", "Security Alert");
    let configuration = dcm("110129", "Security Configuration");
    let (ty, subtype, outcome) = match l.action.as_str() {
        "start" => (activity, Some(dcm("110120", "Application Start")), "0"),
        "stop" => (activity, Some(dcm("110121", "Application Stop")), "0"),
        "reload" => (security, Some(configuration), "0"),
        "reload_failed" => (security, Some(configuration), "4"),
        _ => (activity, None, "0"),
    };
    let gateway = Agent {
        ty: Concept::of(dcm("110150", "Application")),
        who: Reference {
            identifier: l.instance.as_deref().map(|i| Identifier::new(None, i)),
            display: Some("caregate"),
            ..Reference::default()
        },
        requestor: false,
        ..Agent::default()
    };
    let config = l.config_sha256.as_deref().map(|sha| Entity {
        what: Some(Reference::identifier(Identifier::new(None, format!("sha256:{sha}")))),
        ty: Some(SYSTEM_OBJECT),
        description: Some("configuration"),
        ..Entity::default()
    });
    Kind {
        ty,
        subtype,
        outcome,
        outcome_desc: &l.action,
        agent: vec![gateway],
        entity: config.into_iter().collect(),
    }
}
