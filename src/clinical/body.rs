//! Request bodies that can name patients: FHIR JSON (a resource, a `Parameters` of an
//! operation, a `transaction` or `batch` Bundle) and the form body of `POST [type]/_search`.
//!
//! Pure like the rest: the caller reads the body (up to the route's `inspect_body_limit`) and
//! hands it over; nothing is logged. JSON is parsed with serde_json's recursion limit (128), so
//! hostile nesting is refused (as not JSON), never a stack overflow.

use super::nhs::ten_digits;
use super::{names, parse, search, Facts, Options};
use http::{HeaderMap, Method};
use serde_json::{Map, Value};

/// Why a body could not be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The content type says JSON, but the body is not JSON (or is nested past the limit).
    #[error("the request body is declared as JSON but is not valid JSON")]
    NotJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
}

/// The media type of a `Content-Type` value, parameters (`; charset=utf-8`) and case aside:
/// JSON (`application/json`, `application/fhir+json`, STU3's `application/json+fhir`, any
/// `…+json`, `text/json`) or a form (`application/x-www-form-urlencoded`).
fn kind(content_type: Option<&[u8]>) -> Option<Kind> {
    let v = content_type?;
    let essence = v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let is = |t: &[u8]| essence.eq_ignore_ascii_case(t);
    let ends = |t: &[u8]| essence.len() > t.len() && essence[essence.len() - t.len()..].eq_ignore_ascii_case(t);
    if is(b"application/x-www-form-urlencoded") {
        Some(Kind::Form)
    } else if is(b"application/json") || is(b"text/json") || is(b"application/json+fhir") || ends(b"+json") {
        Some(Kind::Json)
    } else {
        None
    }
}

/// Whether a body of this content type is read for patient identifiers: the caller reads the
/// body (within the limit) only when it is.
pub fn inspectable(content_type: Option<&[u8]>) -> bool {
    kind(content_type).is_some()
}

/// Adds the patients a request body names to `facts` (which [`parse`] made from the request's
/// head: the body of `POST Patient/_search` is read as a Patient search). A body that is not
/// [`inspectable`] names nothing; one that says JSON but is not is an error (400).
pub fn inspect_body(
    content_type: Option<&[u8]>,
    body: &[u8],
    opts: &Options,
    facts: &mut Facts,
) -> Result<(), BodyError> {
    match kind(content_type) {
        None => Ok(()),
        Some(_) if body.trim_ascii().is_empty() => Ok(()),
        Some(Kind::Form) => {
            // Form bodies are ASCII; a stray byte must not hide the parameters around it.
            search::params(facts, &String::from_utf8_lossy(body), opts);
            Ok(())
        }
        Some(Kind::Json) => {
            // A byte order mark is not JSON, but some clients send one: it hides nothing.
            let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
            let v: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
            Walk { f: facts, opts }.value(&v);
            Ok(())
        }
    }
}

/// A walk over the whole JSON document (its depth bounded by the parser): every Patient
/// resource, reference to a Patient, NHS-number identifier, `Parameters` parameter and Bundle
/// entry request, wherever it is (contained resources, entries, parameters' resources).
struct Walk<'a> {
    f: &'a mut Facts,
    opts: &'a Options,
}

impl Walk<'_> {
    fn value(&mut self, v: &Value) {
        match v {
            Value::Object(m) => self.object(m),
            Value::Array(a) => a.iter().for_each(|x| self.value(x)),
            _ => {}
        }
    }

    fn object(&mut self, m: &Map<String, Value>) {
        match str_of(m, "resourceType") {
            Some("Patient") => self.patient(m),
            Some("Parameters") => {
                for p in array_of(m, "parameter") {
                    self.parameter(p);
                }
            }
            Some("Bundle") => {
                for e in array_of(m, "entry") {
                    self.entry_request(e);
                }
            }
            _ => {}
        }
        // An identifier anywhere with an NHS-number system (a `valueIdentifier`, a logical
        // reference's identifier, a contained Patient's).
        if let (Some(system), Some(value)) = (str_of(m, "system"), str_of(m, "value")) {
            names::identifier(self.f, Some(system), value, false);
        }
        // A reference anywhere: `subject`, `patient`, `performer`, `link.other`…
        if let Some(r) = str_of(m, "reference") {
            self.reference(r);
        }
        // A logical reference to the patient by identifier, of any system.
        for key in ["subject", "patient", "beneficiary"] {
            if let Some(Value::Object(i)) = m.get(key).and_then(|r| r.get("identifier")) {
                self.identifier(i, true);
            }
        }
        for v in m.values() {
            self.value(v);
        }
    }

    /// A Patient resource: its id and every identifier.
    fn patient(&mut self, m: &Map<String, Value>) {
        if let Some(id) = str_of(m, "id") {
            names::patient_id(self.f, id, self.opts, false);
        }
        for i in array_of(m, "identifier") {
            if let Value::Object(i) = i {
                self.identifier(i, true);
            }
        }
    }

    fn identifier(&mut self, i: &Map<String, Value>, patients: bool) {
        if let Some(value) = str_of(i, "value") {
            names::identifier(self.f, str_of(i, "system"), value, patients);
        }
    }

    /// `Patient/{id}`, `https://…/Patient/{id}`, or a conditional `Patient?identifier=…`.
    fn reference(&mut self, r: &str) {
        if let Some(id) = names::patient_in_reference(r) {
            names::patient_id(self.f, id, self.opts, false);
        } else if let Some((path, _)) = r.split_once('?') {
            if path.rsplit('/').next() == Some("Patient") {
                self.url(&Method::GET, r, None);
            }
        }
    }

    /// A parameter of an operation (and its parts): GP Connect's `patientNHSNumber`, any
    /// identifier, reference or text value of a parameter named for a patient or identifier.
    fn parameter(&mut self, p: &Value) {
        let Value::Object(p) = p else { return };
        let name = str_of(p, "name").unwrap_or("").to_ascii_lowercase();
        let patients = ["patient", "identifier", "nhs", "subject"]
            .iter()
            .any(|n| name.contains(n));
        if let Some(Value::Object(i)) = p.get("valueIdentifier") {
            self.identifier(i, patients);
        }
        if let Some(r) = p
            .get("valueReference")
            .and_then(|r| r.get("reference"))
            .and_then(Value::as_str)
        {
            self.reference(r);
        }
        if patients {
            if let Some(Value::Object(i)) = p.get("valueReference").and_then(|r| r.get("identifier")) {
                self.identifier(i, true);
            }
            for key in ["valueString", "valueCode", "valueId", "valueUri"] {
                if let Some(v) = str_of(p, key) {
                    self.text(&name, v);
                }
            }
        }
        for part in array_of(p, "part") {
            self.parameter(part);
        }
    }

    /// A text value of a patient parameter: a `system|value` token, a reference, or a bare id
    /// (an NHS number where the parameter is named for one).
    fn text(&mut self, name: &str, v: &str) {
        if v.contains('|') {
            names::token(self.f, v, true);
        } else if name.contains("nhs") && ten_digits(v.trim()) {
            names::identifier(self.f, Some("https://fhir.nhs.uk/Id/nhs-number"), v, true);
        } else if name.contains("identifier") {
            names::identifier(self.f, None, v, true);
        } else {
            names::reference_value(self.f, v, self.opts);
        }
    }

    /// A Bundle entry's `request`: its URL read as a request of its own, and a conditional
    /// create's `ifNoneExist` as a search of the same type.
    fn entry_request(&mut self, e: &Value) {
        let Some(Value::Object(r)) = e.get("request") else {
            return;
        };
        let Some(url) = str_of(r, "url") else { return };
        let method = str_of(r, "method")
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(Method::GET);
        self.url(&method, url, str_of(r, "ifNoneExist"));
    }

    fn url(&mut self, method: &Method, url: &str, extra_query: Option<&str>) {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        let mut sub = parse(method, path, query, &HeaderMap::new(), self.opts);
        if let Some(q) = extra_query {
            search::params(&mut sub, q, self.opts);
        }
        merge(self.f, sub);
    }
}

/// The patients and studies of `sub` (an entry's request) into `f`.
fn merge(f: &mut Facts, sub: Facts) {
    for n in &sub.clinical.nhs_numbers {
        names::nhs(f, n);
    }
    for p in &sub.clinical.patient_ids {
        names::patient(f, p);
    }
    for s in &sub.clinical.study_uids {
        names::study(f, s);
    }
    if f.invalid_nhs_number.is_none() {
        f.invalid_nhs_number = sub.invalid_nhs_number;
    }
    f.unrecorded |= sub.unrecorded;
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn array_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    match m.get(key) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}
