//! The config's closed choices, read straight from their TOML strings by serde.
//!
//! Each refuses a value it does not know with a sentence that quotes the value and lists the
//! choices (`"xray" is not epr, image or other`); the key in front of it comes from where serde
//! stopped in the file (see `raw::toml_error`), so it reads like every other config error.
//! [`OrgSource`] is the exception: its entries sit in an array, converted by the validator.

use serde::Deserialize;

/// Rate-limit and policy class of a route (`route.class`, `rate_limit.override.class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Class {
    Epr,
    Image,
    Other,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Epr, Class::Image, Class::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Epr => "epr",
            Class::Image => "image",
            Class::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl TryFrom<String> for Class {
    type Error = String;

    fn try_from(s: String) -> Result<Class, String> {
        Class::parse(&s).ok_or_else(|| format!("\"{s}\" is not epr, image or other"))
    }
}

/// Where the organisation code comes from, tried in order (`identity.org_from`). Not read by
/// serde: toml places an error in an array at the whole array, and its key needs the index, so
/// the identity validator converts each entry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSource {
    /// `subject:OU`: the value of that RDN attribute in the subject.
    Subject(String),
    /// `san_uri:urn:nhs:ods:`: a URI SAN with this prefix; the rest is the code.
    SanUri(String),
    /// `endpoint`: the cert's DNS SANs / CN looked up in `[[endpoint]]`.
    Endpoint,
}

impl TryFrom<&str> for OrgSource {
    type Error = String;

    fn try_from(s: &str) -> Result<OrgSource, String> {
        if s == "endpoint" {
            Ok(OrgSource::Endpoint)
        } else if let Some(attr) = s.strip_prefix("subject:") {
            if attr.is_empty() {
                return Err("\"subject:\" needs an attribute, like \"subject:OU\"".into());
            }
            Ok(OrgSource::Subject(attr.to_string()))
        } else if let Some(prefix) = s.strip_prefix("san_uri:") {
            if prefix.is_empty() {
                return Err("\"san_uri:\" needs a prefix, like \"san_uri:urn:nhs:ods:\"".into());
            }
            Ok(OrgSource::SanUri(prefix.to_string()))
        } else {
            Err(format!(
                "\"{s}\" is not \"subject:<ATTR>\", \"san_uri:<prefix>\" or \"endpoint\""
            ))
        }
    }
}

/// What a CRL past its nextUpdate does to its CA's certificates (`listener.crl_expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum CrlExpired {
    #[default]
    Refuse,
    Warn,
}

impl TryFrom<String> for CrlExpired {
    type Error = String;

    fn try_from(s: String) -> Result<CrlExpired, String> {
        match s.as_str() {
            "refuse" => Ok(CrlExpired::Refuse),
            "warn" => Ok(CrlExpired::Warn),
            _ => Err(format!("\"{s}\" is not \"refuse\" or \"warn\"")),
        }
    }
}

/// When an audit record counts as written (`audit.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Durability {
    #[default]
    Fsync,
    Flush,
}

impl TryFrom<String> for Durability {
    type Error = String;

    fn try_from(s: String) -> Result<Durability, String> {
        match s.as_str() {
            "fsync" => Ok(Durability::Fsync),
            "flush" => Ok(Durability::Flush),
            _ => Err(format!("\"{s}\" is not \"fsync\" or \"flush\"")),
        }
    }
}
