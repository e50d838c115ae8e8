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

use serde_json::{json, Value};

use super::{dcm, event_id, network, source, ENTITY_TYPE, OBJECT_ROLE};
use crate::audit::query::{LifecycleLine, SystemEvent, SystemRecord};
use crate::audit::record::TlsRejected;

/// One `tls_rejected` or `lifecycle` record as an AuditEvent.
pub fn system_event(r: &SystemRecord) -> Value {
    let mut event = match &r.event {
        SystemEvent::TlsRejected(t) => tls_rejected(t),
        SystemEvent::Lifecycle(l) => lifecycle(l),
    };
    event["resourceType"] = json!("AuditEvent");
    event["id"] = json!(event_id(&r.hash, r.seq));
    event["action"] = json!("E");
    event["period"] = json!({ "start": r.time, "end": r.time });
    event["recorded"] = json!(r.time);
    event["source"] = source();
    event
}

fn tls_rejected(t: &TlsRejected) -> Value {
    let c = &t.client;
    let mut peer = json!({
        "type": { "coding": [dcm("110153", "Source Role ID")] },
        "who": { "display": c.subject.as_deref().unwrap_or(&c.ip) },
        "requestor": true,
        "network": { "address": c.ip, "type": "2" },
    });
    if let Some(fp) = &c.fingerprint {
        peer["policy"] = json!([fp]);
    }
    let mut gateway = json!({
        "type": { "coding": [dcm("110152", "Destination Role ID")] },
        "who": { "display": t.sni.as_deref().unwrap_or("caregate") },
        "requestor": false,
    });
    if let Some(sni) = &t.sni {
        gateway["network"] = network(sni);
    }
    let mut event = json!({
        "type": dcm("110113", "Security Alert"),
        "subtype": [dcm("110126", "Node Authentication")],
        "outcome": "4",
        "outcomeDesc": t.reason,
        "agent": [peer, gateway],
    });
    if let Some(fp) = &c.fingerprint {
        let mut cert = json!({
            "what": { "identifier": { "value": fp } },
            "type": super::coding(ENTITY_TYPE, "2", "System Object"),
            "role": super::coding(OBJECT_ROLE, "13", "Security Resource"),
            "description": "client certificate",
        });
        if let Some(subject) = &c.subject {
            cert["name"] = json!(subject);
        }
        event["entity"] = json!([cert]);
    }
    event
}

fn lifecycle(l: &LifecycleLine) -> Value {
    let (ty, subtype, outcome) = match l.action.as_str() {
        "start" => (
            dcm("110100", "Application Activity"),
            Some(dcm("110120", "Application Start")),
            "0",
        ),
        "stop" => (
            dcm("110100", "Application Activity"),
            Some(dcm("110121", "Application Stop")),
            "0",
        ),
        "reload" => (
            dcm("110113", "Security Alert"),
            Some(dcm("110129", "Security Configuration")),
            "0",
        ),
        "reload_failed" => (
            dcm("110113", "Security Alert"),
            Some(dcm("110129", "Security Configuration")),
            "4",
        ),
        _ => (dcm("110100", "Application Activity"), None, "0"),
    };
    let mut who = json!({ "display": "caregate" });
    if let Some(instance) = &l.instance {
        who["identifier"] = json!({ "value": instance });
    }
    let mut event = json!({
        "type": ty,
        "outcome": outcome,
        "outcomeDesc": l.action,
        "agent": [{
            "type": { "coding": [dcm("110150", "Application")] },
            "who": who,
            "requestor": false,
        }],
    });
    if let Some(s) = subtype {
        event["subtype"] = json!([s]);
    }
    if let Some(sha) = &l.config_sha256 {
        event["entity"] = json!([{
            "what": { "identifier": { "value": format!("sha256:{sha}") } },
            "type": super::coding(ENTITY_TYPE, "2", "System Object"),
            "description": "configuration",
        }]);
    }
    event
}
