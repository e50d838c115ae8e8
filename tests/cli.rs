//! The `caregate` binary as a person runs it: `pki dev`, `check`, `explain`, and the auditor's
//! commands on a trail written by a real gateway.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn caregate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caregate"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run caregate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pki_check_and_explain_work_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = caregate(d, &["pki", "dev", "--out", "certs/dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in [
        "ca.pem",
        "ca.crl",
        "server.pem",
        "server.key",
        "a81001.pem",
        "revoked.pem",
        "audit-signing.key",
    ] {
        assert!(d.join("certs/dev").join(f).exists(), "{f}");
    }
    std::fs::create_dir(d.join("config")).unwrap();
    std::fs::write(d.join("config/demo.toml"), caregate::demo::DEMO_TOML).unwrap();

    let out = caregate(d, &["check", "--config", "config/demo.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));
    let threads = caregate::demo::DEMO_TOML.replacen("[listener]\n", "[listener]\nworkers = 3\n", 1);
    assert_ne!(threads, caregate::demo::DEMO_TOML);
    std::fs::write(d.join("config/threads.toml"), threads).unwrap();
    let out = caregate(d, &["check", "--config", "config/threads.toml"]);
    assert!(text(&out.stdout).contains("(3 workers,"), "{}", text(&out.stdout));

    let bad = caregate::demo::DEMO_TOML.replacen("upstream = \"pacs\"", "upstream = \"nowhere\"", 1);
    std::fs::write(d.join("config/bad.toml"), bad).unwrap();
    let out = caregate(d, &["check", "--config", "config/bad.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(".upstream") && err.contains("nowhere"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");

    let explain = |cert: &str, target: &str| {
        let out = caregate(d, &["explain", "--config", "config/demo.toml", "--cert", cert, target]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let gp_pacs = explain("certs/dev/a81001.pem", "/dicomweb/studies");
    assert!(gp_pacs.contains("DENY 403 not_allowed"), "{gp_pacs}");
    let gp_fhir = explain("certs/dev/a81001.pem", "https://localhost:8443/fhir/Patient/9990000018");
    assert!(gp_fhir.contains("ALLOW by"), "{gp_fhir}");
    assert!(gp_fhir.contains("A81001"), "{gp_fhir}");
    let revoked = explain("certs/dev/revoked.pem", "/fhir/Patient/9990000018");
    assert!(revoked.contains("REFUSED at the handshake"), "{revoked}");
}

#[tokio::test]
async fn audit_commands_on_a_real_trail() {
    let pki = support::TestPki::new();
    let up = support::Upstream::start().await;
    let mut gw = support::Gw::standard(&pki, &up).await;
    gw.get(&pki.client("A81001"), "/fhir/Patient/9990000018").await;
    gw.get(&pki.client("B99999"), "/fhir/Patient/9990000026").await;
    gw.stop().await;
    let dir = &gw.audit_dir;
    let trail = dir.to_str().unwrap();
    let here = std::env::temp_dir();

    let out = caregate(&here, &["audit", "verify", trail]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("intact"));

    let out = caregate(
        &here,
        &["audit", "query", trail, "--patient", "9990000018", "--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["client"]["org"], "A81001");

    let out = caregate(
        &here,
        &["audit", "query", trail, "--decision", "deny", "--format", "csv"],
    );
    let csv = text(&out.stdout);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("B99999"));

    let out = caregate(
        &here,
        &["audit", "export", trail, "--format", "fhir", "--patient", "9990000018"],
    );
    let event: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(event["resourceType"], "AuditEvent");

    // Tamper with one record: verify names it and exits 1.
    let file = support::first_trail_file(dir);
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, body.replacen("B99999", "A81001", 1)).unwrap();
    let out = caregate(&here, &["audit", "verify", trail]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("seq"), "{}", text(&out.stderr));
}
