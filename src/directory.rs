//! Who is who: organisations (from `[[organisation]]` and an optional ODS CSV extract), their
//! groups, and registered endpoints (`[[endpoint]]`, as in a Spine directory extract).

use crate::config::{self, Config};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// An organisation known to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    /// ODS code, upper case (`A81001`, `RXC`).
    pub code: String,
    pub name: String,
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
    pub fn build(config: &Config) -> Result<Directory, (String, String)> {
        let mut orgs = HashMap::new();
        if let Some(csv) = &config.identity.organisations_csv {
            for org in load_ods_csv(csv).map_err(|m| ("identity.organisations_csv".to_string(), m))? {
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
                Arc::new(Organisation { code: o.code.clone(), name: o.name.clone(), groups }),
            );
        }
        let mut endpoints = HashMap::new();
        for (i, e) in config.endpoints.iter().enumerate() {
            if !orgs.contains_key(&e.org) {
                return Err((format!("endpoint[{i}].org"), format!("no organisation with code \"{}\"", e.org)));
            }
            endpoints.insert(e.fqdn.clone(), Endpoint { org: e.org.clone(), asid: e.asid.clone() });
        }
        let dir = Directory { orgs, endpoints };
        dir.check_references(config)?;
        Ok(dir)
    }

    /// With an ODS CSV, references to organisations can only be checked once it is read.
    fn check_references(&self, config: &Config) -> Result<(), (String, String)> {
        for (i, r) in config.routes.iter().enumerate() {
            for (j, a) in r.allow.iter().enumerate() {
                for org in a.orgs.iter().filter(|o| *o != "*") {
                    if !self.orgs.contains_key(org) {
                        return Err((
                            format!("route[{i}].allow[{j}].orgs"),
                            format!("no organisation with code \"{org}\""),
                        ));
                    }
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

/// Reads organisations from an NHS ODS CSV extract (the layout of `epraccur.csv` and its
/// siblings: no header; column 1 code, 2 name, 13 status code, 15 commissioner). Closed
/// organisations (status `C`) are skipped; the commissioner (ICB) code becomes a group, so
/// rules can allow "all practices of this ICB".
pub fn load_ods_csv(path: &Path) -> Result<Vec<Organisation>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv_line(line);
        let code = fields.first().map(|s| s.trim()).unwrap_or("");
        if n == 0 && code.eq_ignore_ascii_case("code") || code.eq_ignore_ascii_case("organisation code") {
            continue; // a header row, in extracts that have one
        }
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{}: line {}: \"{code}\" is not an ODS code", path.display(), n + 1));
        }
        let status = fields.get(12).map(|s| s.trim()).unwrap_or("");
        if status.eq_ignore_ascii_case("C") {
            continue;
        }
        let name = fields.get(1).map(|s| s.trim()).filter(|s| !s.is_empty()).unwrap_or(code);
        let mut groups = Vec::new();
        if let Some(icb) = fields.get(14).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            groups.push(icb.to_string());
        }
        out.push(Organisation { code: code.to_ascii_uppercase(), name: name.to_string(), groups });
    }
    Ok(out)
}

/// Splits one CSV line (RFC 4180 quoting; ODS extracts quote every field).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

impl From<&config::Organisation> for Organisation {
    fn from(o: &config::Organisation) -> Self {
        Organisation { code: o.code.clone(), name: o.name.clone(), groups: o.groups.clone() }
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
        assert_eq!(orgs[0].name, "THE DENSHAM SURGERY");
        assert_eq!(orgs[0].groups, vec!["16C".to_string()]);
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(split_csv_line(r#""a","b ""c"", d",e"#), vec!["a", "b \"c\", d", "e"]);
    }
}
