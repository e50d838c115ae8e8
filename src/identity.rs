//! The verified leaf certificate → who is calling: organisation code, subject, fingerprint.
//!
//! Worked out once per connection (after the handshake verified the chain), never per request.

use crate::config::OrgSource;
use crate::directory::Directory;
use base64::Engine as _;
use std::sync::Arc;
use x509_parser::prelude::*;

/// The caller behind a connection, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// ODS code from the first `identity.org_from` source that matched (upper case).
    pub org: Option<Arc<str>>,
    /// Subject DN, RFC 4514 (most specific RDN first), ASCII only (non-ASCII escaped as `\XX`).
    pub subject: Arc<str>,
    /// `sha256:` + lowercase hex of the DER.
    pub fingerprint: Arc<str>,
    /// Serial number, lowercase hex.
    pub serial: Arc<str>,
    /// The issuer's name as the certificate encodes it (DER): with the serial, what a CRL
    /// entry names.
    pub issuer: Box<[u8]>,
    /// The Spine ASID of the `[[endpoint]]` the certificate matched, if any.
    pub asid: Option<String>,
    /// RFC 9440 `Client-Cert` value: `:` base64(DER) `:`.
    pub client_cert_header: String,
    /// The identity headers for the upstream, built once per connection rather than per request.
    pub headers: IdentityHeaders,
}

/// `X-Client-Org`, `X-Client-Cert-Subject`, `X-Client-Cert-Fingerprint` and `Client-Cert` as
/// header values (cloning one is a reference-count bump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub org: Option<http::HeaderValue>,
    pub subject: Option<http::HeaderValue>,
    pub fingerprint: Option<http::HeaderValue>,
    pub client_cert: Option<http::HeaderValue>,
}

#[derive(Debug, thiserror::Error)]
#[error("the client certificate could not be parsed")]
pub struct IdentityError;

/// Reads the identity from a leaf certificate's DER, trying `sources` in order.
pub fn identify(der: &[u8], sources: &[OrgSource], dir: &Directory) -> Result<ClientIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError)?;
    let subject = rfc4514(cert.subject());
    let fingerprint = format!(
        "sha256:{}",
        crate::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
    );
    let serial = crate::hex(cert.raw_serial());
    let sans = cert.subject_alternative_name().ok().flatten();
    let names: &[GeneralName] = sans.as_ref().map(|s| s.value.general_names.as_slice()).unwrap_or(&[]);

    let mut org = None;
    let mut asid = None;
    for source in sources {
        let found = match source {
            OrgSource::Subject(attr) => subject_attr(cert.subject(), attr),
            OrgSource::SanUri(prefix) => names.iter().find_map(|n| match n {
                GeneralName::URI(uri) => uri
                    .strip_prefix(prefix.as_str())
                    .filter(|rest| !rest.is_empty())
                    .map(str::to_string),
                _ => None,
            }),
            OrgSource::Endpoint => {
                let dns = names.iter().filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(*d),
                    _ => None,
                });
                let cn = cert.subject().iter_common_name().filter_map(|a| a.as_str().ok());
                dns.chain(cn).find_map(|fqdn| dir.endpoint(fqdn)).map(|e| {
                    asid = e.asid.clone();
                    e.org.clone()
                })
            }
        };
        if let Some(code) = found {
            let code = code.trim();
            if !code.is_empty() && code.len() <= 12 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                org = Some(code.to_ascii_uppercase());
                break;
            }
        }
    }
    // The ASID is meaningful whichever source named the organisation, as long as they agree.
    if asid.is_none() {
        let dns = names.iter().filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        });
        asid = dns
            .filter_map(|d| dir.endpoint(d))
            .find(|e| Some(&e.org) == org.as_ref())
            .and_then(|e| e.asid.clone());
    }
    let client_cert_header = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(der));
    let value = |s: &str| http::HeaderValue::from_str(s).ok();
    let headers = IdentityHeaders {
        org: org.as_deref().and_then(value),
        subject: value(&subject),
        fingerprint: value(&fingerprint),
        client_cert: value(&client_cert_header),
    };
    Ok(ClientIdentity {
        org: org.map(Into::into),
        subject: subject.into(),
        fingerprint: fingerprint.into(),
        serial: serial.into(),
        issuer: cert.issuer().as_raw().into(),
        asid,
        client_cert_header,
        headers,
    })
}

fn attr_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Option<&'static str> {
    use x509_parser::oid_registry as r;
    Some(match oid {
        o if *o == r::OID_X509_COMMON_NAME => "CN",
        o if *o == r::OID_X509_ORGANIZATION_NAME => "O",
        o if *o == r::OID_X509_ORGANIZATIONAL_UNIT => "OU",
        o if *o == r::OID_X509_COUNTRY_NAME => "C",
        o if *o == r::OID_X509_LOCALITY_NAME => "L",
        o if *o == r::OID_X509_STATE_OR_PROVINCE_NAME => "ST",
        o if *o == r::OID_X509_STREET_ADDRESS => "STREET",
        o if *o == r::OID_X509_SERIALNUMBER => "serialNumber",
        o if *o == r::OID_DOMAIN_COMPONENT => "DC",
        o if *o == r::OID_PKCS9_EMAIL_ADDRESS => "emailAddress",
        _ => return None,
    })
}

fn subject_attr(name: &X509Name<'_>, wanted: &str) -> Option<String> {
    name.iter_attributes().find_map(|a| {
        let n = attr_name(a.attr_type())?;
        if n.eq_ignore_ascii_case(wanted) {
            a.as_str().ok().map(str::to_string)
        } else {
            None
        }
    })
}

/// RFC 4514 string form: RDNs in reverse order, `,` between them, special characters escaped,
/// and anything outside printable ASCII as `\XX` so the result is always a valid header value.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match attr_name(atv.attr_type()) {
                Some(n) => out.push_str(n),
                None => out.push_str(&atv.attr_type().to_id_string()),
            }
            out.push('=');
            match atv.as_str() {
                Ok(v) => escape_value(v, &mut out),
                Err(_) => {
                    out.push('#');
                    out.push_str(&crate::hex(atv.attr_value().data));
                }
            }
        }
    }
    out
}

fn escape_value(v: &str, out: &mut String) {
    let bytes = v.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == bytes.len() - 1 && b == b' ');
        if special {
            out.push('\\');
            out.push(b as char);
        } else if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push('\\');
            out.push_str(&crate::hex(&[b]).to_ascii_uppercase());
        }
    }
}
