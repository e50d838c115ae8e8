//! HTTP framing that hyper lets through but a boundary proxy must not: a request its upstream
//! might read differently is refused, never forwarded (SPEC §4, "HTTP/1 strictness").
//!
//! Two places see it: [`h1`] reads the bytes of each HTTP/1 head as hyper does, for what hyper
//! resolves before the request exists (a `Content-Length` beside `Transfer-Encoding`, duplicate
//! identical lengths), and [`check`] looks at the parsed request of either version.

pub mod h1;

use http::{header, Method, Version};

/// The framing checks on a parsed request: `Err(why)` to refuse it with 400.
pub fn check(parts: &http::request::Parts) -> Result<(), &'static str> {
    let h = &parts.headers;
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl > 1 {
        return Err("the request has more than one Content-Length");
    }
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => {
            if CONNECTION_SPECIFIC.iter().any(|name| h.contains_key(*name)) {
                return Err("the request carries a connection-specific header");
            }
        }
        _ => {
            if cl == 1 && h.contains_key(header::TRANSFER_ENCODING) {
                return Err("the request has both Content-Length and Transfer-Encoding");
            }
            if h.contains_key(header::UPGRADE) {
                return Err("protocol upgrades are not allowed here");
            }
        }
    }
    if parts.method == Method::CONNECT {
        return Err("CONNECT is not allowed");
    }
    if parts.version == Version::HTTP_11 && parts.uri.authority().is_none() && !h.contains_key(header::HOST) {
        return Err("an HTTP/1.1 request needs a Host header");
    }
    // The upstream might read another copy than the one checked and recorded.
    let repeated = |name| h.get_all(name).iter().nth(1).is_some();
    if repeated(header::HOST)
        || repeated(header::AUTHORIZATION)
        || h.keys().any(|n| n.as_str().starts_with("ssp-") && repeated(n.clone()))
    {
        return Err("the request repeats Host, Authorization or an Ssp- header, which must appear once");
    }
    // Only host names and IP literals: a value an upstream or a log viewer might read as
    // something else (`=HYPERLINK(1)`, `a b`, `x@y`) is refused.
    let host = h.get(header::HOST).map(|v| v.as_bytes());
    if [host, parts.uri.authority().map(|a| a.as_str().as_bytes())]
        .into_iter()
        .flatten()
        .any(|v| !valid_authority(v))
    {
        return Err("the request's Host or authority is not a host name or address");
    }
    // An absolute-form target must agree with Host, or the two could route differently.
    if let (Some(a), Some(hv)) = (parts.uri.authority(), h.get(header::HOST)) {
        if !a.as_str().as_bytes().eq_ignore_ascii_case(hv.as_bytes()) {
            return Err("the request target and Host disagree");
        }
    }
    Ok(())
}

/// `host [":" port]`, the host a DNS name (letters, digits, `-`, `.`, `_`), an IPv4 address, or
/// an IPv6 literal in brackets; the port digits.
fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = match v.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &rest[..end];
                let ok =
                    !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !ok {
                    return false;
                }
                (&b"x"[..], &rest[end + 1..])
            }
            None => return false,
        },
        None => match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &b""[..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok
        && !host.is_empty()
        && host.len() <= 253
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2): a request carrying one is malformed.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
];

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn verdict(req: http::request::Builder) -> Result<(), &'static str> {
        check(&req.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn ambiguous_framing_is_refused_and_plain_requests_pass() {
        let get = || Request::builder().uri("/fhir/Patient/9990000018");
        assert_eq!(verdict(get().header("host", "localhost")), Ok(()));
        assert!(verdict(get().header("content-length", "1").header("content-length", "1")).is_err());
        assert!(verdict(
            get()
                .header("content-length", "1")
                .header("transfer-encoding", "chunked")
        )
        .is_err());
        assert!(verdict(get().header("upgrade", "h2c")).is_err());
        assert!(verdict(get().method("CONNECT")).is_err());
        let h2 = || get().version(Version::HTTP_2);
        assert_eq!(verdict(h2()), Ok(()));
        for name in CONNECTION_SPECIFIC {
            assert!(verdict(h2().header(name, "x")).is_err(), "{name}");
        }
        let absolute = Request::builder().uri("https://epr.example/fhir/x");
        assert_eq!(verdict(absolute.header("host", "EPR.example")), Ok(()));
        let absolute = Request::builder().uri("https://epr.example/fhir/x");
        assert!(verdict(absolute.header("host", "pacs.example")).is_err());
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        for good in [
            "localhost",
            "epr.example.nhs.uk:8443",
            "127.0.0.1",
            "[::1]:8443",
            "[fe80::1]",
            "a_b.example",
            "x:",
        ] {
            assert!(valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "=HYPERLINK(1)",
            "a b",
            "x@y",
            "",
            "[::1",
            "[zz]",
            "h:port",
            "h:123456",
            "a,b",
            "\\evil",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
        let with_host = |h: &'static str| Request::builder().uri("/fhir/x").header("host", h);
        assert!(verdict(with_host("=HYPERLINK(1)")).is_err());
        assert_eq!(verdict(with_host("epr.example:443")), Ok(()));
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("https://=cmd(1)/fhir/x");
        assert!(verdict(h2).is_err());
    }

    #[test]
    fn host_is_required_in_http_1_1_and_identity_headers_appear_once() {
        let get = || Request::builder().uri("/fhir/Patient/9990000018");
        assert!(verdict(get().version(Version::HTTP_11)).is_err());
        assert_eq!(verdict(get().version(Version::HTTP_10)), Ok(()));
        assert_eq!(verdict(get().version(Version::HTTP_2)), Ok(()));
        let with_host = || get().header("host", "localhost");
        assert!(verdict(with_host().header("host", "other")).is_err());
        assert!(verdict(with_host().header("authorization", "a").header("authorization", "b")).is_err());
        assert!(verdict(with_host().header("ssp-from", "1").header("ssp-from", "2")).is_err());
        assert!(verdict(with_host().header("Ssp-TraceID", "1").header("ssp-traceid", "1")).is_err());
        let one_each = with_host()
            .header("authorization", "a")
            .header("ssp-from", "1")
            .header("ssp-to", "2")
            .header("accept", "a")
            .header("accept", "b");
        assert_eq!(verdict(one_each), Ok(()));
    }
}
