//! The parts of a FHIR R4 AuditEvent this export writes, as types: written straight to the
//! output from borrowed strings (no JSON tree per event), members in FHIR's element order,
//! absent ones left out (FHIR has no empty values).

use std::borrow::Cow;

use serde::Serialize;

pub type Text<'a> = Cow<'a, str>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    pub resource_type: &'static str,
    pub id: Text<'a>,
    #[serde(rename = "type")]
    pub ty: Coding<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subtype: Vec<Coding<'a>>,
    pub action: &'static str,
    pub period: Period<'a>,
    pub recorded: &'a str,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_desc: Option<Text<'a>>,
    pub agent: Vec<Agent<'a>>,
    pub source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<Entity<'a>>,
}

#[derive(Serialize)]
pub struct Period<'a> {
    pub start: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<&'a str>,
}

#[derive(Serialize, Clone, Copy)]
pub struct Coding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    pub code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'a str>,
}

impl<'a> Coding<'a> {
    pub const fn new(system: &'a str, code: &'a str, display: &'a str) -> Coding<'a> {
        Coding {
            system: Some(system),
            code,
            display: Some(display),
        }
    }
}

#[derive(Serialize, Default)]
pub struct Concept<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
}

impl<'a> Concept<'a> {
    pub fn of(coding: Coding<'a>) -> Concept<'a> {
        Concept {
            coding: vec![coding],
            text: None,
        }
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Agent<'a> {
    #[serde(rename = "type")]
    pub ty: Concept<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub role: Vec<Concept<'a>>,
    pub who: Reference<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub requestor: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purpose_of_use: Vec<Concept<'a>>,
}

#[derive(Serialize, Default)]
pub struct Reference<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Text<'a>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'a str>,
}

impl<'a> Reference<'a> {
    pub fn display(display: &'a str) -> Reference<'a> {
        Reference {
            display: Some(display),
            ..Reference::default()
        }
    }

    pub fn identifier(identifier: Identifier<'a>) -> Reference<'a> {
        Reference {
            identifier: Some(identifier),
            ..Reference::default()
        }
    }
}

#[derive(Serialize, Default)]
pub struct Identifier<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<Concept<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    pub value: Text<'a>,
}

impl<'a> Identifier<'a> {
    pub fn new(system: Option<&'a str>, value: impl Into<Text<'a>>) -> Identifier<'a> {
        Identifier {
            ty: None,
            system,
            value: value.into(),
        }
    }
}

#[derive(Serialize)]
pub struct Network<'a> {
    pub address: &'a str,
    /// `1` a machine name, `2` an IP address.
    #[serde(rename = "type")]
    pub ty: &'static str,
}

/// caregate, which observed and recorded every event.
pub struct Source;

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Observed<'a> {
            observer: Reference<'a>,
            #[serde(rename = "type")]
            ty: [Coding<'a>; 1],
        }
        Observed {
            observer: Reference::display("caregate"),
            ty: [Coding::new(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                "Application Server",
            )],
        }
        .serialize(s)
    }
}

#[derive(Serialize, Default)]
pub struct Entity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<Reference<'a>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<Detail<'a>>,
}

#[derive(Serialize)]
pub struct Detail<'a> {
    #[serde(rename = "type")]
    pub ty: &'a str,
    #[serde(rename = "valueString")]
    pub value: &'a str,
}
