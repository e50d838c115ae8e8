//! The one normalised path: what routes match is exactly what the upstream receives.
//!
//! Normalising once, up front, closes the gap that path-confusion attacks live in (the proxy
//! matching `/fhir/../admin` as `/fhir/` while the upstream resolves it to `/admin`).

/// Why a path was refused (always a 400 `bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    #[error("the path holds an encoded /, \\, NUL or control character")]
    ForbiddenEscape,
    #[error("the path holds a backslash or control character")]
    ForbiddenByte,
    #[error("the path escapes the root")]
    EscapesRoot,
}

/// Normalises a request path (no query):
/// - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, others are
///   kept with upper-case hex; escapes of `/`, `\`, NUL and control characters are refused;
/// - empty segments (`//`) are merged, as nginx's `merge_slashes` does;
/// - `.` and `..` segments are resolved; `..` above the root is refused.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no dot-segments, no empty segments.
    if !bytes
        .iter()
        .any(|&b| matches!(b, b'%' | b'.' | b'\\') || b < 0x20 || b == 0x7f)
        && !raw.contains("//")
    {
        return Ok(raw.to_string());
    }

    // Decode into segments, then resolve dots. Segments keep their non-unreserved escapes.
    let mut segments: Vec<String> = Vec::new();
    for seg in raw[1..].split('/') {
        let decoded = decode_segment(seg)?;
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            _ => segments.push(decoded),
        }
    }
    // A trailing slash (or trailing dot-segment, which names a folder) is kept.
    let last = raw.rsplit('/').next().unwrap_or("");
    let trailing = last.is_empty() || matches!(decode_segment(last)?.as_str(), "." | "..");
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Matrix parameters (`;name=value`) cut from each segment of a raw path. Servlet containers
/// (Tomcat, Jetty: HAPI FHIR's usual homes) drop them before resolving the path, so that
/// `/fhir/Patient/..;/Observation` is `/fhir/Observation` to them: the gateway must match what
/// they will resolve, or refuse. Returns the path without them, and what was cut.
pub fn split_params(raw: &str) -> (std::borrow::Cow<'_, str>, Vec<String>) {
    if !raw.contains(';') {
        return (std::borrow::Cow::Borrowed(raw), Vec::new());
    }
    let mut path = String::with_capacity(raw.len());
    let mut params = Vec::new();
    for (i, seg) in raw.split('/').enumerate() {
        if i > 0 {
            path.push('/');
        }
        match seg.split_once(';') {
            Some((keep, cut)) => {
                path.push_str(keep);
                params.push(cut.to_string());
            }
            None => path.push_str(seg),
        }
    }
    (std::borrow::Cow::Owned(path), params)
}

fn decode_segment(seg: &str) -> Result<String, PathError> {
    let b = seg.as_bytes();
    // Bytes, not chars: a raw UTF-8 sequence (`Zoë`) is copied as it came.
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' || c < 0x20 || c == 0x7f {
            return Err(PathError::ForbiddenByte);
        }
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        let (h, l) = match (
            b.get(i + 1).and_then(|&x| hex_val(x)),
            b.get(i + 2).and_then(|&x| hex_val(x)),
        ) {
            (Some(h), Some(l)) => (h, l),
            _ => return Err(PathError::BadEscape),
        };
        let v = h << 4 | l;
        match v {
            b'/' | b'\\' | 0..=0x1f | 0x7f => return Err(PathError::ForbiddenEscape),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(v),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
            }
        }
        i += 3;
    }
    // The input's own bytes (whole UTF-8 sequences: segments split at an ASCII `/`) and ASCII.
    String::from_utf8(out).map_err(|_| PathError::ForbiddenByte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_utf8_is_forwarded_as_it_came() {
        assert_eq!(normalise("/fhir/Zoë/./x").unwrap(), "/fhir/Zoë/x");
        assert_eq!(normalise("/fhir/Zoë/.").unwrap(), "/fhir/Zoë/");
        assert_eq!(normalise("/a/%41ë/../b").unwrap(), "/a/b");
    }

    #[test]
    fn matrix_parameters_are_cut_from_every_segment() {
        assert_eq!(split_params("/fhir/Patient/1"), ("/fhir/Patient/1".into(), vec![]));
        let (path, params) = split_params("/fhir/Patient/..;/Observation");
        assert_eq!(
            (path.as_ref(), params),
            ("/fhir/Patient/../Observation", vec!["".to_string()])
        );
        let (path, params) = split_params("/fhir;jsessionid=1/Patient/9990000018;x=1;y");
        assert_eq!(path, "/fhir/Patient/9990000018");
        assert_eq!(params, ["jsessionid=1", "x=1;y"]);
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in ["/", "/fhir/Patient/9990000018", "/fhir/", "/dicomweb/studies/1.2.3"] {
            assert_eq!(normalise(p).unwrap(), p);
        }
    }

    #[test]
    fn dot_segments_resolve() {
        assert_eq!(normalise("/fhir/../admin").unwrap(), "/admin");
        assert_eq!(normalise("/fhir/./Patient").unwrap(), "/fhir/Patient");
        assert_eq!(normalise("/fhir/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalise("/fhir/%2E%2e/").unwrap(), "/");
        assert_eq!(normalise("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalise("/a/.").unwrap(), "/a/");
    }

    #[test]
    fn escaping_the_root_is_refused() {
        assert_eq!(normalise("/.."), Err(PathError::EscapesRoot));
        assert_eq!(normalise("/fhir/../../etc"), Err(PathError::EscapesRoot));
        assert_eq!(normalise("/%2e%2e/x"), Err(PathError::EscapesRoot));
    }

    #[test]
    fn forbidden_escapes_are_refused() {
        for p in [
            "/fhir%2fadmin",
            "/fhir%2F..",
            "/a%5cb",
            "/a%00",
            "/a%0d%0a",
            "/a%7F",
            "/a\\b",
        ] {
            assert!(normalise(p).is_err(), "{p}");
        }
        assert_eq!(normalise("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalise("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalise("fhir"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn unreserved_escapes_decode_and_others_stay() {
        assert_eq!(normalise("/%66hir/Patient").unwrap(), "/fhir/Patient");
        assert_eq!(normalise("/fhir/a%20b").unwrap(), "/fhir/a%20b");
        assert_eq!(normalise("/fhir/a%7cb").unwrap(), "/fhir/a%7Cb");
    }

    #[test]
    fn empty_segments_merge() {
        assert_eq!(normalise("//fhir//Patient").unwrap(), "/fhir/Patient");
        assert_eq!(normalise("//").unwrap(), "/");
    }
}
