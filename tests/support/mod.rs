//! Fixtures for the integration tests, one folder for all of them (`mod support;`): a PKI minted
//! per run, a recording upstream, gateway configs built from a few calls, the gateway on
//! loopback port 0, clients that present certificates over real TLS, the admin listener, and
//! the audit trail read back (or generated, independently of the gateway's writer).
//!
//! ```ignore
//! let pki = TestPki::new();
//! let up = Upstream::start().await;
//! let gw = Gw::standard(&pki, &up).await;            // or Gw::start(&pki, pki.config()…)
//! let gp = pki.client("A81001");
//! assert_eq!(gw.get(&gp, "/fhir/Patient/9990000018").await.status, 200);
//! let records = gw.stop().await;
//! ```

// Each test crate uses a different part of the fixtures.
#![allow(dead_code)]

pub mod admin;
pub mod client;
pub mod clinical_trail;
pub mod config;
pub mod gateway;
pub mod pki;
pub mod trail;
pub mod trail_gen;
pub mod upstream;

// What most tests use, for `use support::*;` (each test crate uses a different part).
#[allow(unused_imports)]
pub use {
    admin::metric,
    client::{get, read_hashing, Answer, Download, Remote},
    config::{Allow, GatewayConfig, Route},
    gateway::Gw,
    pki::TestPki,
    trail::{audit_records, by_request, completion, first_trail_file, id_of_client_request, lifecycle},
    upstream::{dead_addr, pattern, pattern_sha, Upstream},
};
