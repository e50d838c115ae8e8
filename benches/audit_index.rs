//! The audit index's figures (issue 20): indexing speed (records/s), `--patient` latency over
//! the index, and the index's size against the trail's. Prints one table; not criterion, as
//! each figure is one long measurement (building the index) or a distribution over many
//! patients, not a loop over one call.
//!
//! `CAREGATE_INDEX_RECORDS` (default 1,000,000) records in the steady mix: access + complete
//! pairs, a checkpoint every 1000 records, files of 100,000; each request names one patient of
//! a pool of records/20 (about ten accesses each, as a region's patients), every fourth a
//! second one. `cargo bench --bench audit_index`.

#[allow(dead_code)]
#[path = "../tests/support/trail_gen.rs"]
mod trail_gen;

use std::path::Path;
use std::time::Instant;

use caregate::audit::index::{self, IndexStore, Search};
use caregate::audit::query::{Filters, Format};
use trail_gen::{Gen, Req};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u64 = std::env::var("CAREGATE_INDEX_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let work = match std::env::var_os("CAREGATE_INDEX_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let dir = work.path().join("trail");
    std::fs::create_dir(&dir).expect("mkdir");
    let t = Instant::now();
    let patients = generate(&dir, n);
    eprintln!("generated {n} records in {:.1} s", t.elapsed().as_secs_f64());

    let db = work.path().join("index.db");
    let mut store = index::open(&db).expect("open");
    let t = Instant::now();
    let report = index::build(&dir, &mut store).expect("build");
    let build = t.elapsed().as_secs_f64();
    store
        .connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");

    let trail_bytes = folder_bytes(&dir, "audit-");
    let db_bytes = folder_bytes(work.path(), "index.db");

    // Who saw this patient: 200 patients spread over the pool, through the store alone (the
    // console) and as `audit query --db --format json` (rows read back from the trail).
    let mut search_ms = Vec::new();
    let mut query_ms = Vec::new();
    let mut rows = 0;
    for i in 0..200u64 {
        let patient = nhs(i * (patients / 200).max(1));
        let f = Filters {
            patient: Some(patient),
            ..Filters::default()
        };
        let t = Instant::now();
        let found = store
            .search(&Search {
                filters: f.clone(),
                ..Search::default()
            })
            .expect("search");
        search_ms.push(t.elapsed().as_secs_f64() * 1e3);
        rows += found.len();
        let t = Instant::now();
        index::query::query(&dir, &db, &f, Format::Json, &mut std::io::sink()).expect("query");
        query_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    search_ms.sort_by(f64::total_cmp);
    query_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize];

    println!("audit index, {} records ({} patients)", report.records, patients);
    println!(
        "  indexing           {:.0} records/s ({build:.1} s)",
        report.records as f64 / build
    );
    println!(
        "  --patient, store   median {:.2} ms, p99 {:.2} ms ({:.1} rows each)",
        pct(&search_ms, 0.5),
        pct(&search_ms, 0.99),
        rows as f64 / 200.0
    );
    println!(
        "  --patient, query   median {:.2} ms, p99 {:.2} ms (json, rows read from the trail)",
        pct(&query_ms, 0.5),
        pct(&query_ms, 0.99)
    );
    println!(
        "  size               index {:.1} MiB, trail {:.1} MiB: {:.2}x",
        db_bytes as f64 / 1048576.0,
        trail_bytes as f64 / 1048576.0,
        db_bytes as f64 / trail_bytes as f64
    );
}

/// A 999-range NHS-number-shaped id for patient `i` (test data only).
fn nhs(i: u64) -> String {
    format!("999{:07}", i % 10_000_000)
}

/// Writes `n` records; returns the size of the patient pool.
fn generate(dir: &Path, n: u64) -> u64 {
    let key = trail_gen::new_key();
    let mut g = Gen::new(dir, Some((&key, trail_gen::key_id(&key))), 100_000);
    g.checkpoint_every = 1000;
    let pool = (n / 20).max(1);
    g.lifecycle("start");
    let mut i = 0u64;
    while g.seq() + 3 <= n {
        let id = format!("req-{i:010}");
        // Spread over the pool, not in order, as real traffic is.
        let p = nhs(i.wrapping_mul(7_919) % pool);
        let second = nhs(i.wrapping_mul(104_729) % pool);
        let path = format!("/fhir/Patient/{p}");
        let query = format!("subject={second}");
        let deny = i.is_multiple_of(7);
        g.access(&Req {
            id: &id,
            org: ["A81001", "RX1", "B82617", "Y01234"][(i % 4) as usize],
            method: "GET",
            path: &path,
            query: i.is_multiple_of(4).then_some(query.as_str()),
            route: "epr-fhir",
            deny: deny.then_some("not_allowed"),
            nhs: Some(&p),
            fhir: Some(("Patient", &p)),
            interaction: Some("read"),
            nhs_numbers: if i.is_multiple_of(4) {
                vec![p.clone(), second.clone()]
            } else {
                Vec::new()
            },
            ..Req::default()
        });
        g.complete(&id, if deny { 403 } else { 200 }, "ok");
        i += 1;
    }
    g.finish(true);
    pool
}

fn folder_bytes(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
