//! Audit trail write throughput (SPEC §5, §7): records per second that become durable with
//! `fsync` and with `flush`, at 1, 16 and 256 concurrent writers (group commit is what lets
//! many writers share one fsync), and the CPU cost of encoding and chaining one `access` record.
//!
//! `cargo bench --bench audit_write` (add `-- --quick` for a fast pass). Files go to a temp
//! folder on the filesystem of `$TMPDIR`, so fsync figures are that disk's.

use std::hint::black_box;
use std::time::{Duration, Instant};

use caregate::audit::record::{Access, Client, Clinical, Request};
use caregate::audit::{encode_event, AuditLog, Event};
use caregate::config::{Audit, Durability};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn access(i: u64) -> Event {
    Event::Access(Box::new(Access {
        client_request_id: None,
        body_inspected: None,
        request_id: format!("01J{i:023}").into(),
        client: Client {
            org: Some("A81001".into()),
            org_name: Some("Riverside Medical Practice".into()),
            subject: Some("CN=gpsys.a81001.nhs.uk,OU=A81001,O=Riverside Medical Practice".into()),
            fingerprint: Some("3f".repeat(32).into()),
            serial: Some("4a1f09c2".into()),
            ip: "10.20.30.40".into(),
            port: 51_234,
        },
        request: Request {
            method: "GET".into(),
            host: Some("epr.trust.nhs.uk".into()),
            path: "/fhir/R4/Patient/9990000034".into(),
            path_params: Vec::new(),
            query: None,
            version: "HTTP/1.1".into(),
        },
        route: Some("epr-fhir".into()),
        class: Some("epr".into()),
        decision: "allow".into(),
        reason: "allowed".into(),
        rule: Some("epr-fhir/allow[0]".into()),
        break_glass: None,
        clinical: Clinical {
            fhir_type: Some("Patient".into()),
            fhir_id: Some("9990000034".into()),
            nhs_number: Some("9990000034".into()),
            interaction: Some("read".into()),
            ..Default::default()
        },
    }))
}

fn write_throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("audit_write");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, durability) in [("fsync", Durability::Fsync), ("flush", Durability::Flush)] {
        for writers in [1u64, 16, 256] {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = Audit {
                durability,
                ..Audit::in_dir(dir.path().join("audit"))
            };
            let log = AuditLog::open(&cfg).expect("open");
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                // One iteration is one durable record, so criterion's rate is records/s.
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let log = log.clone();
                                let n = iters / writers + u64::from(w < iters % writers);
                                tokio::spawn(async move {
                                    for i in 0..n {
                                        log.append_durable(access(i)).await.expect("append");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("writer task");
                        }
                        started.elapsed()
                    })
                })
            });
            let stats = log.stats();
            eprintln!(
                "audit_write/{name}/{writers}: {} records, {} fsyncs ({:.1} records per fsync)",
                stats.records_written,
                stats.fsyncs,
                stats.records_written as f64 / stats.fsyncs.max(1) as f64
            );
            rt.block_on(log.close()).expect("close");
        }
    }
    group.finish();
}

fn encode_one(c: &mut Criterion) {
    let event = access(1);
    let prev = "0".repeat(64);
    let mut out = Vec::with_capacity(1024);
    let mut group = c.benchmark_group("audit_encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("access_record", |b| {
        b.iter(|| {
            out.clear();
            black_box(encode_event(&mut out, black_box(42), black_box(&event), &prev).expect("encode"))
        })
    });
    group.finish();
}

criterion_group!(benches, write_throughput, encode_one);
criterion_main!(benches);
