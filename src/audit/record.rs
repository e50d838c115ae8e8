//! The records of the audit trail (SPEC §5). The writer adds `seq`, `time`, `event` before these
//! fields and `prev`, `hash` after them; readers parse whole lines with [`ParsedRecord`].

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// Text that is almost always one of a fixed vocabulary (`allow`, `HTTP/1.1`, a reason): no
/// allocation for those, and still anything when read back.
pub type Word = Cow<'static, str>;

// Strings the records share with the connection, the route table or the request (`Arc<str>`)
// go in with a reference-count bump, not a copy.

/// One event to append to the trail.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    Access(Box<Access>),
    Complete(Complete),
    TlsRejected(TlsRejected),
    Lifecycle(Lifecycle),
}

impl Event {
    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Access(_) => "access",
            Event::Complete(_) => "complete",
            Event::TlsRejected(_) => "tls_rejected",
            Event::Lifecycle(_) => "lifecycle",
        }
    }
}

/// Who made the request: the verified certificate and the peer address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Client {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_name: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<Arc<str>>,
    pub ip: Arc<str>,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    pub method: Word,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Arc<str>>,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub version: Word,
}

/// Clinical facts found in the request (SPEC §5 `clinical`); only what is known is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinical {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
    /// FHIR interaction (`read`, `search-type`, `$gpc.getstructuredrecord`) or, when sent,
    /// the Spine interaction ID from `Ssp-InteractionID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `requesting_organization` from a GP Connect token (recorded, never trusted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_practitioner: Option<String>,
}

impl Clinical {
    pub fn is_empty(&self) -> bool {
        *self == Clinical::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    pub request_id: Arc<str>,
    pub client: Client,
    pub request: Request,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Word>,
    /// `allow` or `deny`.
    pub decision: Word,
    /// `allowed`, or a refusal reason of SPEC §4.
    pub reason: Word,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Clinical::is_empty")]
    pub clinical: Clinical,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Complete {
    pub request_id: Arc<str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    /// `ok`, `client_aborted`, `upstream_error` or `timeout` (no upstream answer in time, or
    /// cut off when the drain deadline passed).
    pub outcome: Word,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsRejected {
    pub client: Client,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `no_certificate`, `unknown_issuer`, `expired`, `not_yet_valid`, `revoked`,
    /// `bad_signature` or `other`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `start`, `reload`, `reload_failed` or `stop`.
    pub action: String,
    pub config_sha256: String,
}
