//! The Spine Secure Proxy headers (`Ssp-From`, `Ssp-To`, `Ssp-InteractionID`, `Ssp-TraceID`),
//! and whether a GP Connect interaction ID agrees with the request it labels.

use super::fhir::is_read;
use super::Facts;
use crate::audit::record::Ssp;
use http::header::HeaderName;
use http::{HeaderMap, Method};

const SSP_FROM: HeaderName = HeaderName::from_static("ssp-from");
const SSP_TO: HeaderName = HeaderName::from_static("ssp-to");
const SSP_TRACE_ID: HeaderName = HeaderName::from_static("ssp-traceid");
const SSP_INTERACTION_ID: HeaderName = HeaderName::from_static("ssp-interactionid");

/// A header value worth recording: visible ASCII, at most 256 bytes.
pub(super) fn header_text(v: &[u8]) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= 256 && v.iter().all(|b| b.is_ascii_graphic());
    // Checked above: every byte is ASCII.
    ok.then(|| v.iter().map(|&b| b as char).collect())
}

/// The Spine headers into `f` (`clinical.ssp`, `clinical.trace_id`, `spine_interaction`).
pub(super) fn headers(f: &mut Facts, headers: &HeaderMap) {
    let get = |h: &HeaderName| headers.get(h).and_then(|v| header_text(v.as_bytes()));
    let ssp = Ssp {
        from: get(&SSP_FROM),
        to: get(&SSP_TO),
        interaction: get(&SSP_INTERACTION_ID),
        trace_id: get(&SSP_TRACE_ID),
    };
    if ssp == Ssp::default() {
        return;
    }
    f.clinical.trace_id.clone_from(&ssp.trace_id);
    f.spine_interaction.clone_from(&ssp.interaction);
    f.clinical.ssp = Some(Box::new(ssp));
}

/// What a GP Connect interaction ID asks for.
#[derive(Debug, PartialEq)]
enum Asks<'a> {
    /// `rest:{verb}:{resource}`.
    Rest { verb: &'a str, resource: &'a str },
    /// `operation:{name}`.
    Operation(&'a str),
}

/// `urn:nhs:names:services:gpconnect[:{product}]:fhir:rest:{verb}:{resource}[-{version}]` or
/// `…:fhir:operation:{name}[-{version}]`; `None` for anything else (not GP Connect, or a verb
/// this gateway does not know: those are not checked).
fn gp_connect(id: &str) -> Option<Asks<'_>> {
    let rest = id.strip_prefix("urn:nhs:names:services:gpconnect:")?;
    let rest = match rest.split_once(':')? {
        ("fhir", r) => r,
        (_product, r) => r.strip_prefix("fhir:")?,
    };
    let mut parts = rest.split(':');
    let asks = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("rest"), Some(verb), Some(resource), None) => Asks::Rest {
            verb,
            resource: unversioned(resource),
        },
        (Some("operation"), Some(name), None, None) => Asks::Operation(unversioned(name)),
        _ => return None,
    };
    match asks {
        Asks::Rest { verb, .. } if !matches!(verb, "read" | "search" | "create" | "update" | "cancel" | "migrate") => {
            None
        }
        a => Some(a),
    }
}

/// `patient-1` → `patient`.
fn unversioned(s: &str) -> &str {
    match s.rsplit_once('-') {
        Some((name, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => s,
    }
}

/// Whether the `Ssp-InteractionID` agrees with the method and FHIR path it labels: a read is a
/// GET of `Type/id`, a search a GET of `Type` (or a compartment, `Patient/{id}/Type`) or a POST
/// of `Type/_search`, a create a POST of `Type`, an update or cancel a PUT of `Type/id`, an
/// operation a POST (or GET) of `…/$name`; the resource type agrees (case aside) with the path.
/// An ID that is not GP Connect's is not checked. The error names the mismatch, never the
/// input.
pub fn check_spine_interaction(facts: &Facts, method: &Method) -> Result<(), &'static str> {
    let Some(asks) = facts.spine_interaction.as_deref().and_then(gp_connect) else {
        return Ok(());
    };
    let interaction = facts.fhir_interaction.as_deref().unwrap_or("");
    let ty = facts.clinical.fhir_type.as_deref().unwrap_or("");
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match asks {
        Asks::Operation(name) => {
            let op = interaction.strip_prefix('$');
            if !(method == Method::POST || is_read(method)) || !op.is_some_and(|op| same(op, name)) {
                return Err("Ssp-InteractionID names an operation that is not the one the request's path invokes");
            }
        }
        Asks::Rest { verb, resource } if same(resource, "metadata") => {
            if !matches!(verb, "read") || interaction != "capabilities" {
                return Err("Ssp-InteractionID names a read of the capability statement, but the request is not one");
            }
        }
        Asks::Rest { verb, resource } => {
            let (shape_ok, what) = match verb {
                "read" | "migrate" => (
                    is_read(method) && matches!(interaction, "read" | "vread"),
                    "Ssp-InteractionID names a read, but the request is not a GET of a resource by its id",
                ),
                "search" => (
                    matches!(interaction, "search-type" | "search-compartment")
                        && (is_read(method) || method == Method::POST),
                    "Ssp-InteractionID names a search, but the request is not a search",
                ),
                "create" => (
                    method == Method::POST && interaction == "create",
                    "Ssp-InteractionID names a create, but the request is not a POST of a resource type",
                ),
                // `update` and `cancel` (an update whose status is cancelled).
                _ => (
                    method == Method::PUT && interaction == "update" && facts.clinical.fhir_id.is_some(),
                    "Ssp-InteractionID names an update, but the request is not a PUT of a resource by its id",
                ),
            };
            if !shape_ok {
                return Err(what);
            }
            if !resource_agrees(resource, ty, facts.fhir_compartment_type.as_deref(), interaction) {
                return Err("Ssp-InteractionID names another resource type than the request's path");
            }
        }
    }
    Ok(())
}

/// `patient` is `Patient`; a compartment search names both (`patient_appointments` is
/// `Patient/{id}/Appointment`), and a plain resource name may stand for a compartment's target
/// (`documentreference` is `Patient/{id}/DocumentReference`).
fn resource_agrees(resource: &str, ty: &str, target: Option<&str>, interaction: &str) -> bool {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let plural = |a: &str, b: &str| same(a, b) || a.strip_suffix('s').is_some_and(|a| same(a, b));
    if interaction == "search-compartment" {
        let target = target.unwrap_or("");
        return match resource.split_once('_') {
            Some((compartment, of)) => same(compartment, ty) && plural(of, target),
            None => plural(resource, target),
        };
    }
    same(resource, ty)
}
