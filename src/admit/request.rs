//! What the request itself tells, before any check: the access record's first draft (who sent
//! it, what it asks for), the host it names, and Spine-style provider addressing.

use crate::audit::record;
use crate::identity::ClientIdentity;
use crate::reject::Rejection;
use crate::route;
use http::request::Parts;
use http::{header, Version};
use std::sync::Arc;

/// The access record as far as the request itself tells: who sent it, and what it asks for.
/// [`admit`] and [`decide`] fill in the rest.
pub fn access_record(
    identity: &ClientIdentity,
    ip: &Arc<str>,
    port: u16,
    parts: &Parts,
    request_id: &Arc<str>,
    host: Option<&Arc<str>>,
) -> record::Access {
    record::Access {
        request_id: request_id.clone(),
        client_request_id: None,
        client: record::Client {
            org: identity.org.clone(),
            org_name: None,
            subject: Some(identity.subject.clone()),
            fingerprint: Some(identity.fingerprint.clone()),
            serial: Some(identity.serial.clone()),
            ip: ip.clone(),
            port,
        },
        request: record::Request {
            method: method_word(&parts.method),
            host: host.cloned(),
            path: parts.uri.path().to_string(),
            path_params: Vec::new(),
            query: parts.uri.query().map(str::to_string),
            version: version_str(parts.version).into(),
        },
        route: None,
        class: None,
        decision: "deny".into(),
        reason: "".into(),
        rule: None,
        break_glass: None,
        clinical: Default::default(),
        body_inspected: None,
    }
}

/// `/https://provider.example.nhs.uk/fhir/…` → (Some(provider), `/fhir/…`).
pub(super) fn split_provider(raw: &str) -> Result<(Option<&str>, &str), Rejection> {
    let rest = match raw.strip_prefix("/https://").or_else(|| raw.strip_prefix("/http://")) {
        Some(r) => r,
        None => return Ok((None, raw)),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(Rejection::BadRequest("the provider address in the path is not valid"));
    }
    Ok((Some(host), path))
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host(parts: &Parts) -> Option<Arc<str>> {
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?,
    };
    let host = route::host_of(raw);
    // One allocation for a host already in lower case, as nearly every client sends it.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    })
}

/// The method as records write it: the standard ones without an allocation.
fn method_word(m: &http::Method) -> record::Word {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|s| **s == m.as_str()) {
        Some(s) => (*s).into(),
        None => m.as_str().to_owned().into(),
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn request_host_is_the_authority_or_host_header_in_lower_case_without_port() {
        let host = |req: Request<()>| request_host(&req.into_parts().0).map(|h| h.to_string());
        let with_header = |v: &'static str| Request::builder().uri("/x").header("host", v).body(()).unwrap();
        assert_eq!(
            host(with_header("epr.example.nhs.uk")).as_deref(),
            Some("epr.example.nhs.uk")
        );
        assert_eq!(
            host(with_header("EPR.Example.NHS.uk:443")).as_deref(),
            Some("epr.example.nhs.uk")
        );
        assert_eq!(host(with_header("[::1]:8443")).as_deref(), Some("::1"));
        let absolute = Request::builder().uri("https://PACS.example/x").body(()).unwrap();
        assert_eq!(host(absolute).as_deref(), Some("pacs.example"));
        assert_eq!(host(Request::builder().uri("/x").body(()).unwrap()), None);
    }

    #[test]
    fn a_provider_address_in_the_path_is_split_off_and_checked() {
        assert_eq!(split_provider("/fhir/x").unwrap(), (None, "/fhir/x"));
        assert_eq!(
            split_provider("/https://epr.example.nhs.uk/fhir/x").unwrap(),
            (Some("epr.example.nhs.uk"), "/fhir/x")
        );
        assert_eq!(
            split_provider("/https://epr.example").unwrap(),
            (Some("epr.example"), "/")
        );
        assert!(split_provider("/https:///fhir").is_err());
        assert!(split_provider("/https://a_b@c/fhir").is_err());
    }
}
