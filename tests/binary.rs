//! The real `caregate` binary (SPEC §6): SIGHUP reloads, SIGTERM drains and exits 0, the
//! operational log is JSON lines with no patient identifier in it (at debug level) while the
//! audit trail keeps them and ends with a signed checkpoint. Real TLS on loopback.

mod support;

use caregate::pki::LeafSpec;
use serde_json::Value;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// The `caregate` binary, killed if the test fails before it exits.
struct Process {
    child: std::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    fn run(config: &Path) -> Process {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_caregate"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => lines.lock().unwrap().push(l),
                    Err(_) => return,
                }
            }
        });
        Process {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// The first log line (JSON) whose message is `message`, waiting for it.
    async fn log_line(&self, message: &str) -> Value {
        self.log_line_where(message, |_| true).await
    }

    /// The first log line with this message that `pred` accepts, waiting for it.
    async fn log_line_where(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == message && pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in the log: {:?}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its status and everything it wrote to stderr.
    async fn exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "caregate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.stderr.lock().unwrap().clone())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_drains_on_sigterm_and_logs_no_patient_identifiers() {
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let audit_dir = work.path().join("audit");
    let (key, public) = caregate::pki::audit_signing_key().unwrap();
    std::fs::write(work.path().join("audit.key"), key).unwrap();
    std::fs::write(work.path().join("audit.pub"), public).unwrap();
    let config = pki
        .config()
        .listener(r#"drain_timeout = "10s""#)
        .audit(&audit_dir)
        .set(
            "audit",
            format!(
                "signing_key = {}",
                support::config::path(&work.path().join("audit.key"))
            ),
        )
        .standard([up.url()])
        // Break-glass on the last route (`files`) for B99999, whose reason names a patient.
        .raw("  [[route.break_glass]]\n  orgs = [\"B99999\"]\n");
    let config_path = work.path().join("caregate.toml");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let mut process = Process::run(&config_path);
    let listening = process.log_line("caregate listening").await;
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = listening["admin"]
        .as_str()
        .expect("the admin address is logged")
        .parse()
        .unwrap();
    let gw = Remote::new(addr, Some(admin), &pki);
    assert_eq!(gw.admin_get("/readyz").await.0, 200);

    // Patient traffic of every kind: allowed, denied, refused, malformed, over both protocols,
    // with NHS numbers in paths, queries, headers and bodies.
    let nhs = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000019"];
    let gp = pki.client("A81001");
    let trust = pki.client("RXC");
    let nobody = pki.client("B99999");
    let mut statuses = Vec::new();
    for h2 in [false, true] {
        for (leaf, path) in [
            (&gp, "/fhir/Patient/9990000018"),
            (&gp, "/fhir/Observation?patient=9990000026&_count=10"),
            (
                &gp,
                "/fhir/Patient?identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000034",
            ),
            (&gp, "/fhir/Patient/9990000019"),
            (&nobody, "/fhir/Patient/9990000042"),
            (&gp, "/nowhere/9990000018"),
            (&gp, "/fhir/Patient/%2e%2e/%2e%2e/9990000026"),
            (&trust, "/fhir/Patient/9990000042/$everything?subject=9990000034"),
        ] {
            statuses.push(gw.request(leaf).path(path).http2(h2).send().await.status);
        }
        let post = gw
            .request(&trust)
            .method("POST")
            .path("/fhir/Patient")
            .header("content-type", "application/fhir+json")
            .header("x-patient", "9990000026")
            .body(&br#"{"resourceType":"Patient","id":"9990000018"}"#[..])
            .http2(h2);
        statuses.push(post.send().await.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&403) && statuses.contains(&404),
        "{statuses:?}"
    );
    assert!(statuses.contains(&400), "{statuses:?}");
    let glass = gw
        .request(&nobody)
        .path("/files/9990000042")
        .header("x-break-glass-reason", "patient 9990000042 collapsed in ED resus")
        .send()
        .await;
    assert_eq!(glass.status, 200);
    let warned = process
        .log_line("break-glass: a not_allowed refusal was overridden; review the access record")
        .await;
    assert_eq!(
        (warned["org"].as_str(), warned["route"].as_str()),
        (Some("B99999"), Some("files")),
        "{warned}"
    );
    let raw_bad = gw.raw(
        &gp,
        b"GET /fhir/Patient/9990000018 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert!(raw_bad.starts_with("HTTP/1.1 400"), "{raw_bad}");
    assert!(gw.handshake_refused(None).await);
    // A server's certificate offered as a client's: the audit's reason is `other`, and the log
    // says what that was.
    let server_cert = pki.issue(&LeafSpec::server(&["gp.example"]));
    assert!(gw.handshake_refused(Some(&server_cert)).await);
    let refused = process
        .log_line_where("TLS handshake refused", |v| v["reason"] == "other")
        .await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("extended key usage"), "{refused}");
    let refused = process
        .log_line_where("TLS handshake refused", |v| v["reason"] == "no_certificate")
        .await;
    assert!(refused["error"].as_str().is_some_and(|e| !e.is_empty()), "{refused}");
    let m = gw.scrape().await;
    assert!(metric(&m, "caregate_requests_total", &[]).unwrap() >= 18.0);

    // SIGHUP: a reload, logged and audited.
    process.signal("-HUP");
    process.log_line("config reloaded").await;
    assert_eq!(
        metric(&gw.scrape().await, "caregate_reloads_total", &[r#"result="ok""#]),
        Some(1.0)
    );

    // SIGTERM: drain and exit 0.
    process.signal("-TERM");
    let (status, log) = process.exit().await;
    assert!(status.success(), "exit status {status:?}; log: {log:?}");
    assert!(log.iter().any(|l| l.contains("\"stopped\"")), "{log:?}");

    // The operational log: JSON lines, and no NHS number anywhere in it (at debug level).
    assert!(log.len() > 5);
    for line in &log {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not a JSON line: {line}");
        for n in nhs {
            assert!(!line.contains(n), "an NHS number in the log: {line}");
        }
        assert!(
            !line.contains("9990000"),
            "a test NHS number (999 range) in the log: {line}"
        );
    }

    // The audit trail holds what the log must not, and ends with stop and a signed checkpoint.
    let records = audit_records(&audit_dir);
    let trail = records.iter().map(|r| r.to_string()).collect::<String>();
    assert!(trail.contains("9990000018"));
    assert_eq!(lifecycle(&records, "start").len(), 1);
    assert_eq!(lifecycle(&records, "reload").len(), 1);
    let n = records.len();
    assert_eq!(records[n - 1]["event"], "checkpoint", "the final checkpoint");
    assert_eq!(
        (&records[n - 2]["event"], &records[n - 2]["action"]),
        (&Value::from("lifecycle"), &Value::from("stop"))
    );
}
