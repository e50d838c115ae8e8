//! The output formats: an aligned table for people, JSON lines and RFC 4180 CSV for tools.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use super::{for_each_row, Filters, QueryError, Row};

/// Rows buffered to size the table's columns before streaming the rest at those widths.
const TABLE_SAMPLE: usize = 256;

/// `--format`: how rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl FromStr for Format {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Format, QueryError> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(QueryError::BadFilter(format!(
                "--format must be table, json or csv, not {s:?}"
            ))),
        }
    }
}

/// Writes the requests in the trail at `dir` that match `filters` to `out` in `format`;
/// returns how many.
pub fn query(dir: &Path, filters: &Filters, format: Format, out: &mut impl Write) -> Result<u64, QueryError> {
    write_rows(format, out, |emit| for_each_row(dir, filters, emit))
}

/// Writes the rows that `rows` hands to its callback to `out` in `format`; returns how many.
/// `audit query` streams them from the trail, `audit query --db` from the index.
pub fn write_rows(
    format: Format,
    out: &mut impl Write,
    rows: impl FnOnce(&mut dyn FnMut(Row) -> Result<(), QueryError>) -> Result<u64, QueryError>,
) -> Result<u64, QueryError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let n = match format {
        Format::Json => rows(&mut |row| {
            serde_json::to_writer(&mut out, &row).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            Ok(())
        })?,
        Format::Csv => {
            write_csv_record(&mut out, CSV_COLUMNS.iter().map(|c| Cow::Borrowed(c.0)))?;
            rows(&mut |row| {
                write_csv_record(&mut out, CSV_COLUMNS.iter().map(|c| (c.1)(&row)))?;
                Ok(())
            })?
        }
        Format::Table => {
            let mut table = Table::default();
            let n = rows(&mut |row| table.push(&mut out, row))?;
            table.finish(&mut out)?;
            n
        }
    };
    out.flush()?;
    Ok(n)
}

type Column = (&'static str, fn(&Row) -> Cow<'_, str>);

fn opt<T: AsRef<str>>(s: &Option<T>) -> Cow<'_, str> {
    Cow::Borrowed(s.as_ref().map_or("", |s| s.as_ref()))
}

fn num(n: Option<impl ToString>) -> Cow<'static, str> {
    n.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string()))
}

/// A list joined with `;`; borrowed when it holds one value (the common case).
fn list(items: &[String]) -> Cow<'_, str> {
    match items {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join(";")),
    }
}

/// Every value of a list field, or its first-format single field when only that was written.
fn all<'a>(items: &'a [String], first: &'a Option<String>) -> Cow<'a, str> {
    if items.is_empty() {
        opt(first)
    } else {
        list(items)
    }
}

/// Every patient the request named: its NHS numbers, then its other patient ids.
fn patients(r: &Row) -> Cow<'_, str> {
    let c = &r.access.clinical;
    let nhs = all(&c.nhs_numbers, &c.nhs_number);
    match (nhs.is_empty(), c.patient_ids.is_empty()) {
        (_, true) => nhs,
        (true, false) => list(&c.patient_ids),
        (false, false) => Cow::Owned(format!("{nhs};{}", c.patient_ids.join(";"))),
    }
}

/// The table's columns: what an auditor scans for. `patients` and `studies` list every one the
/// request named, joined with `;`.
const TABLE_COLUMNS: &[Column] = &[
    ("time", |r| Cow::Borrowed(&r.time)),
    ("request_id", |r| Cow::Borrowed(&r.access.request_id)),
    ("client_request_id", |r| opt(&r.access.client_request_id)),
    ("org", |r| opt(&r.access.client.org)),
    ("org_name", |r| opt(&r.access.client.org_name)),
    ("method", |r| Cow::Borrowed(&r.access.request.method)),
    ("path", |r| Cow::Borrowed(&r.access.request.path)),
    ("route", |r| opt(&r.access.route)),
    ("decision", |r| Cow::Borrowed(&r.access.decision)),
    ("reason", |r| Cow::Borrowed(&r.access.reason)),
    ("status", |r| num(r.complete.as_ref().map(|c| c.status))),
    ("outcome", |r| {
        Cow::Borrowed(r.complete.as_ref().map_or("", |c| &c.outcome))
    }),
    ("patients", patients),
    ("studies", |r| {
        all(&r.access.clinical.study_uids, &r.access.clinical.study_uid)
    }),
];

/// CSV is for spreadsheets and scripts: the table's columns and the rest of the record. Lists
/// are joined with `;`; `nhs_number` and `study_uid` stay the first of each for older scripts.
const CSV_COLUMNS: &[Column] = &[
    ("time", |r| Cow::Borrowed(&r.time)),
    ("seq", |r| Cow::Owned(r.seq.to_string())),
    ("request_id", |r| Cow::Borrowed(&r.access.request_id)),
    ("org", |r| opt(&r.access.client.org)),
    ("org_name", |r| opt(&r.access.client.org_name)),
    ("subject", |r| opt(&r.access.client.subject)),
    ("ip", |r| Cow::Borrowed(&r.access.client.ip)),
    ("method", |r| Cow::Borrowed(&r.access.request.method)),
    ("host", |r| opt(&r.access.request.host)),
    ("path", |r| Cow::Borrowed(&r.access.request.path)),
    ("query", |r| opt(&r.access.request.query)),
    ("route", |r| opt(&r.access.route)),
    ("class", |r| opt(&r.access.class)),
    ("decision", |r| Cow::Borrowed(&r.access.decision)),
    ("reason", |r| Cow::Borrowed(&r.access.reason)),
    ("rule", |r| opt(&r.access.rule)),
    ("status", |r| num(r.complete.as_ref().map(|c| c.status))),
    ("outcome", |r| {
        Cow::Borrowed(r.complete.as_ref().map_or("", |c| &c.outcome))
    }),
    ("bytes_in", |r| num(r.complete.as_ref().map(|c| c.bytes_in))),
    ("bytes_out", |r| num(r.complete.as_ref().map(|c| c.bytes_out))),
    ("duration_ms", |r| num(r.complete.as_ref().map(|c| c.duration_ms))),
    ("nhs_number", |r| opt(&r.access.clinical.nhs_number)),
    ("study_uid", |r| opt(&r.access.clinical.study_uid)),
    ("fhir_type", |r| opt(&r.access.clinical.fhir_type)),
    ("fhir_id", |r| opt(&r.access.clinical.fhir_id)),
    ("interaction", |r| opt(&r.access.clinical.interaction)),
    // Added with several patients per record; the columns above keep their places.
    ("client_request_id", |r| opt(&r.access.client_request_id)),
    ("nhs_numbers", |r| {
        all(&r.access.clinical.nhs_numbers, &r.access.clinical.nhs_number)
    }),
    ("patient_ids", |r| list(&r.access.clinical.patient_ids)),
    ("study_uids", |r| {
        all(&r.access.clinical.study_uids, &r.access.clinical.study_uid)
    }),
    ("practitioner", |r| {
        Cow::Borrowed(
            r.access
                .clinical
                .token
                .as_ref()
                .and_then(|t| t.practitioner.as_deref())
                .unwrap_or(""),
        )
    }),
    ("body_inspected", |r| num(r.access.body_inspected)),
];

/// One RFC 4180 record: fields with a comma, quote, CR or LF are quoted, quotes doubled; CRLF
/// line ends as the RFC says.
fn write_csv_record<'a>(out: &mut impl Write, fields: impl Iterator<Item = Cow<'a, str>>) -> std::io::Result<()> {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        // A cell a spreadsheet would run as a formula (`=HYPERLINK(…)` in a client's path or
        // query) is written as text: a leading apostrophe, as OWASP advises for CSV injection.
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            Cow::Owned(format!("'{field}"))
        } else {
            field
        };
        if field.contains([',', '"', '\r', '\n']) {
            out.write_all(b"\"")?;
            out.write_all(field.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

/// Aligned columns without holding the whole result: widths come from the first
/// [`TABLE_SAMPLE`] rows; a longer value later just pushes its line out.
#[derive(Default)]
struct Table {
    sample: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
}

/// No column wider than this from the sample: one long path should not push every line wide.
const MAX_WIDTH: usize = 48;

impl Table {
    fn push(&mut self, out: &mut impl Write, row: Row) -> Result<(), QueryError> {
        let cells: Vec<String> = TABLE_COLUMNS.iter().map(|c| clean((c.1)(&row))).collect();
        match &self.widths {
            Some(w) => write_table_line(out, w, &cells)?,
            None => {
                self.sample.push(cells);
                if self.sample.len() >= TABLE_SAMPLE {
                    self.finish(out)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.widths.is_some() {
            return Ok(());
        }
        let mut widths: Vec<usize> = TABLE_COLUMNS.iter().map(|c| c.0.len()).collect();
        for cells in &self.sample {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count().min(MAX_WIDTH));
            }
        }
        let header: Vec<String> = TABLE_COLUMNS.iter().map(|c| c.0.to_string()).collect();
        write_table_line(out, &widths, &header)?;
        for cells in self.sample.drain(..) {
            write_table_line(out, &widths, &cells)?;
        }
        self.widths = Some(widths);
        Ok(())
    }
}

/// Control characters would break the layout (and could forge lines on a terminal).
fn clean(s: Cow<'_, str>) -> String {
    let s = if s.is_empty() { Cow::Borrowed("-") } else { s };
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn write_table_line(out: &mut impl Write, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            writeln!(out, "{cell}")?;
        } else {
            write!(out, "{cell:<w$}  ")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_written_as_text() {
        let mut out = Vec::new();
        let cells = [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "/fhir/Patient",
            "9990000018",
        ];
        write_csv_record(&mut out, cells.iter().map(|c| Cow::Borrowed(*c))).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@SUM(A1),/fhir/Patient,9990000018\r\n"
        );
    }

    #[test]
    fn csv_quotes_per_rfc4180() {
        let mut out = Vec::new();
        let fields = ["a", "b,c", "say \"hi\"", "x\ny", ""];
        write_csv_record(&mut out, fields.iter().map(|f| Cow::Borrowed(*f))).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",\r\n"
        );
    }
}
