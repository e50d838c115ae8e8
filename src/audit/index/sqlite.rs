//! The index in SQLite (rusqlite, bundled): one file, WAL mode so the console reads while the
//! indexer writes, and one transaction per batch.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension as _, Row};

use super::{
    Batch, Broken, Completion, Count, EventRow, Hash, Health, IndexError, IndexStore, Location, Micros, Name, OrgDay,
    OrgHour, Overview, Position, RequestRow, Search,
};
use crate::audit::query::Filters;

/// The schema, as numbered migrations: `schema_version` holds how many have run. A later
/// version appends (new tables, columns, indexes), never rewrites one that has shipped.
const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

/// The current schema version.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating and migrating) the index at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, IndexError> {
        // The index names patients as the trail does: readable by its owner only, as the trail's
        // files are (SQLite gives its -wal and -shm files the same mode).
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| IndexError::Other(format!("cannot create {}: {e}", path.display())))?;
        }
        let conn = Connection::open(path)?;
        // WAL: readers (the console, `audit query --db`) never wait for the indexer. NORMAL
        // sync is safe with WAL: a crash loses at most the last batches, which are indexed again
        // from the trail (the position is in the same transaction as the rows).
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = SqliteStore { conn };
        store.migrate(path)?;
        Ok(store)
    }

    fn migrate(&self, path: &Path) -> Result<(), IndexError> {
        let has_version: bool = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        let found: i64 = if has_version {
            self.conn
                .query_row("SELECT max(version) FROM schema_version", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(0)
        } else {
            0
        };
        if found > SCHEMA_VERSION {
            return Err(IndexError::Version {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [i as i64 + 1])?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The connection, for tests that tamper with the index.
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

const REQUEST_COLUMNS: &str = "seq, hash, time, file, offset, request_id, client_request_id, org, org_name, \
     fingerprint, ip, method, host, path, query, route, class, decision, reason, rule, fhir_type, study_uid, \
     break_glass_reason, nhs_numbers, patient_ids, study_uids, complete_seq, complete_hash, complete_time, \
     complete_file, complete_offset, status, outcome, bytes_in, bytes_out, duration_ms";

const EVENT_COLUMNS: &str = "seq, hash, time, file, offset, event, org, ip, reason, count, action, next_due, detail";

fn join(list: &[String]) -> Option<String> {
    (!list.is_empty()).then(|| list.join("\n"))
}

fn split(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split('\n').map(str::to_owned).collect())
        .unwrap_or_default()
}

fn hash_of(blob: Vec<u8>) -> Hash {
    let mut h = [0u8; 32];
    if blob.len() == 32 {
        h.copy_from_slice(&blob);
    }
    Hash(h)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn request_from(r: &Row<'_>) -> rusqlite::Result<RequestRow> {
    let complete = match r.get::<_, Option<i64>>(26)? {
        None => None,
        Some(seq) => Some(Completion {
            seq: u64_of(seq),
            hash: hash_of(r.get(27)?),
            time: r.get(28)?,
            at: Location {
                file: u64_of(r.get(29)?),
                offset: u64_of(r.get(30)?),
            },
            status: u16::try_from(r.get::<_, i64>(31)?).unwrap_or(0),
            outcome: r.get(32)?,
            bytes_in: u64_of(r.get(33)?),
            bytes_out: u64_of(r.get(34)?),
            duration_ms: u64_of(r.get(35)?),
        }),
    };
    Ok(RequestRow {
        seq: u64_of(r.get(0)?),
        hash: hash_of(r.get(1)?),
        time: r.get(2)?,
        at: Location {
            file: u64_of(r.get(3)?),
            offset: u64_of(r.get(4)?),
        },
        request_id: r.get(5)?,
        client_request_id: r.get(6)?,
        org: r.get(7)?,
        org_name: r.get(8)?,
        fingerprint: r.get(9)?,
        ip: r.get(10)?,
        method: r.get(11)?,
        host: r.get(12)?,
        path: r.get(13)?,
        query: r.get(14)?,
        route: r.get(15)?,
        class: r.get(16)?,
        decision: r.get(17)?,
        reason: r.get(18)?,
        rule: r.get(19)?,
        fhir_type: r.get(20)?,
        study_uid: r.get(21)?,
        break_glass_reason: r.get(22)?,
        nhs_numbers: split(r.get(23)?),
        patient_ids: split(r.get(24)?),
        study_uids: split(r.get(25)?),
        complete,
    })
}

fn event_from(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: u64_of(r.get(0)?),
        hash: hash_of(r.get(1)?),
        time: r.get(2)?,
        at: Location {
            file: u64_of(r.get(3)?),
            offset: u64_of(r.get(4)?),
        },
        event: r.get(5)?,
        org: r.get(6)?,
        ip: r.get(7)?,
        reason: r.get(8)?,
        count: r.get::<_, Option<i64>>(9)?.map(u64_of),
        action: r.get(10)?,
        next_due: r.get(11)?,
        detail: r.get(12)?,
    })
}

/// `system|value` → (system, value); an id without a system → ("", id).
fn split_id(id: &str) -> (&str, &str) {
    id.rsplit_once('|').unwrap_or(("", id))
}

const DAY: Micros = 86_400_000_000;
const HOUR: Micros = 3_600_000_000;

impl IndexStore for SqliteStore {
    fn position(&self) -> Result<Option<Position>, IndexError> {
        Ok(self
            .conn
            .query_row(
                "SELECT file, offset, last_seq, last_hash, last_time, broken_seq, broken_file, broken_line, \
                 broken_message FROM position WHERE id = 1",
                [],
                |r| {
                    let broken = match r.get::<_, Option<i64>>(5)? {
                        None => None,
                        Some(seq) => Some(Broken {
                            seq: u64_of(seq),
                            file: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                            line: u64_of(r.get::<_, Option<i64>>(7)?.unwrap_or(0)),
                            message: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                        }),
                    };
                    Ok(Position {
                        next: Location {
                            file: u64_of(r.get(0)?),
                            offset: u64_of(r.get(1)?),
                        },
                        last_seq: u64_of(r.get(2)?),
                        last_hash: hash_of(r.get(3)?),
                        last_time: r.get(4)?,
                        broken,
                    })
                },
            )
            .optional()?)
    }

    fn open_requests(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT request_id, seq FROM requests WHERE complete_seq IS NULL ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, u64_of(r.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        {
            let mut req = tx.prepare(&format!(
                "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
                 ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, \
                 ?31, ?32, ?33, ?34, ?35, ?36)"
            ))?;
            let mut patient = tx.prepare(
                "INSERT OR IGNORE INTO patients (value, time, seq, kind, system, org) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut study = tx.prepare("INSERT OR IGNORE INTO studies (uid, seq) VALUES (?1, ?2)")?;
            for r in &batch.requests {
                let c = r.complete.as_ref();
                req.execute(params![
                    r.seq as i64,
                    &r.hash.0[..],
                    r.time,
                    r.at.file as i64,
                    r.at.offset as i64,
                    r.request_id,
                    r.client_request_id,
                    r.org,
                    r.org_name,
                    r.fingerprint,
                    r.ip,
                    r.method,
                    r.host,
                    r.path,
                    r.query,
                    r.route,
                    r.class,
                    r.decision,
                    r.reason,
                    r.rule,
                    r.fhir_type,
                    r.study_uid,
                    r.break_glass_reason,
                    join(&r.nhs_numbers),
                    join(&r.patient_ids),
                    join(&r.study_uids),
                    c.map(|c| c.seq as i64),
                    c.map(|c| &c.hash.0[..]),
                    c.map(|c| c.time),
                    c.map(|c| c.at.file as i64),
                    c.map(|c| c.at.offset as i64),
                    c.map(|c| i64::from(c.status)),
                    c.map(|c| c.outcome.as_str()),
                    c.map(|c| c.bytes_in as i64),
                    c.map(|c| c.bytes_out as i64),
                    c.map(|c| c.duration_ms as i64),
                ])?;
                for n in &r.nhs_numbers {
                    patient.execute(params![n, r.time, r.seq as i64, "nhs", "", r.org])?;
                }
                for id in &r.patient_ids {
                    let (system, value) = split_id(id);
                    patient.execute(params![value, r.time, r.seq as i64, "id", system, r.org])?;
                }
                for uid in &r.study_uids {
                    study.execute(params![uid, r.seq as i64])?;
                }
            }
            let mut complete = tx.prepare(
                "UPDATE requests SET complete_seq = ?2, complete_hash = ?3, complete_time = ?4, complete_file = ?5, \
                 complete_offset = ?6, status = ?7, outcome = ?8, bytes_in = ?9, bytes_out = ?10, duration_ms = ?11 \
                 WHERE seq = ?1",
            )?;
            for (seq, c) in &batch.completions {
                complete.execute(params![
                    *seq as i64,
                    c.seq as i64,
                    &c.hash.0[..],
                    c.time,
                    c.at.file as i64,
                    c.at.offset as i64,
                    i64::from(c.status),
                    c.outcome,
                    c.bytes_in as i64,
                    c.bytes_out as i64,
                    c.duration_ms as i64,
                ])?;
            }
            let mut event = tx.prepare(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            for e in &batch.events {
                event.execute(params![
                    e.seq as i64,
                    &e.hash.0[..],
                    e.time,
                    e.at.file as i64,
                    e.at.offset as i64,
                    e.event,
                    e.org,
                    e.ip,
                    e.reason,
                    e.count.map(|c| c as i64),
                    e.action,
                    e.next_due,
                    e.detail,
                ])?;
            }
            let p = &batch.position;
            tx.execute(
                "INSERT INTO position (id, file, offset, last_seq, last_hash, last_time) VALUES (1, ?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO UPDATE SET file = ?1, offset = ?2, last_seq = ?3, last_hash = ?4, last_time = ?5, \
                 broken_seq = NULL, broken_file = NULL, broken_line = NULL, broken_message = NULL",
                params![
                    p.next.file as i64,
                    p.next.offset as i64,
                    p.last_seq as i64,
                    &p.last_hash.0[..],
                    p.last_time
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn set_broken(&mut self, b: &Broken) -> Result<(), IndexError> {
        // Before anything was indexed there is no position row yet: one at the very start.
        self.conn.execute(
            "INSERT INTO position (id, file, offset, last_seq, last_hash, last_time, broken_seq, broken_file, \
             broken_line, broken_message) VALUES (1, 0, 0, 0, zeroblob(32), 0, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET broken_seq = ?1, broken_file = ?2, broken_line = ?3, broken_message = ?4",
            params![b.seq as i64, b.file, b.line as i64, b.message],
        )?;
        Ok(())
    }

    fn requests_between(&self, from: u64, to: u64) -> Result<Vec<RequestRow>, IndexError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![from as i64, to as i64], request_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn events_between(&self, from: u64, to: u64) -> Result<Vec<EventRow>, IndexError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![from as i64, to as i64], event_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn request(&self, seq: u64) -> Result<Option<RequestRow>, IndexError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE seq = ?1"),
                [seq as i64],
                request_from,
            )
            .optional()?)
    }

    fn record_count(&self) -> Result<u64, IndexError> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) + count(complete_seq) FROM requests) + (SELECT count(*) FROM events)",
            [],
            |r| r.get(0),
        )?;
        Ok(u64_of(n))
    }

    fn scan_names(&self, visit: &mut dyn FnMut(Name)) -> Result<(), IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, time, kind, system, value, org FROM patients")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            visit(Name {
                seq: u64_of(r.get(0)?),
                time: r.get(1)?,
                kind: r.get(2)?,
                system: r.get(3)?,
                value: r.get(4)?,
                org: r.get(5)?,
            });
        }
        let mut stmt = self.conn.prepare("SELECT seq, uid FROM studies")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            visit(Name {
                seq: u64_of(r.get(0)?),
                time: 0,
                kind: "study".into(),
                system: String::new(),
                value: r.get(1)?,
                org: None,
            });
        }
        Ok(())
    }

    fn search(&self, s: &Search) -> Result<Vec<RequestRow>, IndexError> {
        let (sql, args) = search_sql(s);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), request_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn org_days(&self, org: &str, since: Micros, until: Micros) -> Result<Vec<OrgDay>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT time / ?4 AS d, count(*), sum(decision = 'deny'), coalesce(sum(bytes_in), 0), \
             coalesce(sum(bytes_out), 0) FROM requests WHERE org = ?1 AND time >= ?2 AND time < ?3 GROUP BY d ORDER BY d",
        )?;
        let mut days: Vec<OrgDay> = stmt
            .query_map(params![org, since, until, DAY], |r| {
                Ok(OrgDay {
                    day: r.get::<_, i64>(0)? * DAY,
                    requests: u64_of(r.get(1)?),
                    refused: u64_of(r.get(2)?),
                    patients: 0,
                    bytes_in: u64_of(r.get(3)?),
                    bytes_out: u64_of(r.get(4)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT time / ?4 AS d, count(DISTINCT value) FROM patients WHERE org = ?1 AND time >= ?2 AND time < ?3 \
             GROUP BY d",
        )?;
        let counts = stmt.query_map(params![org, since, until, DAY], |r| {
            Ok((r.get::<_, i64>(0)? * DAY, u64_of(r.get(1)?)))
        })?;
        for c in counts {
            let (day, n) = c?;
            if let Some(d) = days.iter_mut().find(|d| d.day == day) {
                d.patients = n;
            }
        }
        Ok(days)
    }

    fn org_refusals(&self, org: &str, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT reason, time / ?4 AS d, count(*) FROM requests WHERE org = ?1 AND time >= ?2 AND time < ?3 \
             AND decision = 'deny' GROUP BY reason, d ORDER BY d, reason",
        )?;
        let rows = stmt.query_map(params![org, since, until, DAY], |r| {
            Ok(Count {
                key: r.get(0)?,
                sub: Some((r.get::<_, i64>(1)? * DAY).to_string()),
                count: u64_of(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn overview(&self, since: Micros, until: Micros) -> Result<Overview, IndexError> {
        let counts = |sql: &str| -> Result<Vec<Count>, IndexError> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map(params![since, until], |r| {
                Ok(Count {
                    key: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    sub: r.get(1)?,
                    count: u64_of(r.get(2)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        Ok(Overview {
            traffic: counts(
                "SELECT org, class, count(*) FROM requests WHERE time >= ?1 AND time < ?2 GROUP BY org, class \
                 ORDER BY count(*) DESC",
            )?,
            refusals: counts(
                "SELECT reason, NULL, count(*) FROM requests WHERE time >= ?1 AND time < ?2 AND decision = 'deny' \
                 GROUP BY reason ORDER BY count(*) DESC",
            )?,
            tls_rejections: counts(
                "SELECT coalesce(reason, 'coalesced'), NULL, sum(coalesce(count, 1)) FROM events \
                 WHERE event IN ('tls_rejected', 'refusals_coalesced') AND time >= ?1 AND time < ?2 \
                 AND (event = 'tls_rejected' OR ip IS NOT NULL) GROUP BY 1 ORDER BY 3 DESC",
            )?,
        })
    }

    fn events(
        &self,
        event: Option<&str>,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<Vec<EventRow>, IndexError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR event = ?1) AND time >= ?2 AND time < ?3 \
             ORDER BY seq DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![event, since, until, limit], event_from)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn health(&self) -> Result<Health, IndexError> {
        let last_checkpoint = self
            .conn
            .query_row(
                "SELECT seq, time, next_due FROM events WHERE event = 'checkpoint' ORDER BY time DESC, seq DESC LIMIT 1",
                [],
                |r| Ok((u64_of(r.get(0)?), r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (requests, events) = self.conn.query_row(
            "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM events)",
            [],
            |r| Ok((u64_of(r.get(0)?), u64_of(r.get(1)?))),
        )?;
        Ok(Health {
            position: self.position()?,
            last_checkpoint,
            requests,
            events,
        })
    }

    fn patients_per_hour(&self, org: Option<&str>, since: Micros, until: Micros) -> Result<Vec<OrgHour>, IndexError> {
        let mut stmt = self.conn.prepare(
            "SELECT org, time / ?4 AS h, count(DISTINCT value) FROM patients \
             WHERE org IS NOT NULL AND (?1 IS NULL OR org = ?1) AND time >= ?2 AND time < ?3 \
             GROUP BY org, h ORDER BY org, h",
        )?;
        let rows = stmt.query_map(params![org, since, until, HOUR], |r| {
            Ok(OrgHour {
                org: r.get(0)?,
                hour: r.get::<_, i64>(1)? * HOUR,
                patients: u64_of(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn refusals_per_hour(&self, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError> {
        self.per_hour(
            "SELECT who, h, sum(n) FROM (                SELECT coalesce(org, ip) AS who, time / ?3 AS h, count(*) AS n FROM requests                WHERE decision = 'deny' AND time >= ?1 AND time < ?2 GROUP BY 1, 2                UNION ALL                SELECT org, time / ?3, sum(coalesce(count, 1)) FROM events                WHERE event = 'refusals_coalesced' AND org IS NOT NULL AND time >= ?1 AND time < ?2 GROUP BY 1, 2              ) GROUP BY who, h ORDER BY who, h",
            since,
            until,
        )
    }

    fn tls_rejections_per_hour(&self, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError> {
        self.per_hour(
            "SELECT ip, time / ?3 AS h, sum(coalesce(count, 1)) FROM events              WHERE event IN ('tls_rejected', 'refusals_coalesced') AND ip IS NOT NULL              AND (event = 'tls_rejected' OR org IS NULL) AND time >= ?1 AND time < ?2              GROUP BY ip, h ORDER BY ip, h",
            since,
            until,
        )
    }
}

impl SqliteStore {
    /// Rows of (subject, hour, count) as [`Count`]s, for the per-hour queries.
    fn per_hour(&self, sql: &str, since: Micros, until: Micros) -> Result<Vec<Count>, IndexError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params![since, until, HOUR], |r| {
            Ok(Count {
                key: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                sub: Some((r.get::<_, i64>(1)? * HOUR).to_string()),
                count: u64_of(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The SQL of a search and its arguments. Filters are ANDed as `audit query` does; a patient
/// or study goes through its own table's key, then the time bounds.
fn search_sql(s: &Search) -> (String, Vec<Value>) {
    let f: &Filters = &s.filters;
    let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE 1");
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    let since = f.since.map(|t| micros_of(t, false));
    let until = f.until.map(|t| micros_of(t, true));
    if let Some(p) = &f.patient {
        let raw = p.trim().to_string();
        let compact: String = p.chars().filter(|c| !c.is_whitespace()).collect();
        let mut inner = String::from(" AND seq IN (SELECT seq FROM patients WHERE");
        if raw.contains('|') {
            let (system, value) = split_id(&raw);
            let (system, value) = (system.to_string(), value.to_string());
            arg(&mut inner, " value = ?", Value::Text(value));
            arg(&mut inner, " AND kind = 'id' AND system = ?", Value::Text(system));
        } else {
            arg(&mut inner, " value IN (?", Value::Text(raw));
            arg(&mut inner, ", ?)", Value::Text(compact));
        }
        if let Some(t) = since {
            arg(&mut inner, " AND time >= ?", Value::Integer(t));
        }
        if let Some(t) = until {
            arg(&mut inner, " AND time < ?", Value::Integer(t));
        }
        inner.push(')');
        sql.push_str(&inner);
    }
    if let Some(uid) = &f.study {
        arg(
            &mut sql,
            " AND seq IN (SELECT seq FROM studies WHERE uid = ?)",
            Value::Text(uid.clone()),
        );
    }
    let text = |v: &Option<String>| v.clone().map(Value::Text);
    for (clause, v) in [
        (" AND org = ?", text(&f.org)),
        (" AND route = ?", text(&f.route)),
        (" AND request_id = ?", text(&f.request_id)),
        (" AND client_request_id = ?", text(&f.client_request_id)),
        (" AND reason = ?", text(&s.reason)),
        (
            " AND decision = ?",
            f.decision.map(|d| Value::Text(d.as_str().to_string())),
        ),
        (" AND time >= ?", since.map(Value::Integer)),
        (" AND time < ?", until.map(Value::Integer)),
    ] {
        if let Some(v) = v {
            arg(&mut sql, clause, v);
        }
    }
    if s.break_glass {
        sql.push_str(" AND break_glass_reason IS NOT NULL");
    }
    sql.push_str(if s.newest_first {
        " ORDER BY seq DESC"
    } else {
        " ORDER BY seq"
    });
    if let Some(limit) = s.limit {
        arg(
            &mut sql,
            " LIMIT ?",
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        );
    }
    (sql, args)
}

/// A filter's bound in microseconds; an exclusive upper bound rounds up, so that `--until` a
/// record's own time (made inclusive by a nanosecond) still takes that record.
pub(super) fn micros_of(t: time::OffsetDateTime, up: bool) -> Micros {
    let n = t.unix_timestamp_nanos() + if up { 999 } else { 0 };
    i64::try_from(n.div_euclid(1000)).unwrap_or(Micros::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seq: u64, org: &str, nhs: &[&str], ids: &[&str]) -> RequestRow {
        RequestRow {
            seq,
            hash: Hash([seq as u8; 32]),
            time: seq as i64 * 1_000_000,
            request_id: format!("r{seq}"),
            org: Some(org.into()),
            ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/fhir/Patient".into(),
            decision: "allow".into(),
            reason: "allowed".into(),
            nhs_numbers: nhs.iter().map(|s| s.to_string()).collect(),
            patient_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..RequestRow::default()
        }
    }

    #[test]
    fn a_batch_written_is_read_back_and_found_by_patient() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.position().unwrap(), None);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600);
        let done = Completion {
            seq: 3,
            hash: Hash([3; 32]),
            status: 200,
            outcome: "ok".into(),
            ..Completion::default()
        };
        let batch = Batch {
            requests: vec![
                request(1, "A81001", &["9990000018", "9990000026"], &[]),
                request(2, "RX1", &[], &["https://x.example/mrn|M1"]),
            ],
            completions: vec![(1, done.clone())],
            events: vec![EventRow {
                seq: 4,
                event: "checkpoint".into(),
                time: 4_000_000,
                next_due: Some(64_000_000),
                ..EventRow::default()
            }],
            position: Position {
                last_seq: 4,
                ..Position::default()
            },
        };
        store.write(&batch).unwrap();
        // Reopening migrates nothing and keeps everything.
        drop(store);
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.position().unwrap().unwrap().last_seq, 4);
        let find = |patient: &str| {
            let search = Search {
                filters: Filters {
                    patient: Some(patient.into()),
                    ..Filters::default()
                },
                ..Search::default()
            };
            store.search(&search).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
        };
        assert_eq!(find("999 000 0026"), [1]);
        assert_eq!(find("M1"), [2]);
        assert_eq!(find("https://x.example/mrn|M1"), [2]);
        assert_eq!(find("other|M1"), Vec::<u64>::new());
        let row = store.request(1).unwrap().unwrap();
        assert_eq!(row.complete, Some(done));
        assert_eq!(row.nhs_numbers, ["9990000018", "9990000026"]);
        assert_eq!(store.record_count().unwrap(), 4);
        let health = store.health().unwrap();
        assert_eq!(health.last_checkpoint, Some((4, 4_000_000, Some(64_000_000))));
        let hours = store.patients_per_hour(None, 0, i64::MAX).unwrap();
        assert_eq!(hours.iter().map(|h| h.patients).sum::<u64>(), 3);
        assert_eq!(store.open_requests().unwrap(), [("r2".to_string(), 2)]);
    }
}
