//! NHS numbers, the NHS identifier systems, and the small text helpers the parser needs.

use std::borrow::Cow;

/// Ten ASCII digits whose last is the modulus 11 check digit of the first nine.
pub fn nhs_number_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false, // no number is issued with this check value
        c => c,
    };
    u32::from(b[9] - b'0') == check
}

/// Ten ASCII digits: shaped like an NHS number, whether or not its check digit holds.
pub(crate) fn ten_digits(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The OID of the NHS number (HL7 v3, CDA; some FHIR clients send it as the system).
const NHS_NUMBER_OID: &str = "urn:oid:2.16.840.1.113883.2.1.4.1";

/// Whether `system` is one of the NHS's identifier systems for `name` (`nhs-number`,
/// `ods-organization-code`, `sds-user-id`, `sds-role-profile-id`): the current
/// `https://fhir.nhs.uk/Id/{name}`, and the legacy `http://fhir.nhs.net/Id/{name}`,
/// `http://fhir.nhs.net/{name}` and `http://fhir.nhs.uk/Id/{name}` that older clients still send.
/// Case-insensitive: senders differ, and a near miss must not hide a patient.
pub(crate) fn is_nhs_system(system: &str, name: &str) -> bool {
    fn strip<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
        let head = s.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
    }
    let Some(rest) = strip(system, "https://").or_else(|| strip(system, "http://")) else {
        return name == "nhs-number" && system.eq_ignore_ascii_case(NHS_NUMBER_OID);
    };
    let Some(rest) = strip(rest, "fhir.nhs.uk/").or_else(|| strip(rest, "fhir.nhs.net/")) else {
        return false;
    };
    let rest = strip(rest, "Id/").unwrap_or(rest);
    rest.eq_ignore_ascii_case(name)
}

/// The system of an NHS number.
pub(crate) fn is_nhs_number_system(system: &str) -> bool {
    is_nhs_system(system, "nhs-number")
}

/// Percent-decodes a query component (`+` is a space, as in forms). Borrows when there is
/// nothing to decode; `None` when the result is not UTF-8. Malformed escapes stay as sent.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if c == b'+' { b' ' } else { c });
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
