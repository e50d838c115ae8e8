//! The auditor's console as people use it: a real Chromium, driven by Selenium
//! (`tests/console_browser.py`), against a gateway with `[console]` that has served real
//! traffic, one organisation reading many distinct patients. It logs in with an auditor's client
//! certificate, sees the bulk-access alert on the overview, searches a patient, opens the
//! patient's and an organisation's pages, exports CSV, and is refused with a certificate that is
//! not an auditor's. With `CAREGATE_SCREENSHOTS` set, each page is saved to `docs/img/`.
//!
//! Needs `chromium`, `chromium-driver`, `libnss3-tools`, `openssl` and Python's `selenium`
//! (`.ci/run` installs them) and root (a managed Chromium policy selects the certificate): where
//! they are missing, the test says so and passes, unless `CAREGATE_BROWSER_TESTS` is set (CI
//! sets it).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Valid NHS numbers in the 999 range (never issued to anyone): `999` `000` `nnn` + check digit.
fn nhs_numbers(n: usize) -> Vec<String> {
    (1..)
        .filter_map(|i: u32| {
            let stem = format!("999000{i:03}");
            let sum: u32 = stem
                .chars()
                .zip((2..=10).rev())
                .map(|(c, w)| c.to_digit(10).unwrap() * w)
                .sum();
            match 11 - sum % 11 {
                10 => None,
                11 => Some(format!("{stem}0")),
                d => Some(format!("{stem}{d}")),
            }
        })
        .take(n)
        .collect()
}

fn missing_tools() -> Option<String> {
    for tool in [
        "/usr/bin/chromium",
        "/usr/bin/chromedriver",
        "/usr/bin/pk12util",
        "/usr/bin/certutil",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let selenium = Command::new("python3").args(["-c", "import selenium"]).status();
    if !selenium.is_ok_and(|s| s.success()) {
        return Some("Python's selenium is not installed".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot write the Chromium policy that selects the certificate".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_uses_the_console_in_chromium() {
    if let Some(why) = missing_tools() {
        // CI installs them and says so: there, missing is a failure, not a skip.
        assert!(
            std::env::var_os("CAREGATE_BROWSER_TESTS").is_none(),
            "CAREGATE_BROWSER_TESTS is set but {why}"
        );
        eprintln!("console_browser: skipped: {why}");
        return;
    }
    let pki = TestPki::new();
    let up = Upstream::start().await;
    let mut gw = Gw::start(&pki, pki.config().standard([up.url()]).console(&["RXC"])).await;
    let (gp, bulk, auditor) = (pki.client("A81001"), pki.client("A81002"), pki.client("RXC"));
    assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
    // One organisation reads many distinct patients in an hour: the bulk-access pattern.
    let many = nhs_numbers(60);
    for nhs in &many {
        assert_eq!(gw.get(&bulk, &format!("/fhir/Patient/{nhs}")).await.status, 200);
    }
    // Indexed: the console's search finds the last of them (polled, with a deadline).
    let console = Remote::new(gw.console_addr(), None, &pki);
    let last = many.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&console.get(&auditor, &format!("/search?patient={last}")).await.body)
        .contains("A81002")
    {
        assert!(Instant::now() < deadline, "the index did not catch up in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca.cert_pem());
    let (a_cert, a_key) = (
        write("auditor.pem", &auditor.cert_pem),
        write("auditor.key", &auditor.key_pem),
    );
    let (o_cert, o_key) = (write("other.pem", &gp.cert_pem), write("other.key", &gp.key_pem));
    let url = format!("https://localhost:{}", gw.console_addr().port());
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console_browser.py"))
        .args(["--url", &url, "--ca", &ca, "--patient", "9990000018", "--org", "A81001"])
        .args(["--bulk-org", "A81002"])
        .args(["--auditor", &a_cert, &a_key, "--other", &o_cert, &o_key]);
    if std::env::var_os("CAREGATE_SCREENSHOTS").is_some() {
        cmd.args(["--shots", concat!(env!("CARGO_MANIFEST_DIR"), "/docs/img")]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");

    // The overview raised the alert: counted once in /metrics, however often it was shown.
    let scrape = gw.scrape().await;
    assert_eq!(
        metric(&scrape, "caregate_alerts_total", &["kind=\"bulk_access\""]),
        Some(1.0),
        "{scrape}"
    );

    // What the browser did is in the trail: its searches, pages and the export, by RXC.
    let records = gw.stop().await;
    let used: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "audit_access" && r["client"]["org"] == "RXC")
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    for action in ["overview", "search", "patient", "organisation", "export_csv"] {
        assert!(used.iter().any(|a| a == action), "no {action} in {used:?}");
    }
    assert!(records
        .iter()
        .any(|r| r["event"] == "audit_access" && r["decision"] == "deny" && r["client"]["org"] == "A81001"));
}
