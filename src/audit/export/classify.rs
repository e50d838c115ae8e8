//! What a request was, in BALP's terms: a FHIR RESTful interaction, a FHIR operation, or a
//! DICOMweb transaction; the AuditEvent's `action` follows from it, never from the HTTP method
//! alone (a GP Connect `$gpc.getstructuredrecord` is a POST that reads a record).

use crate::audit::record::Access;

/// The protocol a request spoke, which picks the AuditEvent `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// FHIR REST (and Spine-labelled FHIR): `type` `rest`, `subtype` the interaction.
    Fhir,
    /// DICOMweb: `type` DCM 110103 (instances accessed) or 110112 (query).
    Dicom,
}

/// One request, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub protocol: Protocol,
    /// FHIR: a code of `http://hl7.org/fhir/restful-interaction` (`read`, `search-type`,
    /// `operation`…). DICOMweb: `retrieve`, `search`, `store` or `delete`.
    pub interaction: &'static str,
    /// `$name` when the interaction is an operation.
    pub operation: Option<String>,
    /// The `Ssp-InteractionID` that labelled the request, as sent.
    pub spine: Option<String>,
    /// `C`, `R`, `U`, `D` or `E`.
    pub action: &'static str,
}

impl Class {
    /// BALP's reads (read, vread, history-instance, a DICOM retrieve): the client is the
    /// Destination of the data, the server its Source. Otherwise the other way round.
    pub fn is_read(&self) -> bool {
        self.action == "R"
    }

    /// Searches and operations (and QIDO queries) carry the request as a query entity.
    pub fn is_query(&self) -> bool {
        self.action == "E"
    }
}

/// The codes of `http://hl7.org/fhir/restful-interaction` (R4).
const FHIR_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
];

/// The AuditEvent action of a FHIR interaction (BALP: reads R, searches and operations E).
fn fhir_action(interaction: &str) -> &'static str {
    match interaction {
        "read" | "vread" | "history-instance" | "capabilities" => "R",
        "create" => "C",
        "update" | "patch" => "U",
        "delete" => "D",
        _ => "E",
    }
}

pub fn classify(a: &Access) -> Class {
    let c = &a.clinical;
    let method = &*a.request.method;
    let path = &a.request.path;
    let spine = [
        c.ssp.as_ref().and_then(|s| s.interaction.as_deref()),
        c.interaction.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|i| i.starts_with("urn:nhs:names:services:"))
    .map(str::to_owned);
    let fhir_interaction = c
        .interaction
        .as_deref()
        .and_then(|i| FHIR_INTERACTIONS.iter().copied().find(|code| *code == i));
    let is_fhir = fhir_interaction.is_some() || c.fhir_type.is_some() || spine.is_some();
    if !is_fhir {
        if let Some(interaction) = dicom(method, path) {
            let action = match interaction {
                "retrieve" => "R",
                "store" if method == "PUT" => "U",
                "store" => "C",
                "delete" => "D",
                _ => "E",
            };
            return Class {
                protocol: Protocol::Dicom,
                interaction,
                operation: None,
                spine: None,
                action,
            };
        }
    }
    // An operation named anywhere (recorded, in the path, in the Spine label) is one.
    let operation = c
        .interaction
        .as_deref()
        .filter(|i| i.starts_with('$'))
        .map(str::to_owned)
        .or_else(|| path.split('/').find_map(operation_segment))
        .or_else(|| spine.as_deref().and_then(spine_operation));
    let interaction = if operation.is_some() {
        "operation"
    } else if let Some(code) = fhir_interaction {
        code
    } else if let Some(code) = spine.as_deref().and_then(spine_interaction) {
        code
    } else {
        from_path(method, path, c.fhir_id.is_some())
    };
    Class {
        protocol: Protocol::Fhir,
        interaction,
        operation,
        spine,
        action: fhir_action(interaction),
    }
}

/// `$name` or `%24name` as a path segment.
fn operation_segment(seg: &str) -> Option<String> {
    let name = seg.strip_prefix('$').or_else(|| seg.strip_prefix("%24"))?;
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| format!("${name}"))
}

/// `urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1` → `read`: the FHIR interaction
/// a Spine interaction ID labels, by the verb after `rest`.
fn spine_interaction(id: &str) -> Option<&'static str> {
    let mut parts = id.split(':').skip_while(|p| *p != "rest").skip(1);
    Some(match parts.next()? {
        "read" => "read",
        "search" => "search-type",
        "create" => "create",
        // GP Connect's cancel and amend are updates (PUT) of the resource.
        "update" | "amend" | "cancel" => "update",
        "patch" => "patch",
        "delete" => "delete",
        _ => return None,
    })
}

/// `urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1` →
/// `$gpc.getstructuredrecord`.
fn spine_operation(id: &str) -> Option<String> {
    let mut parts = id.split(':').skip_while(|p| *p != "operation").skip(1);
    let name = parts.next()?;
    let name = match name.rsplit_once('-') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => name,
    };
    operation_segment(&format!("${name}"))
}

/// The interaction from the method and path alone, for records that did not name one.
fn from_path(method: &str, path: &str, has_id: bool) -> &'static str {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    if segs.clone().any(|s| s == "_search") {
        return "search-type";
    }
    if let Some(i) = segs.clone().position(|s| s == "_history") {
        let versioned = segs.clone().nth(i + 1).is_some();
        return if versioned {
            "vread"
        } else if has_id {
            "history-instance"
        } else {
            "history-type"
        };
    }
    if method_is_read(method) && segs.next_back() == Some("metadata") {
        return "capabilities";
    }
    match method {
        "GET" | "HEAD" if has_id => "read",
        "GET" | "HEAD" => "search-type",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "operation",
    }
}

fn method_is_read(method: &str) -> bool {
    matches!(method, "GET" | "HEAD")
}

/// DICOMweb transactions by path (a `studies`, `series` or `instances` segment): a GET that
/// ends at a collection is a QIDO search; any other GET a WADO retrieve (of a study, series,
/// instance, its metadata, frames or rendering); POST and PUT STOW; DELETE a deletion.
fn dicom(method: &str, path: &str) -> Option<&'static str> {
    let is_collection = |s: &str| matches!(s, "studies" | "series" | "instances");
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    if !segs.clone().any(is_collection) {
        return None;
    }
    Some(match method {
        "GET" | "HEAD" if segs.next_back().is_some_and(is_collection) => "search",
        "GET" | "HEAD" => "retrieve",
        "POST" | "PUT" => "store",
        "DELETE" => "delete",
        _ => "search",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Access, Clinical, Request, Ssp};

    fn access(method: &'static str, path: &str, clinical: Clinical) -> Access {
        Access {
            request_id: "r".into(),
            client_request_id: None,
            client: Default::default(),
            request: Request {
                method: method.into(),
                host: None,
                path: path.into(),
                path_params: Vec::new(),
                query: None,
                version: "HTTP/1.1".into(),
            },
            route: None,
            class: None,
            decision: "allow".into(),
            reason: "allowed".into(),
            rule: None,
            break_glass: None,
            clinical,
            body_inspected: None,
        }
    }

    fn class(method: &'static str, path: &str, interaction: Option<&str>) -> (&'static str, &'static str) {
        let c = Clinical {
            interaction: interaction.map(str::to_owned),
            ..Clinical::default()
        };
        let k = classify(&access(method, path, c));
        (k.interaction, k.action)
    }

    #[test]
    fn fhir_interactions_pick_the_action() {
        assert_eq!(class("GET", "/fhir/Patient/1", Some("read")), ("read", "R"));
        assert_eq!(
            class("GET", "/fhir/Patient/1/_history/2", Some("vread")),
            ("vread", "R")
        );
        assert_eq!(class("GET", "/fhir/Patient/_history", None), ("history-type", "E"));
        assert_eq!(
            class("GET", "/fhir/Patient/1/_history", Some("history-instance")),
            ("history-instance", "R")
        );
        assert_eq!(
            class("POST", "/fhir/Patient/_search", Some("search-type")),
            ("search-type", "E")
        );
        assert_eq!(class("POST", "/fhir/Patient/_search", None), ("search-type", "E"));
        assert_eq!(class("POST", "/fhir/Observation", Some("create")), ("create", "C"));
        assert_eq!(class("PUT", "/fhir/Observation/1", Some("update")), ("update", "U"));
        assert_eq!(class("DELETE", "/fhir/Observation/1", None), ("delete", "D"));
        assert_eq!(
            class("GET", "/fhir/metadata", Some("capabilities")),
            ("capabilities", "R")
        );
        assert_eq!(
            class("GET", "/fhir/Patient/1/$everything", Some("$everything")),
            ("operation", "E")
        );
    }

    #[test]
    fn spine_labels_never_make_a_read_a_create() {
        let gpc = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
        let path = "/B82617/STU3/1/gpconnect/structured/fhir/Patient/$gpc.getstructuredrecord";
        let k = classify(&access(
            "POST",
            path,
            Clinical {
                interaction: Some(gpc.into()),
                fhir_type: Some("Patient".into()),
                ..Clinical::default()
            },
        ));
        assert_eq!((k.interaction, k.action), ("operation", "E"));
        assert_eq!(k.operation.as_deref(), Some("$gpc.getstructuredrecord"));
        assert_eq!(k.spine.as_deref(), Some(gpc));
        // The operation from the label alone, when the path does not say it.
        let k = classify(&access(
            "POST",
            "/gpc/structured",
            Clinical {
                ssp: Some(Box::new(Ssp {
                    interaction: Some(gpc.into()),
                    ..Ssp::default()
                })),
                ..Clinical::default()
            },
        ));
        assert_eq!(
            (k.operation.as_deref(), k.action),
            (Some("$gpc.getstructuredrecord"), "E")
        );
        let read = "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1";
        assert_eq!(class("GET", "/gpc/fhir/Patient/9", Some(read)), ("read", "R"));
        let search = "urn:nhs:names:services:gpconnect:fhir:rest:search:patient-1";
        assert_eq!(class("GET", "/gpc/fhir/Patient", Some(search)), ("search-type", "E"));
        let cancel = "urn:nhs:names:services:gpconnect:fhir:rest:cancel:appointment-1";
        assert_eq!(class("PUT", "/gpc/fhir/Appointment/4", Some(cancel)), ("update", "U"));
        let book = "urn:nhs:names:services:gpconnect:fhir:rest:create:appointment-1";
        assert_eq!(class("POST", "/gpc/fhir/Appointment", Some(book)), ("create", "C"));
    }

    #[test]
    fn dicomweb_transactions() {
        let uid = "1.2.826.0.1.3680043.2.1125.1";
        let d = |m, p: &str| {
            let k = classify(&access(m, p, Clinical::default()));
            assert_eq!(k.protocol, Protocol::Dicom, "{m} {p}");
            (k.interaction, k.action)
        };
        assert_eq!(d("GET", "/dicomweb/studies"), ("search", "E"));
        assert_eq!(d("GET", &format!("/dicomweb/studies/{uid}/series")), ("search", "E"));
        assert_eq!(
            d("GET", &format!("/dicomweb/studies/{uid}/series/1.2/instances")),
            ("search", "E")
        );
        assert_eq!(d("GET", &format!("/dicomweb/studies/{uid}")), ("retrieve", "R"));
        assert_eq!(
            d("GET", &format!("/dicomweb/studies/{uid}/metadata")),
            ("retrieve", "R")
        );
        assert_eq!(
            d(
                "GET",
                &format!("/dicomweb/studies/{uid}/series/1.2/instances/1.3/frames/1")
            ),
            ("retrieve", "R")
        );
        assert_eq!(d("POST", "/dicomweb/studies"), ("store", "C"));
        assert_eq!(d("DELETE", &format!("/dicomweb/studies/{uid}")), ("delete", "D"));
    }
}
