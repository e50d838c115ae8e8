//! The admin listener: `/healthz`, `/readyz`, `/metrics`. Plain HTTP, meant for loopback or a
//! management network; it answers nothing else.

use crate::gateway::Gateway;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin listener until `stop` (after the drain, so that `/readyz` answers 503 while
/// it lasts). `accepting` is true while the TLS listener accepts connections.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    accepting: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let gw = gw.clone();
        let accepting = accepting.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (gw, accepting) = (gw.clone(), accepting.clone());
                async move { Ok::<_, Infallible>(answer(&gw, accepting.load(Ordering::Relaxed), &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn answer(gw: &Gateway, accepting: bool, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "alive\n".into()),
        "/readyz" => {
            let audit = gw.audit.readiness();
            let audit_ok = audit.is_ok();
            let draining = gw.draining.load(Ordering::Relaxed);
            let upstreams = !gw.state.load().upstreams.is_empty();
            if audit_ok && accepting && !draining && upstreams {
                text(StatusCode::OK, "ready\n".into())
            } else {
                let why = if draining {
                    "draining"
                } else if !accepting {
                    "not listening yet"
                } else if let Err(why) = audit {
                    why
                } else {
                    "no upstreams configured"
                };
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"))
            }
        }
        "/metrics" => {
            let stats = gw.audit.stats();
            gw.metrics.audit_healthy.set(i64::from(stats.healthy));
            gw.metrics.audit_queue_depth.set(stats.queue_depth as i64);
            gw.metrics.audit_fsync_seconds.set(stats.last_fsync_seconds);
            gw.metrics.draining.set(i64::from(gw.draining.load(Ordering::Relaxed)));
            gw.refresh_cert_metrics();
            let mut r = text(
                StatusCode::OK,
                gw.metrics.encode_with(&stats, &gw.audit.fsync_durations()),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}
