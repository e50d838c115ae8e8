//! Who is who: organisations (from `[[organisation]]` and an optional ODS CSV extract), their
//! groups, and registered endpoints (`[[endpoint]]`, as in a Spine directory extract).

use crate::config::{self, Config, KeyError};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// An organisation known to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    /// ODS code, upper case (`A81001`, `RXC`).
    pub code: String,
    pub name: std::sync::Arc<str>,
    pub groups: Vec<String>,
}

/// A registered system: its FQDN maps to an organisation (and optionally a Spine ASID).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub org: String,
    pub asid: Option<String>,
}

#[derive(Debug, Default)]
pub struct Directory {
    orgs: HashMap<String, Arc<Organisation>>,
    endpoints: HashMap<String, Endpoint>,
}

impl Directory {
    /// Builds the directory from the config, reading the ODS CSV if one is named. Errors are
    /// (key, message).
    pub fn build(config: &Config) -> Result<Directory, KeyError> {
        let mut orgs = HashMap::new();
        if let Some(csv) = &config.identity.organisations_csv {
            for org in load_ods_csv(csv).map_err(|m| KeyError::new("identity.organisations_csv", m))? {
                orgs.insert(org.code.clone(), Arc::new(org));
            }
        }
        // Config entries come last so they can add groups to (or rename) a CSV organisation.
        for o in &config.organisations {
            let mut groups = o.groups.clone();
            if let Some(existing) = orgs.get(&o.code) {
                for g in &existing.groups {
                    if !groups.contains(g) {
                        groups.push(g.clone());
                    }
                }
            }
            orgs.insert(
                o.code.clone(),
                Arc::new(Organisation {
                    code: o.code.clone(),
                    name: o.name.as_str().into(),
                    groups,
                }),
            );
        }
        let mut endpoints = HashMap::new();
        for (i, e) in config.endpoints.iter().enumerate() {
            if !orgs.contains_key(&e.org) {
                return Err(KeyError::new(
                    format!("endpoint[{i}].org"),
                    format!("no organisation with code \"{}\"", e.org),
                ));
            }
            endpoints.insert(
                e.fqdn.clone(),
                Endpoint {
                    org: e.org.clone(),
                    asid: e.asid.clone(),
                },
            );
        }
        let dir = Directory { orgs, endpoints };
        dir.check_references(config)?;
        Ok(dir)
    }

    /// With an ODS CSV, references to organisations can only be checked once it is read.
    fn check_references(&self, config: &Config) -> Result<(), KeyError> {
        for (i, r) in config.routes.iter().enumerate() {
            for (j, a) in r.allow.iter().enumerate() {
                for org in a.orgs.iter().filter(|o| *o != "*") {
                    if !self.orgs.contains_key(org) {
                        return Err(KeyError::new(
                            format!("route[{i}].allow[{j}].orgs"),
                            format!("no organisation with code \"{org}\""),
                        ));
                    }
                }
            }
            for (j, b) in r.break_glass.iter().enumerate() {
                if let Some(org) = b.orgs.iter().find(|o| !self.orgs.contains_key(*o)) {
                    return Err(KeyError::new(
                        format!("route[{i}].break_glass[{j}].orgs"),
                        format!("no organisation with code \"{org}\""),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn organisation(&self, code: &str) -> Option<&Arc<Organisation>> {
        self.orgs.get(code)
    }

    /// The endpoint registered for this FQDN (case-insensitive).
    pub fn endpoint(&self, fqdn: &str) -> Option<&Endpoint> {
        if fqdn.bytes().any(|b| b.is_ascii_uppercase()) {
            self.endpoints.get(&fqdn.to_ascii_lowercase())
        } else {
            self.endpoints.get(fqdn)
        }
    }

    pub fn len(&self) -> usize {
        self.orgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
    }
}

/// Reads organisations from an NHS ODS CSV extract: the layout of `epraccur.csv` (GP
/// practices) and its siblings, no header row, every field quoted. The columns read (1-based):
///
/// | column | field | use |
/// | --- | --- | --- |
/// | 1 | Organisation Code | the ODS code |
/// | 2 | Name | `org_name` in the audit record |
/// | 13 | Status Code (`A` active, `C` closed, `D` dormant, `P` proposed) | `C` and `D` are skipped |
/// | 15 | Commissioner (the sub-ICB location / ICB) | a group, so rules can allow "all practices of this ICB" |
///
/// A header row (first field `Organisation Code` or `Code`, as in Data Search and Export
/// reports) and a UTF-8 BOM are tolerated; an extract with fewer columns gives no status (kept)
/// and no group.
pub fn load_ods_csv(path: &Path) -> Result<Vec<Organisation>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_ods_csv(&text)
        .map_err(|(line, code)| format!("{}: line {line}: \"{code}\" is not an ODS code", path.display()))
}

/// The body of [`load_ods_csv`]: organisations, or (line number, bad code).
pub fn parse_ods_csv(text: &str) -> Result<Vec<Organisation>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() / 200);
    let mut fields = Vec::with_capacity(32);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        split_csv_line(line, &mut fields);
        let field = |i: usize| fields.get(i).map(|s: &Cow<'_, str>| s.trim()).unwrap_or("");
        let code = field(0);
        if n == 0 && (code.eq_ignore_ascii_case("code") || code.eq_ignore_ascii_case("organisation code")) {
            continue; // a header row, in extracts that have one
        }
        if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err((n + 1, code.chars().take(40).collect()));
        }
        let status = field(12);
        if ["C", "D", "CLOSED", "DORMANT", "INACTIVE"]
            .iter()
            .any(|s| status.eq_ignore_ascii_case(s))
        {
            continue;
        }
        let name = Some(field(1)).filter(|s| !s.is_empty()).unwrap_or(code);
        let groups = Some(field(14))
            .filter(|s| !s.is_empty())
            .map(|icb| vec![icb.to_ascii_uppercase()]);
        out.push(Organisation {
            code: code.to_ascii_uppercase(),
            name: name.into(),
            groups: groups.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Splits one CSV line into `fields` (RFC 4180 quoting; ODS extracts quote every field).
/// Fields borrow from the line unless they hold an escaped quote.
fn split_csv_line<'a>(line: &'a str, fields: &mut Vec<Cow<'a, str>>) {
    fields.clear();
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            // Quoted: up to the closing quote; `""` is one quote.
            let start = i + 1;
            let mut j = start;
            let mut owned: Option<String> = None;
            let mut run = start; // start of the text not yet copied into `owned`
            while j < b.len() {
                if b[j] == b'"' {
                    if b.get(j + 1) == Some(&b'"') {
                        owned.get_or_insert_with(String::new).push_str(&line[run..=j]);
                        j += 2;
                        run = j;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            let field = match owned {
                Some(mut s) => {
                    s.push_str(&line[run..j]);
                    Cow::Owned(s)
                }
                None => Cow::Borrowed(&line[start..j]),
            };
            fields.push(field);
            // Skip anything between the closing quote and the next comma.
            i = match line[j..].find(',') {
                Some(k) => j + k + 1,
                None => return,
            };
        } else {
            match line[i..].find(',') {
                Some(k) => {
                    fields.push(Cow::Borrowed(&line[i..i + k]));
                    i += k + 1;
                }
                None => {
                    fields.push(Cow::Borrowed(&line[i..]));
                    return;
                }
            }
        }
    }
}

impl From<&config::Organisation> for Organisation {
    fn from(o: &config::Organisation) -> Self {
        Organisation {
            code: o.code.clone(),
            name: o.name.as_str().into(),
            groups: o.groups.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ods_csv_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epraccur.csv");
        std::fs::write(
            &p,
            "\"A81001\",\"THE DENSHAM SURGERY\",\"Y54\",\"Q74\",\"\",\"\",\"\",\"\",\"\",\"TS18 1HU\",\"19740401\",\"\",\"A\",\"B\",\"16C\",\"\"\n\
             \"A81002\",\"CLOSED, SURGERY\",\"Y54\",\"Q74\",\"\",\"\",\"\",\"\",\"\",\"TS18 1HU\",\"19740401\",\"20200101\",\"C\",\"B\",\"16C\",\"\"\n",
        )
        .unwrap();
        let orgs = load_ods_csv(&p).unwrap();
        assert_eq!(orgs.len(), 1);
        assert_eq!(orgs[0].code, "A81001");
        assert_eq!(&*orgs[0].name, "THE DENSHAM SURGERY");
        assert_eq!(orgs[0].groups, vec!["16C".to_string()]);
    }

    fn split(line: &str) -> Vec<String> {
        let mut v = Vec::new();
        split_csv_line(line, &mut v);
        v.into_iter().map(Cow::into_owned).collect()
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(split(r#""a","b ""c"", d",e"#), vec!["a", "b \"c\", d", "e"]);
        assert_eq!(split(r#""""x""","",,"#), vec!["\"x\"", "", "", ""]);
        assert_eq!(split(r#"a,"b"#), vec!["a", "b"]);
        assert_eq!(split(""), vec![""]);
    }

    #[test]
    fn header_bom_dormant_and_bad_codes() {
        let row = |code: &str, status: &str| {
            format!("\"{code}\",\"N {code}\",\"Y54\",\"Q74\",\"\",\"\",\"\",\"\",\"\",\"TS18 1HU\",\"19740401\",\"\",\"{status}\",\"B\",\"16c\",\"\"\n")
        };
        let text = format!(
            "\u{feff}\"Organisation Code\",\"Name\"\n{}{}{}",
            row("a81001", "A"),
            row("A81004", "D"),
            row("A81005", "P")
        );
        let orgs = parse_ods_csv(&text).unwrap();
        let codes: Vec<_> = orgs.iter().map(|o| o.code.as_str()).collect();
        assert_eq!(codes, ["A81001", "A81005"]);
        assert_eq!(orgs[0].groups, ["16C"]);
        assert_eq!(
            parse_ods_csv("\"A1\"\n\"not a code\",\"x\"\n").unwrap_err(),
            (2, "not a code".to_string())
        );
        // Fewer columns: kept, no group.
        assert_eq!(
            parse_ods_csv("B82617,Some Practice\n").unwrap()[0].groups,
            Vec::<String>::new()
        );
    }
}
