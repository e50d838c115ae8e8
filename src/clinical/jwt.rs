//! The GP Connect access token (a JWT in `Authorization: Bearer`): read, never verified.
//!
//! The token says who the *requesting system* claims to act for, why, and (in GP Connect's
//! older versions and Spine-core style tokens) for which patient. The SSP requires these claims
//! to be logged, so they are recorded; and the organisation is compared with the certificate's
//! by policy. Its signature (often `alg: none`) is no evidence of anything, so it is not
//! checked.
//!
//! Two shapes are read: GP Connect's FHIR resources (`requesting_organization` an Organization
//! with identifiers, `requesting_practitioner` a Practitioner with identifiers and a name…),
//! and Spine core's plain strings (`"requesting_organization":
//! "https://fhir.nhs.uk/Id/ods-organization-code|A81001"`, `requesting_system`,
//! `requesting_user`, `requesting_patient`, `scope`).

use super::names;
use super::nhs::{is_nhs_number_system, is_nhs_system, nhs_number_valid};
use super::Facts;
use crate::audit::record::Token;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

/// Tokens past this size are not read: real ones are a few KiB, and the bound keeps the cost of
/// a hostile header small.
const MAX_TOKEN: usize = 16 * 1024;
/// Longest claim value recorded.
const MAX_VALUE: usize = 256;

/// base64url with or without padding: senders differ, and we do not judge the token.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Reads the payload of a `Bearer` JWT from an `Authorization` header value into
/// `clinical.token`, and the patient it names into the NHS numbers or patient ids.
pub(super) fn read(authorization: &[u8], f: &mut Facts) {
    let Some(claims) = claims(authorization) else {
        return;
    };
    let mut t = Token {
        organisation: claims.get("requesting_organization").and_then(organisation),
        reason: claims.get("reason_for_request").and_then(text),
        scope: claims
            .get("requested_scope")
            .or_else(|| claims.get("scope"))
            .and_then(text),
        iat: claims.get("iat").and_then(Value::as_i64),
        exp: claims.get("exp").and_then(Value::as_i64),
        device: claims
            .get("requesting_device")
            .or_else(|| claims.get("requesting_system"))
            .and_then(device),
        ..Token::default()
    };
    for claim in ["requesting_practitioner", "requesting_user"] {
        if let Some(v) = claims.get(claim) {
            practitioner(v, &mut t);
        }
    }
    for claim in ["requested_record", "requesting_patient"] {
        if t.patient.is_none() {
            t.patient = claims.get(claim).and_then(|v| patient(v, f));
        }
    }
    if t != Token::default() {
        f.clinical.token = Some(Box::new(t));
    }
}

/// The claims of a bearer token within bounds, as a JSON object.
fn claims(authorization: &[u8]) -> Option<Map<String, Value>> {
    let token = bearer(authorization)?;
    let mut parts = token.split(|&b| b == b'.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let json = B64.decode(payload).ok()?;
    match serde_json::from_slice(&json).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive), if it is within bounds.
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let scheme = v.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = v[7..].trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

/// A string value that is safe and small enough to record: no control characters, bounded.
fn text(v: &Value) -> Option<String> {
    let s = v.as_str()?.trim();
    let ok = !s.is_empty() && s.len() <= MAX_VALUE && !s.chars().any(char::is_control);
    ok.then(|| s.to_string())
}

/// The identifiers of a FHIR resource in a claim, as `(system, value)` (system `""` if none).
fn identifiers(r: &Map<String, Value>) -> impl Iterator<Item = (String, String)> + '_ {
    let list = match r.get("identifier") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        _ => &[],
    };
    list.iter().filter_map(|i| {
        let value = text(i.get("value")?)?;
        let system = i.get("system").and_then(text).unwrap_or_default();
        Some((system, value))
    })
}

/// `system|value`, or the value alone when there is no system.
fn joined(system: &str, value: &str) -> String {
    if system.is_empty() {
        value.to_string()
    } else {
        format!("{system}|{value}")
    }
}

/// The ODS code: an identifier with the ODS system (current or legacy), or a Spine-core
/// `system|code` string. A bare string is not taken for a code: it could be anything.
fn organisation(v: &Value) -> Option<String> {
    let code = match v {
        Value::Object(o) => {
            identifiers(o)
                .find(|(s, _)| is_nhs_system(s, "ods-organization-code"))?
                .1
        }
        Value::String(_) => {
            let s = text(v)?;
            let (system, code) = s.split_once('|')?;
            if !is_nhs_system(system, "ods-organization-code") || code.trim().is_empty() {
                return None;
            }
            code.trim().to_string()
        }
        _ => return None,
    };
    Some(code.to_ascii_uppercase())
}

/// The practitioner (SDS user id), their role (SDS role profile id) and name. Without an SDS
/// user id, the first other identifier, then the resource id, stands for the practitioner.
fn practitioner(v: &Value, t: &mut Token) {
    match v {
        Value::Object(p) => {
            let mut other = None;
            for (system, value) in identifiers(p) {
                if is_nhs_system(&system, "sds-user-id") {
                    t.practitioner.get_or_insert_with(|| joined(&system, &value));
                } else if is_nhs_system(&system, "sds-role-profile-id") {
                    t.role.get_or_insert_with(|| joined(&system, &value));
                } else if other.is_none() {
                    other = Some(joined(&system, &value));
                }
            }
            if t.practitioner.is_none() {
                t.practitioner = other.or_else(|| p.get("id").and_then(text));
            }
            if t.practitioner_name.is_none() {
                t.practitioner_name = p.get("name").and_then(human_name);
            }
            if t.role.is_none() {
                t.role = job_role(p);
            }
        }
        Value::String(_) => {
            let Some(s) = text(v) else { return };
            let role = s
                .split_once('|')
                .is_some_and(|(sys, _)| is_nhs_system(sys, "sds-role-profile-id"));
            let slot = if role { &mut t.role } else { &mut t.practitioner };
            slot.get_or_insert(s);
        }
        _ => {}
    }
}

/// A FHIR HumanName (STU3: a list of them, `family` a string; DSTU2: one, `family` a list) as
/// `prefix given family`, or its `text`.
fn human_name(v: &Value) -> Option<String> {
    let name = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    if let Some(t) = name.get("text").and_then(text) {
        return Some(t);
    }
    let words = |key: &str| -> Vec<String> {
        match name.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(text).collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let all = [words("prefix"), words("given"), words("family")].concat().join(" ");
    (!all.is_empty() && all.len() <= MAX_VALUE).then_some(all)
}

/// DSTU2 GP Connect: `practitionerRole[].role.coding[]` (an SDS job role), as `system|code`.
fn job_role(p: &Map<String, Value>) -> Option<String> {
    let coding = p.get("practitionerRole")?.get(0)?.get("role")?.get("coding")?.get(0)?;
    let code = text(coding.get("code")?)?;
    Some(joined(&coding.get("system").and_then(text).unwrap_or_default(), &code))
}

/// The requesting device or system: its identifier, else its name or model; or a Spine-core
/// `system|ASID` string.
fn device(v: &Value) -> Option<String> {
    let d = match v {
        Value::Object(d) => d,
        v => return text(v),
    };
    if let Some((system, value)) = identifiers(d).next() {
        return Some(joined(&system, &value));
    }
    let device_name = d.get("deviceName").and_then(|n| n.get(0)).and_then(|n| n.get("name"));
    [device_name, d.get("name"), d.get("model")]
        .into_iter()
        .flatten()
        .find_map(text)
}

/// The patient the token names (`requested_record`, a Patient; `requesting_patient`, a
/// `system|value` string): recorded with the request's patients. The token is recorded, never
/// judged, so a bad check digit here refuses nothing.
fn patient(v: &Value, f: &mut Facts) -> Option<String> {
    let (system, value) = match v {
        Value::Object(p) => {
            if p.get("resourceType")
                .and_then(Value::as_str)
                .is_some_and(|r| r != "Patient")
            {
                return None;
            }
            let mut ids: Vec<_> = identifiers(p).collect();
            // The NHS number first, when there is one.
            ids.sort_by_key(|(s, _)| !is_nhs_number_system(s));
            ids.into_iter().next()?
        }
        Value::String(_) => {
            let s = text(v)?;
            match s.split_once('|') {
                Some((sys, val)) => (sys.to_string(), val.to_string()),
                None => (String::new(), s),
            }
        }
        _ => return None,
    };
    let nhs = (system.is_empty() || is_nhs_number_system(&system)) && nhs_number_valid(&value);
    let said = if nhs { value } else { joined(&system, &value) };
    if nhs {
        names::nhs(f, &said);
    } else {
        names::patient(f, &said);
    }
    Some(said)
}
