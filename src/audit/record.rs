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
    RefusalsCoalesced(RefusalsCoalesced),
    AuditAccess(Box<AuditAccess>),
}

impl Event {
    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Access(_) => "access",
            Event::Complete(_) => "complete",
            Event::TlsRejected(_) => "tls_rejected",
            Event::Lifecycle(_) => "lifecycle",
            Event::RefusalsCoalesced(_) => "refusals_coalesced",
            Event::AuditAccess(_) => "audit_access",
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
    /// Matrix parameters cut from the path's segments (`;x=1`), on a route that allows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_params: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub version: Word,
}

/// Clinical facts found in the request (SPEC §5 `clinical`, §8); only what is known is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinical {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fhir_id: Option<String>,
    /// The first of `nhs_numbers`, for readers of the first format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// Every distinct valid NHS number the request names, in the order found: path, query,
    /// body, token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nhs_numbers: Vec<String>,
    /// Every other patient id it names: a DICOM `PatientID`, an opaque FHIR Patient id, an
    /// identifier of another system (`system|value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patient_ids: Vec<String>,
    /// The first DICOM study the request names (`study_uids` has them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub study_uids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
    /// FHIR interaction (`read`, `search-type`, `$gpc.getstructuredrecord`) or, when sent,
    /// the Spine interaction ID from `Ssp-InteractionID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    /// `Ssp-TraceID` (also in `ssp`), for readers of the first format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The Spine Secure Proxy headers as sent. Boxed, as `token` is: most requests have
    /// neither, and every request's facts are moved several times on their way to the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssp: Option<Box<Ssp>>,
    /// The claims of a GP Connect (or Spine-core style) token, as the SSP requires them to be
    /// logged: recorded, never trusted (only compared with the certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Box<Token>>,
}

impl Clinical {
    pub fn is_empty(&self) -> bool {
        *self == Clinical::default()
    }

    /// Adds a valid NHS number, once; the first also becomes `nhs_number`.
    pub fn add_nhs_number(&mut self, n: &str) {
        if !self.nhs_numbers.iter().any(|x| x == n) {
            self.nhs_numbers.push(n.to_string());
        }
        if self.nhs_number.is_none() {
            self.nhs_number = Some(n.to_string());
        }
    }

    /// Adds a patient id that is not an NHS number, once.
    pub fn add_patient_id(&mut self, id: &str) {
        if !self.patient_ids.iter().any(|x| x == id) {
            self.patient_ids.push(id.to_string());
        }
    }

    /// Adds a DICOM study instance UID, once; the first also becomes `study_uid`.
    pub fn add_study_uid(&mut self, uid: &str) {
        if !self.study_uids.iter().any(|x| x == uid) {
            self.study_uids.push(uid.to_string());
        }
        if self.study_uid.is_none() {
            self.study_uid = Some(uid.to_string());
        }
    }

    /// Whether the request named this patient, by NHS number or by id.
    pub fn names_patient(&self, id: &str) -> bool {
        self.nhs_number.as_deref() == Some(id)
            || self.nhs_numbers.iter().any(|n| n == id)
            || self.patient_ids.iter().any(|p| p == id)
    }
}

/// The Spine Secure Proxy headers of a request (`Ssp-From`, `Ssp-To`, `Ssp-InteractionID`,
/// `Ssp-TraceID`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ssp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// What a GP Connect token says of who is asking and why. Identifiers keep their system as
/// `system|value`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// `requesting_practitioner`: the SDS user id (`system|value`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub practitioner: Option<String>,
    /// The practitioner's name, as the token gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub practitioner_name: Option<String>,
    /// The SDS role profile id (`system|value`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `requesting_device`: its identifier (`system|value`) or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `requesting_organization`: the ODS code (current or legacy identifier system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The patient the token says is being asked about (`requested_record`), when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    /// caregate's own id for this request (random, never the client's).
    pub request_id: Arc<str>,
    /// The client's own `X-Request-Id`, when it sent a sane one: searchable, never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
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
    /// Present when a `[[route.break_glass]]` entry overrode a `not_allowed` refusal: then
    /// `rule` names that entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    #[serde(default, skip_serializing_if = "Clinical::is_empty")]
    pub clinical: Clinical,
    /// Whether the request's body was read for patient identifiers: `true` when it was, `false`
    /// when it could name a patient but the route says `inspect_body = false`; absent where no
    /// body could.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_inspected: Option<bool>,
}

/// An emergency override of a `not_allowed` refusal, for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    /// The client's `X-Break-Glass-Reason`: 10 to 500 printable ASCII characters.
    pub reason: String,
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

/// A refused handshake. Everything in it comes from a peer nobody has authenticated, so the
/// certificate's subject and the SNI are a bounded summary (`tls::HandshakeNote`): at most
/// 256 bytes, with `<field>_len` and `<field>_sha256` of the whole when cut.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsRejected {
    pub client: RejectedClient,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_sha256: Option<String>,
    /// `no_certificate`, `unknown_issuer`, `expired`, `not_yet_valid`, `revoked`,
    /// `bad_signature` or `other`.
    pub reason: String,
}

/// The peer of a refused handshake: its address, and what its certificate (unverified) says.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RejectedClient {
    pub ip: Arc<str>,
    pub port: u16,
    /// RFC 4514, cut to 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The whole RFC 4514 subject's length and SHA-256, when `subject` was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Refused handshakes from one address (or, past the addresses tracked, from `other`) counted
/// rather than written one by one (`audit::refusals`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefusalsCoalesced {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub count: u64,
    /// The first and the last refusal counted.
    pub since: String,
    pub until: String,
    /// How many of each `tls_rejected` reason.
    pub reasons: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `start`, `reload`, `reload_failed` or `stop`.
    pub action: String,
    pub config_sha256: String,
}

/// A use of the audit trail itself, by the auditor's console ("audit log used", as ATNA asks):
/// who looked, at what, and how much they saw. A certificate refused by the console is
/// recorded too (`decision: deny`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditAccess {
    /// The auditor's certificate: organisation, subject, fingerprint, address.
    pub client: Client,
    /// `search`, `patient`, `organisation`, `overview`, `export_csv`, `export_fhir`.
    pub action: Word,
    /// `allow`, or `deny` for a certificate that is not an auditor's.
    pub decision: Word,
    /// The filters as given (name → value); patient identifiers are kept here, in the trail,
    /// and nowhere else.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub filters: std::collections::BTreeMap<String, String>,
    /// How many rows were shown or exported.
    pub rows: u64,
}
