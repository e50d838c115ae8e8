//! The console's pages, each rendered from the index in one function: the overview, the search
//! (and its exports), a patient's page and an organisation's page. Every value from the index
//! goes through `html::esc` or `html::url`; numbers are formatted here.

use super::html::{esc, url};
use super::{html_page, svg, Access, Rendered, Viewer};
use crate::audit::alerts::{Alert, AlertSettings};
use crate::audit::index::{self, IndexError, IndexStore, Micros, RequestRow, Search};
use crate::audit::query::{self, Filters};
use bytes::Bytes;
use http::header::HeaderValue;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Rows a page shows at most (an export has no limit but this one, larger).
const PAGE_ROWS: u64 = 500;
const EXPORT_ROWS: u64 = 1_000_000;
const DAY: Micros = 86_400_000_000;

/// A page, as its URL asks for it.
#[derive(Debug)]
pub enum View {
    Overview { days: i64 },
    Search(Form),
    Patient(String),
    Org { code: String, days: i64 },
    Export(Form, Export),
}

#[derive(Debug, Clone, Copy)]
pub enum Export {
    Csv,
    Fhir,
}

/// The search form's fields as typed (kept to redisplay them and to record them).
#[derive(Debug, Default, Clone)]
pub struct Form {
    pub fields: BTreeMap<String, String>,
}

const FORM_FIELDS: &[(&str, &str)] = &[
    ("patient", "NHS number or patient id"),
    ("org", "Organisation (ODS code)"),
    ("study", "Study instance UID"),
    ("route", "Route"),
    ("decision", "Decision (allow or deny)"),
    ("since", "Since (date or RFC 3339)"),
    ("until", "Until (date or RFC 3339)"),
];

/// A typed value longer than this is cut: no filter is that long, and the record of the search
/// stays small.
const MAX_FIELD: usize = 256;

impl Form {
    fn from(query: &[(String, String)]) -> Form {
        let mut fields = BTreeMap::new();
        for (k, v) in query {
            let v = v.trim();
            if FORM_FIELDS.iter().any(|f| f.0 == k) && !v.is_empty() {
                let cut = v.char_indices().nth(MAX_FIELD).map_or(v, |(i, _)| &v[..i]);
                fields.insert(k.clone(), cut.to_string());
            }
        }
        Form { fields }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    /// The index's search for these fields, or the first field that makes no sense.
    fn search(&self, limit: u64) -> Result<Search, String> {
        let bad = |e: query::QueryError| e.to_string();
        Ok(Search {
            filters: Filters {
                org: self.get("org").map(str::to_ascii_uppercase),
                patient: self.get("patient").map(str::to_string),
                study: self.get("study").map(str::to_string),
                route: self.get("route").map(str::to_string),
                decision: self.get("decision").map(str::parse).transpose().map_err(bad)?,
                since: self.get("since").map(query::parse_since).transpose().map_err(bad)?,
                until: self.get("until").map(query::parse_until).transpose().map_err(bad)?,
                request_id: None,
                client_request_id: None,
            },
            limit: Some(limit),
            newest_first: true,
            ..Default::default()
        })
    }

    /// The fields as a query string, for links to the exports.
    fn query_string(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            let _ = write!(s, "{}{}={}", if s.is_empty() { "" } else { "&" }, url(k), url(v));
        }
        s
    }
}

impl View {
    pub fn parse(path: &str, query: &[(String, String)]) -> Option<View> {
        let days = || {
            query
                .iter()
                .find(|(k, _)| k == "days")
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .map_or(7, |d| d.clamp(1, 400))
        };
        let segment = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|s| !s.is_empty() && !s.contains('/'))
                .map(|s| {
                    super::html::form_pairs(&format!("x={s}"))
                        .next()
                        .map(|p| p.1)
                        .unwrap_or_default()
                })
        };
        Some(match path {
            "/" => View::Overview { days: days() },
            "/search" => View::Search(Form::from(query)),
            "/export.csv" => View::Export(Form::from(query), Export::Csv),
            "/export.ndjson" => View::Export(Form::from(query), Export::Fhir),
            _ => {
                if let Some(p) = segment("/patient/") {
                    View::Patient(p)
                } else if let Some(o) = segment("/org/") {
                    View::Org {
                        code: o.to_ascii_uppercase(),
                        days: days(),
                    }
                } else {
                    return None;
                }
            }
        })
    }
}

/// Renders `view` from the index at `db` (and, for exports, the records in `audit_dir`).
pub fn render(
    db: &Path,
    audit_dir: &Path,
    settings: &AlertSettings,
    viewer: &Viewer,
    view: &View,
) -> Result<Rendered, IndexError> {
    let store = index::open(db)?;
    let now = now_micros();
    match view {
        View::Overview { days } => overview(&store, viewer, now, *days, settings),
        View::Search(form) => search(&store, viewer, form),
        View::Patient(id) => patient(&store, viewer, id),
        View::Org { code, days } => org(&store, viewer, code, now, *days),
        View::Export(form, format) => export(audit_dir, form, *format),
    }
}

fn html(title: &str, viewer: &Viewer, body: &str, access: Access) -> Rendered {
    Rendered {
        body: Bytes::from(html_page(title, viewer, body)),
        content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        download: None,
        access: Some(access),
        alerts: Vec::new(),
    }
}

// === overview ===

fn overview(
    store: &dyn IndexStore,
    viewer: &Viewer,
    now: Micros,
    days: i64,
    settings: &AlertSettings,
) -> Result<Rendered, IndexError> {
    let since = now - days * DAY;
    let o = store.overview(since, now + 1)?;
    let health = store.health()?;
    let mut b = String::new();
    let _ = write!(b, "<h1>Overview, last {days} days</h1>");
    let alerts = alerts_section(&mut b, store, now, settings);
    health_section(&mut b, &health, now);

    b.push_str("<h2>Traffic per organisation and class</h2>");
    let mut per_org: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &o.traffic {
        *per_org.entry(c.key.as_str()).or_default() += c.count;
    }
    let chart: Vec<(String, u64)> = per_org.iter().map(|(k, v)| (label(k), *v)).collect();
    b.push_str(&svg::bars("requests per organisation", &chart));
    b.push_str("<table><tr><th>organisation</th><th>class</th><th>requests</th></tr>");
    for c in &o.traffic {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=num>{}</td></tr>",
            org_link(&c.key),
            esc(c.sub.as_deref().unwrap_or("-")),
            c.count
        );
    }
    b.push_str("</table>");
    counts_table(&mut b, "Refusals by reason", "reason", &o.refusals);
    counts_table(&mut b, "TLS rejections by reason", "reason", &o.tls_rejections);

    b.push_str("<h2>Audit log used</h2>");
    let uses = store.events(Some("audit_access"), since, now + 1, 20)?;
    b.push_str("<table><tr><th>time</th><th>who</th><th>what</th><th>rows</th></tr>");
    for e in &uses {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td></tr>",
            esc(&when(e.time)),
            esc(e.org.as_deref().unwrap_or("-")),
            esc(e.detail.as_deref().unwrap_or("")),
            e.count.unwrap_or(0)
        );
    }
    b.push_str("</table>");
    let mut filters = BTreeMap::new();
    filters.insert("days".into(), days.to_string());
    let mut page = html(
        "Overview",
        viewer,
        &b,
        Access {
            action: "overview",
            filters,
            rows: o.traffic.len() as u64,
        },
    );
    page.alerts = alerts;
    Ok(page)
}

/// The alerts of `audit::alerts` over the index, each with its evidence; answers them so that
/// the console counts and logs each new one once.
fn alerts_section(b: &mut String, store: &dyn IndexStore, now: Micros, settings: &AlertSettings) -> Vec<Alert> {
    b.push_str("<h2>Alerts</h2><div id=alerts>");
    let alerts = match crate::audit::alerts::evaluate(store, now, settings) {
        Ok(a) => a,
        Err(e) => {
            let _ = write!(
                b,
                "<p class=bad>The alerts could not be computed: {}</p></div>",
                esc(&e.to_string())
            );
            return Vec::new();
        }
    };
    if alerts.is_empty() {
        b.push_str("<p class=muted>No alerts.</p>");
    }
    for a in &alerts {
        let subject = if a.subject.bytes().all(|c| c.is_ascii_alphanumeric()) {
            org_link(&a.subject)
        } else {
            esc(&a.subject).to_string()
        };
        let _ = write!(
            b,
            "<div class=alert><strong>{}</strong> · {subject} · {}<br>{}<br><span class=muted>",
            esc(a.kind.as_str()),
            esc(&when(a.at)),
            esc(&a.summary)
        );
        for (i, (k, v)) in a.evidence.iter().enumerate() {
            let _ = write!(b, "{}{}: {}", if i > 0 { "; " } else { "" }, esc(k), esc(v));
        }
        b.push_str("</span></div>");
    }
    b.push_str("</div>");
    alerts
}

fn health_section(b: &mut String, h: &index::Health, now: Micros) {
    b.push_str("<h2>The trail's health</h2><table>");
    match &h.position {
        Some(p) => {
            let _ = write!(
                b,
                "<tr><th>last verified record</th><td>seq {} at {} ({} ago)</td></tr>",
                p.last_seq,
                esc(&when(p.last_time)),
                esc(&ago(now - p.last_time))
            );
            match &p.broken {
                Some(broken) => {
                    let _ = write!(
                        b,
                        "<tr><th>chain</th><td class=bad>BROKEN at {}: indexing stopped there</td></tr>",
                        esc(&broken.to_string())
                    );
                }
                None => b.push_str("<tr><th>chain</th><td class=ok>intact so far</td></tr>"),
            }
        }
        None => b.push_str("<tr><th>last verified record</th><td>nothing indexed yet</td></tr>"),
    }
    match h.last_checkpoint {
        Some((seq, time, next_due)) => {
            let overdue = next_due.is_some_and(|d| d < now);
            let _ = write!(
                b,
                "<tr><th>last checkpoint</th><td{}>seq {seq}, {} ago{}</td></tr>",
                if overdue { " class=bad" } else { "" },
                esc(&ago(now - time)),
                if overdue { " (the next is overdue)" } else { "" }
            );
        }
        None => b.push_str("<tr><th>last checkpoint</th><td>none yet</td></tr>"),
    }
    let _ = write!(
        b,
        "<tr><th>indexed</th><td>{} requests, {} other records</td></tr></table>",
        h.requests, h.events
    );
}

fn counts_table(b: &mut String, title: &str, what: &str, counts: &[index::Count]) {
    let _ = write!(b, "<h2>{}</h2>", esc(title));
    if counts.is_empty() {
        b.push_str("<p class=muted>None.</p>");
        return;
    }
    let _ = write!(b, "<table><tr><th>{}</th><th>count</th></tr>", esc(what));
    for c in counts {
        let _ = write!(b, "<tr><td>{}</td><td class=num>{}</td></tr>", esc(&c.key), c.count);
    }
    b.push_str("</table>");
}

// === search ===

fn search(store: &dyn IndexStore, viewer: &Viewer, form: &Form) -> Result<Rendered, IndexError> {
    let mut b = String::from("<h1>Search the trail</h1><form class=search method=get action=\"/search\">");
    for (name, label) in FORM_FIELDS {
        let _ = write!(
            b,
            "<label>{}<input name=\"{name}\" value=\"{}\"></label>",
            esc(label),
            esc(form.get(name).unwrap_or(""))
        );
    }
    b.push_str("<button type=submit>Search</button></form>");
    let (rows, n) = if form.fields.is_empty() {
        (Vec::new(), 0)
    } else {
        match form.search(PAGE_ROWS) {
            Ok(s) => {
                let rows = store.search(&s)?;
                let n = rows.len() as u64;
                let qs = form.query_string();
                let _ = write!(
                    b,
                    "<p>{n} request(s){}. Export: <a href=\"/export.csv?{qs}\">CSV</a> · <a href=\"/export.ndjson?{qs}\">FHIR AuditEvent (NDJSON)</a></p>",
                    if n == PAGE_ROWS { ", the newest shown" } else { "" },
                );
                (rows, n)
            }
            Err(why) => {
                let _ = write!(b, "<p class=bad>{}</p>", esc(&why));
                (Vec::new(), 0)
            }
        }
    };
    requests_table(&mut b, &rows);
    Ok(html(
        "Search",
        viewer,
        &b,
        Access {
            action: "search",
            filters: form.fields.clone(),
            rows: n,
        },
    ))
}

fn requests_table(b: &mut String, rows: &[RequestRow]) {
    if rows.is_empty() {
        return;
    }
    b.push_str("<table class=requests><tr><th>time</th><th>organisation</th><th>method</th><th>path</th><th>route</th><th>decision</th><th>rule or reason</th><th>status</th><th>outcome</th><th>bytes in/out</th><th>ms</th><th>patients</th></tr>");
    for r in rows {
        let c = r.complete.as_ref();
        let decision = if r.decision == "allow" {
            esc(&r.decision).to_string()
        } else {
            format!("<span class=deny>{}</span>", esc(&r.decision))
        };
        let why = if r.decision == "allow" {
            r.rule.as_deref().unwrap_or("")
        } else {
            r.reason.as_str()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{decision}</td><td>{}{}</td><td class=num>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td>",
            esc(&when(r.time)),
            org_link(r.org.as_deref().unwrap_or("")),
            esc(&r.method),
            esc(&r.path),
            esc(r.route.as_deref().unwrap_or("-")),
            esc(why),
            if r.break_glass_reason.is_some() { " <span class=deny>break-glass</span>" } else { "" },
            c.map_or(String::from("-"), |c| c.status.to_string()),
            esc(c.map_or("-", |c| c.outcome.as_str())),
            c.map_or(String::from("-"), |c| format!("{}/{}", c.bytes_in, c.bytes_out)),
            c.map_or(String::from("-"), |c| c.duration_ms.to_string()),
        );
        for p in r.nhs_numbers.iter().chain(&r.patient_ids) {
            let _ = write!(b, "<a href=\"/patient/{}\">{}</a> ", url(p), esc(p));
        }
        b.push_str("</td></tr>");
    }
    b.push_str("</table>");
}

fn org_link(code: &str) -> String {
    if code.is_empty() {
        "-".into()
    } else {
        format!("<a href=\"/org/{}\">{}</a>", url(code), esc(code))
    }
}

fn label(code: &str) -> String {
    if code.is_empty() {
        "(none)".into()
    } else {
        code.to_string()
    }
}

// === patient ===

fn patient(store: &dyn IndexStore, viewer: &Viewer, id: &str) -> Result<Rendered, IndexError> {
    let search = Search {
        filters: Filters {
            patient: Some(id.to_string()),
            ..Default::default()
        },
        limit: Some(EXPORT_ROWS),
        newest_first: true,
        ..Default::default()
    };
    let rows = store.search(&search)?;
    let mut b = format!("<h1>Patient {}</h1>", esc(id));
    let _ = write!(
        b,
        "<p>{} access(es) by {} organisation(s). Export: <a href=\"/export.csv?patient={id}\">CSV</a> · <a href=\"/export.ndjson?patient={id}\">FHIR AuditEvent (NDJSON)</a></p>",
        rows.len(),
        rows.iter().filter_map(|r| r.org.as_deref()).collect::<std::collections::BTreeSet<_>>().len(),
        id = url(id)
    );
    let mut lanes: BTreeMap<String, Vec<Micros>> = BTreeMap::new();
    for r in &rows {
        lanes
            .entry(label(r.org.as_deref().unwrap_or("")))
            .or_default()
            .push(r.time);
    }
    if !rows.is_empty() {
        b.push_str("<h2>Timeline by organisation</h2>");
        b.push_str(&svg::timeline(
            "accesses by organisation",
            &lanes.into_iter().collect::<Vec<_>>(),
        ));
    }
    b.push_str("<h2>Every access</h2>");
    requests_table(&mut b, &rows);
    let mut filters = BTreeMap::new();
    filters.insert("patient".into(), id.to_string());
    Ok(html(
        "Patient",
        viewer,
        &b,
        Access {
            action: "patient",
            filters,
            rows: rows.len() as u64,
        },
    ))
}

// === organisation ===

fn org(store: &dyn IndexStore, viewer: &Viewer, code: &str, now: Micros, days: i64) -> Result<Rendered, IndexError> {
    let since = (now / DAY - days + 1) * DAY;
    let per_day = store.org_days(code, since, now + 1)?;
    let refusals = store.org_refusals(code, since, now + 1)?;
    let mut b = format!("<h1>Organisation {}, last {days} days</h1>", esc(code));
    let _ = write!(b, "<p><a href=\"/search?org={}\">Its requests</a></p>", url(code));
    let day = |d: &index::OrgDay| date(d.day);
    let chart = |title: &str, f: &dyn Fn(&index::OrgDay) -> u64| {
        svg::bars(title, &per_day.iter().map(|d| (day(d), f(d))).collect::<Vec<_>>())
    };
    let _ = write!(
        b,
        "<h2>Requests per day</h2>{}<h2>Distinct patients per day</h2>{}<h2>Bytes sent to it per day</h2>{}",
        chart("requests per day", &|d| d.requests),
        chart("distinct patients per day", &|d| d.patients),
        chart("bytes out per day", &|d| d.bytes_out),
    );
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for c in &refusals {
        *by_reason.entry(c.key.clone()).or_default() += c.count;
    }
    b.push_str("<h2>Refusals by reason</h2>");
    if by_reason.is_empty() {
        b.push_str("<p class=muted>None.</p>");
    } else {
        b.push_str(&svg::bars(
            "refusals by reason",
            &by_reason.into_iter().collect::<Vec<_>>(),
        ));
    }
    b.push_str("<h2>Per day</h2><table><tr><th>day</th><th>requests</th><th>refused</th><th>patients</th><th>bytes in</th><th>bytes out</th></tr>");
    for d in &per_day {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(&day(d)),
            d.requests,
            d.refused,
            d.patients,
            d.bytes_in,
            d.bytes_out
        );
    }
    b.push_str("</table>");
    let mut filters = BTreeMap::new();
    filters.insert("org".into(), code.to_string());
    filters.insert("days".into(), days.to_string());
    Ok(html(
        "Organisation",
        viewer,
        &b,
        Access {
            action: "organisation",
            filters,
            rows: per_day.len() as u64,
        },
    ))
}

// === exports ===

/// The export of a search: the trail itself read with `audit query --format csv`'s and `audit
/// export`'s own code (the same columns, the same formula neutralisation, the same AuditEvents),
/// so a file from the console and one from the command line agree byte for byte.
fn export(audit_dir: &Path, form: &Form, format: Export) -> Result<Rendered, IndexError> {
    let search = form.search(EXPORT_ROWS).map_err(IndexError::Other)?;
    let mut out = Vec::new();
    let rows = match format {
        Export::Csv => query::query(audit_dir, &search.filters, query::Format::Csv, &mut out),
        Export::Fhir => crate::audit::export::export_fhir(audit_dir, &search.filters, &mut out),
    }
    .map_err(|e| IndexError::Other(e.to_string()))?;
    let (action, content_type, name) = match format {
        Export::Csv => (
            "export_csv",
            "text/csv; charset=utf-8",
            "attachment; filename=\"caregate-audit.csv\"",
        ),
        Export::Fhir => (
            "export_fhir",
            "application/fhir+ndjson",
            "attachment; filename=\"caregate-auditevents.ndjson\"",
        ),
    };
    Ok(Rendered {
        body: Bytes::from(out),
        content_type: HeaderValue::from_static(content_type),
        download: Some(HeaderValue::from_static(name)),
        access: Some(Access {
            action,
            filters: form.fields.clone(),
            rows,
        }),
        alerts: Vec::new(),
    })
}

// === time ===

pub fn now_micros() -> Micros {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1000) as Micros
}

/// A time as people read it (UTC, to the second).
pub fn when(us: Micros) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

fn date(us: Micros) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

fn ago(us: Micros) -> String {
    let s = (us / 1_000_000).max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}
