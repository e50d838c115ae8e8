-- The audit index, version 1 (docs/auditors.md, "The index").
--
-- Every record of the trail is in exactly one place: an `access` is a row of `requests`, its
-- `complete` fills that row's complete_* columns, every other record (and a `complete` whose
-- access is not in the trail) is a row of `events`. Each keeps its record's `seq` and `hash`
-- (32 bytes, not hex), and where its line starts (`file`: the first seq in the file's name,
-- `offset`: bytes into it), so `audit index --check` can compare the index with the chain and
-- `audit query --db` can print the records themselves. Times are unix microseconds (UTC).
-- Later versions only add (tables, columns, indexes): other code reads these names.

CREATE TABLE schema_version (version INTEGER NOT NULL);

CREATE TABLE requests (
    seq INTEGER PRIMARY KEY,          -- the access record's
    hash BLOB NOT NULL,
    time INTEGER NOT NULL,
    file INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    client_request_id TEXT,
    org TEXT,
    org_name TEXT,
    fingerprint TEXT,
    ip TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT,
    path TEXT NOT NULL,
    query TEXT,
    route TEXT,
    class TEXT,
    decision TEXT NOT NULL,           -- allow | deny
    reason TEXT NOT NULL,             -- allowed, or the refusal reason
    rule TEXT,
    fhir_type TEXT,
    study_uid TEXT,                   -- the first; `studies` has them all
    break_glass_reason TEXT,          -- access.break_glass.reason, when break-glass was used
    -- Every NHS number, other patient id and study named, in the record's order, each list
    -- joined with '\n' (NULL when empty): for display; `patients` and `studies` are for lookup.
    nhs_numbers TEXT,
    patient_ids TEXT,
    study_uids TEXT,
    complete_seq INTEGER,             -- NULL until (unless) the completion is indexed
    complete_hash BLOB,
    complete_time INTEGER,
    complete_file INTEGER,
    complete_offset INTEGER,
    status INTEGER,
    outcome TEXT,
    bytes_in INTEGER,
    bytes_out INTEGER,
    duration_ms INTEGER
);
CREATE INDEX requests_time ON requests (time);
CREATE INDEX requests_org_time ON requests (org, time);
CREATE INDEX requests_request_id ON requests (request_id);
CREATE INDEX requests_client_request_id ON requests (client_request_id) WHERE client_request_id IS NOT NULL;
-- Requests waiting for their completion: small, as most complete within the same batch.
CREATE INDEX requests_open ON requests (seq) WHERE complete_seq IS NULL;
CREATE INDEX requests_break_glass ON requests (time) WHERE break_glass_reason IS NOT NULL;

-- One row per patient a request names. `value` is the NHS number (kind 'nhs') or, for another
-- id (kind 'id'), its value with the system cut off into `system` ('' when it has none), so an
-- id is found by its value alone or with its system, as `audit query --patient` finds it.
CREATE TABLE patients (
    value TEXT NOT NULL,
    time INTEGER NOT NULL,
    seq INTEGER NOT NULL,             -- the request's (requests.seq)
    kind TEXT NOT NULL,               -- nhs | id
    system TEXT NOT NULL,
    org TEXT,
    PRIMARY KEY (value, time, seq, kind, system)
) WITHOUT ROWID;
-- Distinct patients per organisation per hour (the bulk-access alert) without touching requests.
CREATE INDEX patients_org_time ON patients (org, time, value);

-- Every DICOM study a request names.
CREATE TABLE studies (
    uid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (uid, seq)
) WITHOUT ROWID;

-- Everything else: tls_rejected, refusals_coalesced, lifecycle, checkpoint, audit_access, an
-- orphan complete, and any event a later version writes. `detail` holds what a kind needs
-- beyond the columns, as compact JSON (refusals_coalesced: reasons; audit_access: the filters).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    time INTEGER NOT NULL,
    file INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    event TEXT NOT NULL,
    org TEXT,                         -- refusals_coalesced, audit_access (who)
    ip TEXT,                          -- tls_rejected, refusals_coalesced
    reason TEXT,                      -- tls_rejected
    count INTEGER,                    -- refusals_coalesced; audit_access: rows returned
    action TEXT,                      -- lifecycle
    next_due INTEGER,                 -- checkpoint
    detail TEXT
);
CREATE INDEX events_event_time ON events (event, time);

-- Where indexing stands: one row. `file`/`offset` is where the next line starts; `last_*` the
-- last record indexed (the chain continues from `last_hash`). `broken_*` is set when the chain
-- broke there: indexing stops at that record and says so until the trail is repaired.
CREATE TABLE position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    file INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    last_time INTEGER NOT NULL,
    broken_seq INTEGER,
    broken_file TEXT,
    broken_line INTEGER,
    broken_message TEXT
);
