//! Every header the gateway removes or sets, both ways, in one place (SPEC §4):
//!
//! - to the upstream: hop-by-hop headers (and those `Connection` names), any client-sent copy
//!   of the identity headers, and the override headers frameworks honour (`X-Forwarded-Host`,
//!   `X-Original-URL`, `X-HTTP-Method-Override`, …) are removed, then caregate sets `X-Client-Org`,
//!   `X-Client-Cert-Subject`, `X-Client-Cert-Fingerprint`, `Client-Cert`, `X-Forwarded-For`,
//!   `X-Forwarded-Proto`, `Forwarded`, `X-Request-Id`, and `Host` where HTTP/2 gave only
//!   `:authority`;
//! - to the client: hop-by-hop headers removed, `X-Request-Id` set.
//!
//! Break-glass: a client's `X-Break-Glass-Reason` is removed like an identity header, and put
//! back (as checked and recorded) only on a request that break-glass let through; its response
//! gets `X-Break-Glass: used`.
//!
//! The headers a request is refused for (framing, the Spine headers) are checked in
//! [`crate::framing`] and [`crate::admit`].

use crate::identity::ClientIdentity;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::sync::{Mutex, PoisonError};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1). Names are
/// constants, not strings, so that the hot path does not parse them once per request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_CLIENT_ORG: HeaderName = HeaderName::from_static("x-client-org");
const X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
const X_CLIENT_CERT_FINGERPRINT: HeaderName = HeaderName::from_static("x-client-cert-fingerprint");
const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_BREAK_GLASS_REASON: HeaderName = HeaderName::from_static(crate::admit::BREAK_GLASS_REASON);
const X_BREAK_GLASS: HeaderName = HeaderName::from_static("x-break-glass");

/// Headers only caregate may set, and headers upstream frameworks honour as overrides of what
/// caregate checked and recorded (the host, the client's address, the path, the method, the
/// client certificate): any client-sent copy is removed.
const IDENTITY_HEADERS: [HeaderName; 21] = [
    X_CLIENT_ORG,
    X_CLIENT_CERT_SUBJECT,
    X_CLIENT_CERT_FINGERPRINT,
    CLIENT_CERT,
    HeaderName::from_static("client-cert-chain"),
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    header::FORWARDED,
    X_REQUEST_ID,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-forwarded-client-cert"),
    // Passes only when break-glass was used: see `break_glass_upstream`.
    X_BREAK_GLASS_REASON,
];

/// The `X-Request-Id` header for `request_id`. Marked sensitive, which HTTP/2 encodes as a
/// literal never indexed: every request's id is new, so indexing it only churns the HPACK
/// table, and every later lookup of the name walks all the ids still in it.
pub fn request_id_header(request_id: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(request_id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    v.set_sensitive(true);
    v
}

/// Prepares a request's headers for the upstream: hygiene, then the identity headers of SPEC
/// §4, then `Host` from the target's authority if the client sent none (HTTP/2).
pub fn to_upstream(
    parts: &mut http::request::Parts,
    who: &ClientIdentity,
    via: &Forwarding,
    request_id: &HeaderValue,
    host: Option<&str>,
) {
    let headers = &mut parts.headers;
    strip(headers, &IDENTITY_HEADERS);
    let prebuilt = [
        (X_CLIENT_ORG, who.headers.org.clone()),
        (X_CLIENT_CERT_SUBJECT, who.headers.subject.clone()),
        (X_CLIENT_CERT_FINGERPRINT, who.headers.fingerprint.clone()),
        (CLIENT_CERT, who.headers.client_cert.clone()),
        (X_FORWARDED_FOR, via.xff.clone()),
        (header::FORWARDED, via.forwarded(host)),
    ];
    for (name, value) in prebuilt {
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(X_REQUEST_ID, request_id.clone());
    if !headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, v);
        }
    }
}

/// The client's `X-Break-Glass-Reason`, to send on with a request that break-glass let through:
/// the upstream's own audit can then say it was an emergency access. Taken before
/// [`to_upstream`], which removes it.
pub fn break_glass_reason(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(X_BREAK_GLASS_REASON).cloned()
}

/// Puts back the reason [`break_glass_reason`] took, after [`to_upstream`].
pub fn break_glass_upstream(headers: &mut HeaderMap, reason: HeaderValue) {
    headers.insert(X_BREAK_GLASS_REASON, reason);
}

/// `X-Break-Glass: used` on the response to a request that break-glass let through (whatever
/// its status), so the client's system can show the user that this access is under review.
pub fn break_glass_used(headers: &mut HeaderMap) {
    headers.insert(X_BREAK_GLASS, HeaderValue::from_static("used"));
}

/// Prepares an upstream response's headers for the client: hygiene, and caregate's request id.
pub fn to_client(headers: &mut HeaderMap, request_id: HeaderValue) {
    strip(headers, &[]);
    headers.insert(X_REQUEST_ID, request_id);
}

/// Sets caregate's request id on a response the gateway made itself (a refusal), whose other
/// headers are its own: `Connection: close` after a malformed request must stay.
pub fn on_refusal(headers: &mut HeaderMap, request_id: HeaderValue) {
    headers.insert(X_REQUEST_ID, request_id);
}

/// Whether a request trailer may go on: never a name the gateway sets, checks or strips from
/// the head (identity and override headers, hop-by-hop ones, `Ssp-*`, `Host`, `Authorization`,
/// framing), which a trailer could otherwise forge after the head was checked. One rule for
/// HTTP/1 and HTTP/2.
fn trailer_allowed(name: &HeaderName) -> bool {
    const CHECKED: [HeaderName; 6] = [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TRAILER,
    ];
    !(HOP_BY_HOP.contains(name)
        || IDENTITY_HEADERS.contains(name)
        || CHECKED.contains(name)
        || name.as_str().starts_with("ssp-"))
}

pin_project_lite::pin_project! {
    /// A request body on its way upstream, its trailers cleaned of names that must not pass.
    pub struct CleanTrailers<B> {
        #[pin]
        inner: B,
    }
}

impl<B> CleanTrailers<B> {
    pub fn new(inner: B) -> Self {
        CleanTrailers { inner }
    }
}

impl<B: http_body::Body> http_body::Body for CleanTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = self.project().inner.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(mut frame))) = polled {
            if let Some(trailers) = frame.trailers_mut() {
                let doomed: Vec<HeaderName> = trailers.keys().filter(|n| !trailer_allowed(n)).cloned().collect();
                for name in doomed {
                    trailers.remove(name);
                }
            }
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Removes hop-by-hop headers, those the `Connection` header names, and `also`.
///
/// One look at the names present first: most messages carry none of these, and removing a
/// name that is not there still costs a hash and a probe (sixteen per request, before).
fn strip(headers: &mut HeaderMap, also: &[HeaderName]) {
    let doomed = |n: &HeaderName| HOP_BY_HOP.contains(n) || also.contains(n);
    if !headers.keys().any(doomed) {
        return;
    }
    let mut names: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.extend(headers.keys().filter(|n| doomed(n)).cloned());
    for n in names {
        headers.remove(n);
    }
}

/// The forwarding headers of one client connection, made when it opens: its address does not
/// change, and the `Host` its requests name seldom does, so most requests only clone them.
pub struct Forwarding {
    xff: Option<HeaderValue>,
    /// The RFC 7239 node: an IPv6 address is quoted and bracketed.
    node: String,
    without_host: Option<HeaderValue>,
    /// `Forwarded` for the last host seen, and that host.
    with_host: Mutex<Option<(Box<str>, HeaderValue)>>,
}

impl Forwarding {
    pub fn new(ip: &str) -> Forwarding {
        let node = if ip.contains(':') {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        Forwarding {
            xff: HeaderValue::from_str(ip).ok(),
            without_host: HeaderValue::from_str(&format!("for={node};proto=https")).ok(),
            node,
            with_host: Mutex::new(None),
        }
    }

    fn forwarded(&self, host: Option<&str>) -> Option<HeaderValue> {
        let host = match host {
            Some(h) if h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') => h,
            _ => return self.without_host.clone(),
        };
        let mut last = self.with_host.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((h, v)) = last.as_ref() {
            if **h == *host {
                return Some(v.clone());
            }
        }
        let v = HeaderValue::from_str(&format!("for={};host=\"{host}\";proto=https", self.node)).ok()?;
        *last = Some((host.into(), v.clone()));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names present, sorted (removal reorders a `HeaderMap`).
    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn trailers_never_carry_what_the_head_was_checked_for() {
        for name in [
            "x-client-org",
            "ssp-from",
            "host",
            "authorization",
            "x-forwarded-host",
            "connection",
        ] {
            assert!(!trailer_allowed(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-checksum", "server-timing"] {
            assert!(trailer_allowed(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn forwarded_follows_the_host_each_request_names() {
        let via = Forwarding::new("127.0.0.1");
        assert_eq!(via.xff.as_ref().unwrap(), "127.0.0.1");
        let f = |host| via.forwarded(host).unwrap();
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        assert_eq!(f(Some("b.example")), "for=127.0.0.1;host=\"b.example\";proto=https");
        // A host that cannot go in a quoted string is left out, not escaped.
        assert_eq!(f(Some("a\"b")), "for=127.0.0.1;proto=https");
        assert_eq!(f(None), "for=127.0.0.1;proto=https");
        assert_eq!(f(Some("a.example")), "for=127.0.0.1;host=\"a.example\";proto=https");
        let v6 = Forwarding::new("::1");
        assert_eq!(v6.forwarded(None).unwrap(), "for=\"[::1]\";proto=https");
        assert_eq!(v6.xff.as_ref().unwrap(), "::1");
    }

    #[test]
    fn hygiene_removes_hop_by_hop_connection_named_and_identity_headers_only() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Trace-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-trace-hop", "1"),
            ("te", "trailers"),
            ("x-client-org", "RXC"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-host", "admin.internal"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-client-cert", "Hash=abc"),
            ("accept", "application/fhir+json"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut response = h.clone();
        strip(&mut h, &IDENTITY_HEADERS);
        assert_eq!(names(&h), ["accept"]);
        // A response keeps what is only an identity header in a request.
        to_client(&mut response, HeaderValue::from_static("id-1"));
        assert_eq!(
            names(&response),
            [
                "accept",
                "forwarded",
                "x-client-org",
                "x-forwarded-client-cert",
                "x-forwarded-host",
                "x-http-method-override",
                "x-original-url",
                "x-real-ip",
                "x-request-id"
            ]
        );
        // Without any of them, nothing changes.
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        plain.insert(header::HOST, HeaderValue::from_static("localhost"));
        strip(&mut plain, &IDENTITY_HEADERS);
        assert_eq!(names(&plain), ["accept", "host"]);
    }
}
