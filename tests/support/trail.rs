//! Reading a gateway's audit trail back, record by record.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every audit record of the trail in `dir`, parsed, in file order.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The first `.jsonl` file of a trail (for tampering tests).
pub fn first_trail_file(dir: &Path) -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.remove(0)
}

/// The `lifecycle` records with this `action`.
pub fn lifecycle(records: &[Value], action: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event"] == "lifecycle" && r["action"] == action)
        .cloned()
        .collect()
}

/// The records of this `event` (`access`, `complete`) for the request `id`.
pub fn by_request(records: &[Value], id: &str, event: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["event"] == event && r["request_id"] == id)
        .cloned()
        .collect()
}

/// The `complete` record of request `id`.
pub fn completion<'a>(records: &'a [Value], id: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["event"] == "complete" && r["request_id"] == id)
}

/// The `request_id` caregate gave the request whose client sent `X-Request-Id: client_id`
/// (recorded as `client_request_id`, never used as the id).
pub fn id_of_client_request(records: &[Value], client_id: &str) -> Option<String> {
    records
        .iter()
        .find(|r| r["event"] == "access" && r["client_request_id"] == client_id)
        .map(|r| r["request_id"].as_str().unwrap().to_string())
}

/// The rows `caregate audit query --format json` answers for `filters`.
pub fn query_rows(dir: &Path, filters: &caregate::audit::query::Filters) -> Vec<Value> {
    use caregate::audit::query::{self, Format};
    let mut out = Vec::new();
    query::query(dir, filters, Format::Json, &mut out).expect("query");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each row's `request_id`.
pub fn row_ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect()
}
