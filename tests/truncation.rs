//! A trail cut short (issue 19): deleting the newest files leaves a trail that still ends with
//! a signed checkpoint, so plain `audit verify` passes it. What catches the cut: the last
//! checkpoint's signed `next_due` against what the auditor knows (`--expect-until`), and a
//! witness of a later checkpoint kept elsewhere (`audit witness`, `--witness`). And a second
//! caregate on a live trail is refused before it can cut anything.
//!
//! Real files, the real writer (`AuditLog`) with real signing keys, and the `caregate` binary.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caregate::audit::record::Lifecycle;
use caregate::audit::verify::{self, Expected, VerifyError, Witness};
use caregate::audit::{AuditLog, Event};
use caregate::config::{Audit, Durability};
use serde_json::Value;
use support::trail_gen::{self, Gen};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

// === fixtures ===

/// An audit signing key as `caregate pki dev` makes one, in `dir`.
struct Keys {
    /// The PKCS#8 PEM private key, for `[audit] signing_key`.
    key: PathBuf,
    /// The SPKI PEM public key, for `--public-key`.
    public_pem: PathBuf,
    /// The raw public key, for `verify::verify`.
    raw: [u8; 32],
}

fn keys(dir: &Path) -> Keys {
    let (key_pem, public_pem) = caregate::pki::audit_signing_key().unwrap();
    let key = dir.join("audit-signing.key");
    std::fs::write(&key, key_pem).unwrap();
    let raw = verify::parse_public_key_pem(&public_pem).unwrap();
    let public = dir.join("audit-signing.pub");
    std::fs::write(&public, public_pem).unwrap();
    Keys {
        key,
        public_pem: public,
        raw,
    }
}

/// A signed trail in `dir/audit`, flushed per record.
fn signed(dir: &Path, keys: &Keys) -> Audit {
    Audit {
        durability: Durability::Flush,
        signing_key: Some(keys.key.clone()),
        ..Audit::in_dir(dir.join("audit"))
    }
}

/// Waits (with a deadline) until the writer has written `n` records, checkpoints included.
fn wait_written(log: &AuditLog, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.stats().records_written < n {
        assert!(Instant::now() < deadline, "the writer did not write {n} records");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn lifecycle(action: &str) -> Event {
    Event::Lifecycle(Lifecycle {
        action: action.into(),
        config_sha256: "ab".repeat(32),
    })
}

/// The trail's `audit-*.jsonl` files, oldest first.
fn trail_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// The `time` (or any RFC 3339 member) of a record.
fn time_of(record: &Value, member: &str) -> OffsetDateTime {
    OffsetDateTime::parse(record[member].as_str().unwrap(), &Rfc3339).unwrap()
}

fn verify_with(dir: &Path, keys: &Keys, expected: &Expected) -> Result<verify::Report, VerifyError> {
    verify::verify_expecting(dir, Some(&keys.raw), &Default::default(), expected)
}

fn cut_short(r: Result<verify::Report, VerifyError>) -> String {
    match r {
        Err(e @ VerifyError::Cut(_)) => {
            assert_eq!(e.exit_code(), 1);
            e.to_string()
        }
        other => panic!("expected a trail cut short, got {other:?}"),
    }
}

/// The `caregate` binary's exit code, stdout and stderr.
fn caregate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_caregate"))
        .args(args)
        .output()
        .expect("run caregate");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A signed trail written by the writer in `dir/audit`, over several files of at most 4 KiB
/// (each ending with a checkpoint): `before` records, then the witness a cron job would take
/// of the live trail, then `after` records, then, idle, one more checkpoint (its time is the
/// trail's true end, at least an interval after every earlier checkpoint).
async fn trail_with_witness(dir: &Path, keys: &Keys, before: usize, after: usize) -> (Audit, Witness) {
    let cfg = Audit {
        rotate_bytes: 4096,
        checkpoint_interval: Duration::from_millis(30),
        ..signed(dir, keys)
    };
    let log = AuditLog::open(&cfg).unwrap();
    for _ in 0..before {
        log.append_durable(lifecycle("reload")).await.unwrap();
    }
    let witness = verify::witness::latest(&cfg.dir).unwrap();
    for _ in 0..after {
        log.append_durable(lifecycle("reload")).await.unwrap();
    }
    // Nothing more to sign: what comes next is the interval's checkpoint.
    wait_written(&log, log.stats().records_written + 1);
    log.close().await.unwrap();
    (cfg, witness)
}

/// Deletes the trail's files from the one holding `seq` on; returns how many.
fn cut_from(dir: &Path, seq: u64) -> usize {
    let files = trail_files(dir);
    let first = |p: &PathBuf| -> u64 {
        let name = p.file_name().unwrap().to_str().unwrap();
        name["audit-".len().."audit-".len() + 12].parse().unwrap()
    };
    let from = files.iter().rposition(|f| first(f) <= seq).unwrap();
    assert!(from > 0, "the cut must leave a trail");
    for f in &files[from..] {
        std::fs::remove_file(f).unwrap();
    }
    files.len() - from
}

/// Every record of the trail, in order.
fn records(dir: &Path) -> Vec<Value> {
    trail_files(dir)
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn checkpoints(dir: &Path) -> Vec<Value> {
    records(dir)
        .into_iter()
        .filter(|r| r["event"] == "checkpoint")
        .collect()
}

/// Every file of the folder, by name, with its bytes (as text: trail files are).
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    all.sort();
    all
}

// === the folder's lock ===

#[tokio::test]
async fn a_second_writer_is_refused_before_it_touches_a_live_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Audit {
        durability: Durability::Flush,
        ..Audit::in_dir(tmp.path().join("audit"))
    };
    let live = AuditLog::open(&cfg).unwrap();
    live.append_durable(lifecycle("start")).await.unwrap();
    // The live writer's next record, half written as another process may see it: a last line
    // without its newline, which recovery at open would cut off.
    let newest = trail_files(&cfg.dir).pop().unwrap();
    let good_len = std::fs::metadata(&newest).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut file, br#"{"seq":2,"time":"2026-11-22T05:08"#).unwrap();
    let before = snapshot(&cfg.dir);

    match AuditLog::open(&cfg) {
        Ok(_) => panic!("a second writer opened a trail in use"),
        Err(e) => assert!(e.to_string().contains("is locked"), "{e}"),
    }
    assert_eq!(snapshot(&cfg.dir), before, "the refused writer changed the trail");

    // The hand-written bytes off again; the live writer carries on and closes a whole trail.
    file.set_len(good_len).unwrap();
    live.append_durable(lifecycle("stop")).await.unwrap();
    live.close().await.unwrap();
    let report = caregate::audit::verify::verify(&cfg.dir, None, &Default::default()).unwrap();
    assert_eq!(report.records, 2);
}

// === the writer keeps next_due's promise ===

#[tokio::test]
async fn an_idle_writer_signs_every_interval_as_next_due_promised() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let cfg = Audit {
        checkpoint_interval: Duration::from_millis(10),
        ..signed(tmp.path(), &keys)
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_durable(lifecycle("start")).await.unwrap();
    // The start record's checkpoint, then two with nothing new to sign.
    wait_written(&log, 4);
    log.close().await.unwrap();

    let checkpoints = checkpoints(&cfg.dir);
    assert!(checkpoints.len() >= 3, "{checkpoints:?}");
    for c in &checkpoints {
        let (time, next_due) = (c["time"].as_str().unwrap(), c["next_due"].as_str().unwrap());
        assert_eq!(next_due.len(), time.len(), "{c}");
        assert!(next_due > time, "{c}");
    }
    // None came before its predecessor said it was due (the times are of one fixed format).
    for pair in checkpoints.windows(2) {
        assert!(pair[1]["time"].as_str() >= pair[0]["next_due"].as_str(), "{pair:?}");
    }
    let report = verify::verify(&cfg.dir, Some(&keys.raw), &Default::default()).unwrap();
    assert_eq!(report.checkpoints, checkpoints.len() as u64);
}

// === a trail cut at a checkpoint ===

#[tokio::test]
async fn deleting_the_newest_files_passes_plain_verify_but_not_the_witness_or_expect_until() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let (cfg, witness) = trail_with_witness(tmp.path(), &keys, 40, 40).await;
    let whole = records(&cfg.dir);
    let true_end = time_of(whole.last().unwrap(), "time");
    assert!(trail_files(&cfg.dir).len() >= 4);

    // The whole trail: intact, it holds the witness, it shows it ran until its true end.
    let expected = Expected {
        witnesses: vec![witness.clone()],
        until: Some(true_end),
    };
    let report = verify_with(&cfg.dir, &keys, &expected).unwrap();
    assert_eq!(report.witnessed, 1);
    let last = report.last_checkpoint.unwrap();
    assert_eq!(last.seq, whole.last().unwrap()["seq"]);
    assert!(last.next_due.is_some());

    // Delete the file holding the witnessed checkpoint and every newer one. What is left ends
    // with the checkpoint that closed the file before: plain verify, even with the key, passes
    // it, as it always did (each file ends signed).
    cut_from(&cfg.dir, witness.seq);
    let report = verify_with(&cfg.dir, &keys, &Expected::default()).unwrap();
    let last = report.last_checkpoint.clone().unwrap();
    assert_eq!(last.seq, report.last_seq, "the cut trail ends sealed");
    assert!(last.seq < witness.seq);
    assert_eq!(report.unsealed_tail, None);

    // What the auditor knows from elsewhere catches it.
    let with_witness = Expected {
        witnesses: vec![witness.clone()],
        until: None,
    };
    let problem = cut_short(verify_with(&cfg.dir, &keys, &with_witness));
    assert!(
        problem.contains(&format!("before checkpoint seq {} that the witness saw", witness.seq)),
        "{problem}"
    );
    let until = Expected {
        witnesses: vec![],
        until: Some(true_end),
    };
    let problem = cut_short(verify_with(&cfg.dir, &keys, &until));
    assert!(problem.contains("the trail stops before"), "{problem}");
    assert!(
        problem.contains(&format!("its last checkpoint, seq {}", last.seq)),
        "{problem}"
    );
    // An expectation the cut trail still meets: its last checkpoint's next_due.
    let met = Expected {
        witnesses: vec![],
        until: Some(OffsetDateTime::parse(last.next_due.as_deref().unwrap(), &Rfc3339).unwrap()),
    };
    verify_with(&cfg.dir, &keys, &met).unwrap();
}

#[tokio::test]
async fn a_cut_after_the_witness_is_caught_by_expect_until_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let (cfg, witness) = trail_with_witness(tmp.path(), &keys, 40, 40).await;
    let true_end = time_of(records(&cfg.dir).last().unwrap(), "time");
    // The newest file only: the witnessed checkpoint (in an older file) stays.
    let newest = trail_files(&cfg.dir).pop().unwrap();
    std::fs::remove_file(newest).unwrap();
    let witnessed = Expected {
        witnesses: vec![witness],
        until: None,
    };
    assert_eq!(verify_with(&cfg.dir, &keys, &witnessed).unwrap().witnessed, 1);
    let until = Expected {
        until: Some(true_end),
        ..witnessed
    };
    cut_short(verify_with(&cfg.dir, &keys, &until));
}

#[tokio::test]
async fn a_rewritten_witnessed_checkpoint_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let (cfg, mut witness) = trail_with_witness(tmp.path(), &keys, 40, 10).await;
    // A witness of a checkpoint that was since replaced (its hash differs): the trail no
    // longer holds what was witnessed.
    witness.hash = "0".repeat(64);
    let expected = Expected {
        witnesses: vec![witness.clone()],
        until: None,
    };
    match verify_with(&cfg.dir, &keys, &expected) {
        Err(VerifyError::Broken(b)) => {
            assert_eq!(b.seq, Some(witness.seq));
            assert!(b.problem.contains("rewritten after the witness was taken"), "{b}");
        }
        other => panic!("expected a broken trail, got {other:?}"),
    }
}

#[tokio::test]
async fn a_changed_next_due_or_time_breaks_the_checkpoint_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let cfg = signed(tmp.path(), &keys);
    let log = AuditLog::open(&cfg).unwrap();
    log.append_durable(lifecycle("start")).await.unwrap();
    log.close().await.unwrap();
    let file = trail_files(&cfg.dir).pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "checkpoint");
    verify_with(&cfg.dir, &keys, &Expected::default()).unwrap();

    for member in ["next_due", "time"] {
        // A day later, and the record's hash made to match again, as a forger would: only the
        // signature can tell.
        let old = last[member].as_str().unwrap();
        let new = (time_of(&last, member) + time::Duration::days(1))
            .format(&Rfc3339)
            .unwrap();
        let forged = rehash_last_line(&text.replace(old, &new));
        std::fs::write(&file, forged).unwrap();
        let b = match verify_with(&cfg.dir, &keys, &Expected::default()) {
            Err(VerifyError::Broken(b)) => b,
            other => panic!("changed {member}: expected a broken trail, got {other:?}"),
        };
        assert_eq!(b.seq, last["seq"].as_u64(), "{b}");
        assert!(b.problem.contains("signature is not valid"), "changed {member}: {b}");
        std::fs::write(&file, &text).unwrap();
    }
    verify_with(&cfg.dir, &keys, &Expected::default()).unwrap();
}

/// The text of a trail file with its last line's `hash` recomputed (SPEC §5).
fn rehash_last_line(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let line = lines.pop().unwrap();
    let prev: Value = serde_json::from_str(line).unwrap();
    let at = line.rfind(r#","hash":""#).unwrap();
    let body = format!("{}}}", &line[..at]);
    let input = format!("{}\n{body}", prev["prev"].as_str().unwrap());
    let hash = trail_gen::hex(ring::digest::digest(&ring::digest::SHA256, input.as_bytes()).as_ref());
    let mut out: String = lines.iter().map(|l| format!("{l}\n")).collect();
    out.push_str(&format!("{},\"hash\":\"{hash}\"}}\n", &line[..at]));
    out
}

// === v1 checkpoints (trails written before next_due) ===

/// An Ed25519 key for the independent generator, from the PKCS#8 PEM the writer loads.
fn ring_key(keys: &Keys) -> ring::signature::Ed25519KeyPair {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(&keys.key).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap()
}

#[tokio::test]
async fn v1_checkpoints_still_verify_and_this_writer_continues_their_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let cfg = signed(tmp.path(), &keys);
    std::fs::create_dir(&cfg.dir).unwrap();
    // An older trail: v1 checkpoints (no next_due), from the generator written to SPEC §5.
    let key = ring_key(&keys);
    let mut g = Gen::new(&cfg.dir, Some((&key, trail_gen::key_id(&key))), 20);
    g.checkpoint_every = 7;
    for _ in 0..30 {
        g.lifecycle("reload");
    }
    g.finish(true);
    let v1 = checkpoints(&cfg.dir);
    assert!(v1.iter().all(|c| c.get("next_due").is_none()));
    let report = verify_with(&cfg.dir, &keys, &Expected::default()).unwrap();
    let last = report.last_checkpoint.unwrap();
    assert_eq!(
        (last.seq, last.next_due),
        (v1.last().unwrap()["seq"].as_u64().unwrap(), None)
    );
    // Its time stands in for next_due.
    let at = time_of(v1.last().unwrap(), "time");
    let until = |t| Expected {
        witnesses: vec![],
        until: Some(t),
    };
    verify_with(&cfg.dir, &keys, &until(at)).unwrap();
    let problem = cut_short(verify_with(&cfg.dir, &keys, &until(at + time::Duration::seconds(1))));
    assert!(problem.contains("(v1: no next_due)"), "{problem}");
    // A witness of a v1 checkpoint: no next_due, and its signature checks.
    let witness = verify::witness::latest(&cfg.dir).unwrap();
    assert_eq!((witness.seq, witness.next_due.as_deref()), (last.seq, None));
    witness.check_signature(&keys.raw).unwrap();

    // This writer continues the trail with v2 checkpoints; the whole verifies.
    let log = AuditLog::open(&cfg).unwrap();
    log.append_durable(lifecycle("start")).await.unwrap();
    log.close().await.unwrap();
    let all = checkpoints(&cfg.dir);
    assert!(all.last().unwrap()["next_due"].is_string());
    let report = verify_with(
        &cfg.dir,
        &keys,
        &Expected {
            witnesses: vec![witness],
            until: Some(at + time::Duration::seconds(1)),
        },
    )
    .unwrap();
    assert_eq!(report.checkpoints, all.len() as u64);
    assert_eq!(report.witnessed, 1);
}

// === the witness ===

#[tokio::test]
async fn the_witness_is_the_newest_checkpoint_past_a_write_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let cfg = Audit {
        checkpoint_every: 3,
        ..signed(tmp.path(), &keys)
    };
    let log = AuditLog::open(&cfg).unwrap();
    for _ in 0..5 {
        log.append_durable(lifecycle("reload")).await.unwrap();
    }
    // Records 1-3, checkpoint 4, records 5-6: the newest checkpoint is seq 4.
    let witness = verify::witness::latest(&cfg.dir).unwrap();
    let newest = checkpoints(&cfg.dir).pop().unwrap();
    assert_eq!(witness.seq, 4);
    assert_eq!(serde_json::to_value(&witness).unwrap(), {
        let mut w = newest.clone();
        let w = w.as_object_mut().unwrap();
        for m in ["event", "prev"] {
            w.remove(m);
        }
        Value::Object(w.clone())
    });
    witness.check_signature(&keys.raw).unwrap();
    log.close().await.unwrap();

    let closed = checkpoints(&cfg.dir).pop().unwrap();
    // As a cron job may find a live trail: a line half written, a file just started.
    let file = trail_files(&cfg.dir).pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(
        &mut f,
        br#"{"seq":9,"time":"2026-11-22T05:08:59.1234","event":"checkpoint""#,
    )
    .unwrap();
    std::fs::write(cfg.dir.join("audit-000000000008.jsonl"), "").unwrap();
    assert_eq!(
        verify::witness::latest(&cfg.dir).unwrap().seq,
        closed["seq"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn an_unsigned_trail_has_nothing_to_witness() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Audit {
        durability: Durability::Flush,
        ..Audit::in_dir(tmp.path().join("audit"))
    };
    let log = AuditLog::open(&cfg).unwrap();
    log.append_durable(lifecycle("start")).await.unwrap();
    log.close().await.unwrap();
    let e = verify::witness::latest(&cfg.dir).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("holds no checkpoint"), "{e}");
    // And nothing shows until when it ran.
    let until = Expected {
        witnesses: vec![],
        until: Some(OffsetDateTime::now_utc()),
    };
    let r = verify::verify_expecting(&cfg.dir, None, &Default::default(), &until);
    assert!(cut_short(r).contains("holds no checkpoint"));
}

// === the commands ===

#[tokio::test]
async fn the_commands_as_an_auditor_runs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let (cfg, earlier) = trail_with_witness(tmp.path(), &keys, 40, 40).await;
    let (dir, public) = (cfg.dir.to_str().unwrap(), keys.public_pem.to_str().unwrap());
    let whole = records(&cfg.dir);
    let last = whole.last().unwrap();
    let true_end = last["time"].as_str().unwrap();

    // Plain verify prints the last checkpoint, so a human sees where the trail ends.
    let (code, out, err) = caregate(&["audit", "verify", dir, "--public-key", public]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("intact: "), "{out}");
    assert_eq!(
        lines[1],
        format!(
            "last checkpoint: seq {} at {true_end}, the next due by {}",
            last["seq"],
            last["next_due"].as_str().unwrap()
        )
    );

    // `audit witness` from cron, kept elsewhere (appended: a file may hold a history).
    let (code, first, err) = caregate(&["audit", "witness", dir]);
    assert_eq!(code, Some(0), "{err}");
    let witness: Witness = serde_json::from_str(first.trim_end()).unwrap();
    assert_eq!(
        (witness.seq, witness.hash.as_str()),
        (last["seq"].as_u64().unwrap(), last["hash"].as_str().unwrap())
    );
    let file = tmp.path().join("witnesses.jsonl");
    let earlier = serde_json::to_string(&earlier).unwrap();
    std::fs::write(&file, format!("{earlier}\n{first}{first}")).unwrap();
    let file = file.to_str().unwrap();

    let (code, out, err) = caregate(&[
        "audit",
        "verify",
        dir,
        "--public-key",
        public,
        "--witness",
        file,
        "--expect-until",
        true_end,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[2..],
        [
            format!(
                "witnesses: 2 checkpoints, the newest seq {} of {true_end}, in the trail, unchanged",
                witness.seq
            ),
            format!("expected until {true_end}: shown by the last checkpoint"),
        ],
        "{out}"
    );

    // The newest file deleted: plain verify passes, the witness and the expectation do not.
    std::fs::remove_file(trail_files(&cfg.dir).pop().unwrap()).unwrap();
    let (code, _, err) = caregate(&["audit", "verify", dir, "--public-key", public]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = caregate(&["audit", "verify", dir, "--public-key", public, "--witness", file]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("caregate audit verify: cut short: the trail ends at seq "),
        "{err}"
    );
    assert!(
        err.contains(&format!("before checkpoint seq {} that the witness saw", witness.seq)),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = caregate(&["audit", "verify", dir, "--expect-until", true_end]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("caregate audit verify: cut short: the trail stops before"),
        "{err}"
    );

    // Input that cannot be used: exit 2, one sentence.
    let (code, _, err) = caregate(&["audit", "verify", dir, "--witness", "postgres://db/audit"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not supported yet"), "{err}");
    let (code, _, err) = caregate(&["audit", "verify", dir, "--expect-until", "last tuesday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--expect-until must be RFC 3339"), "{err}");
    let (code, _, err) = caregate(&["audit", "witness", tmp.path().join("nope").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
}
