//! Requests hyper answers by itself: an HTTP/1 head it cannot parse gets 400 (414 for a target
//! over 64 KiB, 431 for a head over `max_buf_size`, which is `listener.max_header_bytes`)
//! written by hyper before the connection ends with the parse error, and never reaches the
//! pipeline. Each gets its `access` (`deny`, `bad_request`) and `complete` (`client_error`)
//! records here, under the same per-address budget as refused handshakes (`audit::refusals`):
//! one a connection, and past the budget counted into a `refusals_coalesced` record.

use crate::audit::record::{Complete, Event};
use crate::gateway::Gateway;
use crate::proxy::Conn;
use std::time::Instant;

/// The status hyper answered a connection's error with, if it answered one.
pub fn status_of(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let e = e.downcast_ref::<hyper::Error>()?;
    // As hyper's own `on_error`: no answer for an internal error, a status line (we are the
    // server) or an HTTP/2 preface on an HTTP/1 connection.
    if e.is_parse_too_large() {
        return Some(if e.to_string().starts_with("URI too long") {
            414
        } else {
            431
        });
    }
    let answered =
        e.is_parse() && !e.is_parse_status() && !e.is_parse_version_h2() && !e.to_string().starts_with("internal");
    answered.then_some(400)
}

/// Records a request hyper refused with `status` on `conn`. What the head said is unknown (it
/// could not be parsed), so the record's request is `-` with the connection's identity.
pub fn record(gw: &Gateway, conn: &Conn, status: u16) {
    let started = Instant::now();
    gw.metrics.observe_start();
    gw.metrics.observe_end(None, None, "deny", status, started);
    if !gw.refusals.spend(
        &gw.audit,
        conn.peer.ip(),
        "bad_request",
        crate::audit::refusals::HANDSHAKES,
    ) {
        return;
    }
    let request_id = crate::gateway::request_id();
    let (parts, ()) = http::Request::new(()).into_parts();
    let mut access = crate::admit::access_record(&conn.identity, &conn.ip, conn.peer.port(), &parts, &request_id, None);
    access.request.method = "-".into();
    access.request.path = "-".into();
    access.request.version = "HTTP/1.1".into();
    access.reason = "bad_request".into();
    gw.audit.append(Event::Access(Box::new(access)));
    gw.audit.append(Event::Complete(Complete {
        request_id,
        status,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0,
        outcome: "client_error".into(),
    }));
}
