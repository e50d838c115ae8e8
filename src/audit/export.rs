//! `caregate audit export --format fhir`: each request as a FHIR R4 `AuditEvent`, one per line
//! (NDJSON, as FHIR bulk data uses), shaped like IHE BALP (Basic Audit Log Patterns) so that a
//! national audit repository or any FHIR server can take them in; with `--all-events`, refused
//! handshakes and the gateway's own starts, stops and reloads too, as ATNA (DICOM PS3.15) codes
//! them.
//!
//! | request | `action` | `subtype` | client agent | server agent |
//! | --- | --- | --- | --- | --- |
//! | FHIR read, vread, history-instance, capabilities | R | the restful-interaction | Destination 110152 | Source 110153 |
//! | FHIR search (GET, `_search`), history-type/-system | E | the restful-interaction | Source 110153 | Destination 110152 |
//! | FHIR operation (`$name`, also a Spine `…:operation:name-1`) | E | `operation`, `$name` | Source | Destination |
//! | FHIR create / update, patch / delete | C / U / D | the restful-interaction | Source | Destination |
//! | DICOMweb retrieve (WADO-RS) | R | — (`type` DCM 110103) | Destination | Source |
//! | DICOMweb search (QIDO-RS) | E | — (`type` DCM 110112) | Source | Destination |
//! | DICOMweb store (STOW-RS) / delete | C (PUT: U) / D | — (`type` DCM 110103) | Source | Destination |
//!
//! A Spine-labelled request (`Ssp-InteractionID`) takes the interaction its label names
//! (`…:rest:read:…` a read, `…:rest:search:…` a search, `…:rest:cancel:…` an update), and the
//! label itself as a further `subtype` coding. Entities: a patient (type 1 Person, role 1 Patient)
//! for every NHS number and every other patient id the record holds; the FHIR resource (type 2,
//! role 4) when the path names one; a study (type 2, role 3, identifier type DCM 110180) for
//! every DICOM study; for searches and operations the request itself (role 24 Query, `query`
//! the base64 of `METHOD host/path?query` as BALP's examples record it, `description` the query
//! string); and caregate's `X-Request-Id` (BALP `XrequestId`), with the client's own id and the
//! `Ssp-TraceID` as details. `outcome`: see [`request::outcome`]. The id of every event is the
//! `hash` of the record it comes from: valid as a FHIR id, unique, and a pointer into the trail.
//!
//! BALP's PatientRead and PatientQuery allow one patient per event and ask for one event per
//! patient; this export writes one event per request with one entity per patient, so a
//! request naming several patients conforms to BALP's Read and Query profiles, not to their
//! Patient variants.

mod classify;
pub mod fhir;
mod request;
mod system;

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::query::{for_each_entry, Entry, Filters, QueryError};
use fhir::{Coding, Concept, Identifier, Network, Text};

pub use classify::{classify, Class, Protocol};
pub use request::audit_event;
pub use system::system_event;

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SYSTEM_OBJECT: Coding<'static> = Coding::new(ENTITY_TYPE, "2", "System Object");

/// What `caregate audit export DIR --format fhir [filters] [--all-events]` needs.
#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub dir: PathBuf,
    pub filters: Filters,
    /// Also `tls_rejected` and `lifecycle` records (within `--since`/`--until`; any other
    /// filter names requests and leaves them out).
    pub all_events: bool,
}

/// The command: writes one AuditEvent per matching request (and record, with `all_events`);
/// returns how many. Errors (and exit codes) are those of `audit query`.
pub fn run(args: &ExportArgs, out: &mut impl Write) -> Result<u64, QueryError> {
    export(&args.dir, &args.filters, args.all_events, out)
}

/// The requests only.
pub fn export_fhir(dir: &Path, filters: &Filters, out: &mut impl Write) -> Result<u64, QueryError> {
    export(dir, filters, false, out)
}

pub fn export(dir: &Path, filters: &Filters, all_events: bool, out: &mut impl Write) -> Result<u64, QueryError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let n = for_each_entry(dir, filters, all_events, |entry| {
        match entry {
            Entry::Request(row) => request::write(&row, &mut out)?,
            Entry::System(record) => system::write(&record, &mut out)?,
        }
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

// === shared by the event kinds ===

const fn dcm(code: &'static str, display: &'static str) -> Coding<'static> {
    Coding::new(DCM, code, display)
}

/// The AuditEvent id: the record's hash (64 hex digits fit FHIR's `[A-Za-z0-9\-\.]{1,64}`), or
/// `seq-N` for a record without a usable one.
fn event_id(hash: &str, seq: u64) -> Text<'_> {
    let ok = (1..=64).contains(&hash.len())
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Cow::Borrowed(hash)
    } else {
        Cow::Owned(format!("seq-{seq}"))
    }
}

/// A network address as FHIR types it: `2` an IP address, `1` a machine name.
fn network(address: &str) -> Network<'_> {
    let ip = address.parse::<std::net::IpAddr>().is_ok()
        || address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
    Network {
        address,
        ty: if ip { "2" } else { "1" },
    }
}

/// `system|value` as a FHIR Identifier; a value alone (or a system FHIR would refuse as a URI)
/// keeps the whole text as the value.
fn identifier(text: &str) -> Identifier<'_> {
    match text.split_once('|') {
        Some((system, value)) if is_uri(system) && !value.trim().is_empty() => Identifier::new(Some(system), value),
        _ => Identifier::new(None, text),
    }
}

/// `system|code` as a CodeableConcept; anything else as its text.
fn concept_of(text: &str) -> Concept<'_> {
    match text.split_once('|') {
        Some((system, code)) if is_uri(system) && is_code(code) => Concept::of(Coding {
            system: Some(system),
            code,
            display: None,
        }),
        _ => Concept {
            coding: Vec::new(),
            text: Some(text),
        },
    }
}

fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace) && s.contains(':')
}

/// FHIR's `code`: no leading, trailing or double whitespace.
fn is_code(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace) && !s.contains("  ")
}
