//! The admin listener: readiness, health and Prometheus metrics over plain HTTP.

use super::client::Remote;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

impl Remote {
    /// `GET path` on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let admin = self.admin.expect("the gateway has an admin listener");
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The text of `/metrics` (which must answer 200).
    pub async fn scrape(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200);
        body
    }
}

/// The sum of the samples of series `name` whose labels contain every one of `labels`
/// (e.g. `route="files"`); None when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
