//! The GP Connect access token (a JWT in `Authorization: Bearer`): read, never verified.
//!
//! The token says which organisation and practitioner the *requesting system* claims to act
//! for. It is recorded for the audit trail and compared with the certificate's organisation by
//! policy; its signature (often `alg: none`) is no evidence of anything, so it is not checked.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;

/// Tokens past this size are not read: real ones are a few KiB, and the bound keeps the cost of
/// a hostile header small.
const MAX_TOKEN: usize = 16 * 1024;
/// Longest organisation code or practitioner id recorded.
const MAX_VALUE: usize = 128;

const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// base64url with or without padding: senders differ, and we do not judge the token.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Deserialize)]
struct Claims {
    requesting_organization: Option<Resource>,
    requesting_practitioner: Option<Resource>,
}

#[derive(Deserialize)]
struct Resource {
    id: Option<serde_json::Value>,
    #[serde(default)]
    identifier: Option<Vec<Identifier>>,
}

#[derive(Deserialize)]
struct Identifier {
    system: Option<serde_json::Value>,
    value: Option<serde_json::Value>,
}

/// What the token names.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Token {
    pub org: Option<String>,
    pub practitioner: Option<String>,
}

/// Reads the payload of a `Bearer` JWT from an `Authorization` header value.
pub(crate) fn read(authorization: &[u8]) -> Token {
    let Some(token) = bearer(authorization) else {
        return Token::default();
    };
    let mut parts = token.split(|&b| b == b'.');
    let (Some(_header), Some(payload)) = (parts.next(), parts.next()) else {
        return Token::default();
    };
    let Ok(json) = B64.decode(payload) else {
        return Token::default();
    };
    let Ok(claims) = serde_json::from_slice::<Claims>(&json) else {
        return Token::default();
    };
    Token {
        org: claims.requesting_organization.and_then(|o| {
            o.identifier?
                .into_iter()
                .find(|i| i.system.as_ref().and_then(|s| s.as_str()) == Some(ODS_SYSTEM))
                .and_then(|i| text(i.value?))
                .map(|v| v.to_ascii_uppercase())
        }),
        practitioner: claims.requesting_practitioner.and_then(|p| {
            p.id.and_then(text)
                .or_else(|| p.identifier?.into_iter().find_map(|i| i.value.and_then(text)))
        }),
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

/// A string value that is safe and small enough to record: printable ASCII, bounded.
fn text(v: serde_json::Value) -> Option<String> {
    let serde_json::Value::String(s) = v else {
        return None;
    };
    let s = s.trim();
    let ok = !s.is_empty() && s.len() <= MAX_VALUE && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| s.to_string())
}
