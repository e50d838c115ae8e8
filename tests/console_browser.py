#!/usr/bin/env python3
"""The auditor's console in a real Chromium, driven by Selenium (tests/console_browser.rs runs it).

Logging in with a client certificate is what a browser makes hard to automate: each identity
gets a HOME of its own whose NSS database (~/.pki/nssdb, where Chromium on Linux keeps client
certificates) holds that certificate (PKCS#12, imported with pk12util) and trusts the test CA,
and a managed Chromium policy (AutoSelectCertificateForUrls) makes Chromium present it without
asking. The policy file is removed afterwards; writing it needs root, as CI runs.

Exit 0 when every check passed; the first failed check is printed and exits 1.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

POLICY_DIR = pathlib.Path("/etc/chromium/policies/managed")


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def nss_home(root, name, ca, cert, key):
    """A HOME whose NSS database trusts `ca` and holds `cert` + `key` as a client certificate."""
    home = pathlib.Path(root) / name
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "caregate test CA", "-t", "C,,", "-i", ca)
    p12 = home / f"{name}.p12"
    run("openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-out", str(p12),
        "-passout", "pass:", "-name", name)
    run("pk12util", "-i", str(p12), "-d", f"sql:{db}", "-W", "")
    return home


def browser(home, downloads):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", f"--user-data-dir={home}/profile"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    env = dict(os.environ, HOME=str(home))
    service = Service(executable_path="/usr/bin/chromedriver", env=env)
    return webdriver.Chrome(service=service, options=opts)


class Checks:
    def __init__(self, shots):
        self.shots = shots

    def shot(self, driver, name):
        if self.shots:
            pathlib.Path(self.shots).mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(pathlib.Path(self.shots) / f"console-{name}.png"))

    @staticmethod
    def expect(ok, what):
        if not ok:
            print(f"console_browser: FAILED: {what}", file=sys.stderr)
            sys.exit(1)
        print(f"console_browser: ok: {what}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--auditor", nargs=2, required=True, metavar=("CERT", "KEY"))
    p.add_argument("--other", nargs=2, required=True, metavar=("CERT", "KEY"))
    p.add_argument("--patient", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--bulk-org", help="an organisation whose bulk-access alert the overview must show")
    p.add_argument("--shots", help="save a screenshot of each page here")
    a = p.parse_args()
    c = Checks(a.shots)

    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    policy = POLICY_DIR / f"caregate-console-test-{os.getpid()}.json"
    host = a.url.split("//", 1)[1].split("/", 1)[0]
    policy.write_text(json.dumps({"AutoSelectCertificateForUrls": [
        json.dumps({"pattern": f"https://{host}", "filter": {}})]}))
    root = tempfile.mkdtemp(prefix="caregate-browser-")
    try:
        downloads = pathlib.Path(root) / "downloads"
        downloads.mkdir()
        auditor = browser(nss_home(root, "auditor", a.ca, *a.auditor), downloads)
        try:
            d = auditor
            d.get(a.url + "/")
            c.expect("caregate console" in d.title, f"the overview opens with the auditor's certificate ({d.title!r})")
            c.expect("The trail" in d.page_source and "Audit log used" in d.page_source,
                     "the overview shows the trail's health and the console's own use")
            if a.bulk_org:
                alerts = d.find_element(By.ID, "alerts").text
                c.expect(a.bulk_org in alerts and "ulk" in alerts, f"a bulk-access alert names {a.bulk_org}: {alerts!r}")
            c.shot(d, "overview")

            d.get(a.url + "/search")
            d.find_element(By.NAME, "patient").send_keys(a.patient)
            d.find_element(By.CSS_SELECTOR, "form.search button").click()
            rows = d.find_elements(By.CSS_SELECTOR, "table.requests tr")
            c.expect(len(rows) >= 2, f"searching patient {a.patient} lists requests ({len(rows) - 1})")
            c.shot(d, "search")

            d.find_element(By.LINK_TEXT, a.patient).click()
            c.expect(f"Patient {a.patient}" in d.find_element(By.TAG_NAME, "h1").text, "the patient's page opens from the table")
            c.expect(len(d.find_elements(By.CSS_SELECTOR, "svg circle")) >= 1, "its timeline is drawn")
            c.shot(d, "patient")

            d.find_element(By.LINK_TEXT, a.org).click()
            c.expect(a.org in d.find_element(By.TAG_NAME, "h1").text, f"the organisation's page opens ({a.org})")
            c.expect(len(d.find_elements(By.CSS_SELECTOR, "svg rect")) >= 1, "its charts are drawn")
            c.shot(d, "organisation")

            d.get(a.url + "/search?patient=" + a.patient)
            d.find_element(By.LINK_TEXT, "CSV").click()
            deadline = time.time() + 20
            csv = None
            while time.time() < deadline and csv is None:
                done = [f for f in downloads.iterdir() if f.suffix == ".csv"]
                csv = done[0] if done else None
                time.sleep(0.1)
            c.expect(csv is not None, "the CSV export downloads")
            text = csv.read_text()
            c.expect(text.startswith("time,seq,request_id") and a.patient in text, "the CSV holds the search's rows")
        finally:
            auditor.quit()

        other = browser(nss_home(root, "other", a.ca, *a.other), downloads)
        try:
            other.get(a.url + "/")
            c.expect("Not an auditor" in other.page_source, "a certificate that is not an auditor's is refused")
            c.expect(a.patient not in other.page_source, "and sees nothing of the trail")
            c.shot(other, "refused")
        finally:
            other.quit()
    finally:
        policy.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
