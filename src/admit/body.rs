//! Reading a request body that may name a patient (FHIR JSON, form posts) before its access
//! record is made, so that the record names every patient the request does: GP Connect's
//! `$gpc.getstructuredrecord` carries the NHS number only in its body.
//!
//! Bounded both ways: per request by the route's `inspect_body_limit` (over it, 413
//! `body_too_large`), and across the gateway by `listener.max_inspect_bytes` (over it, 503
//! `overloaded`). Other bodies (DICOM, binaries) stream untouched, and a request without a
//! body costs nothing here.

use crate::audit::record;
use crate::clinical::{self, Facts};
use crate::config;
use crate::reject::Rejection;
use bytes::Bytes;
use http::request::Parts;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The request body on its way upstream: as it streams in, or read whole for inspection.
pub enum RequestBody {
    Streaming(Incoming),
    Inspected(Inspected),
}

/// How much the gateway may hold of bodies read for inspection, and how much it holds.
#[derive(Debug, Default)]
pub struct Held(AtomicU64);

/// What reading a body is allowed: the route's limit, the gateway's cap, a deadline.
pub struct Bounds<'a> {
    pub route: &'a config::Route,
    pub held: &'a Arc<Held>,
    /// `listener.max_inspect_bytes`.
    pub cap: u64,
    /// The body must have arrived by then (`listener.header_timeout`): a client that sends it
    /// slowly holds memory.
    pub deadline: Duration,
}

/// Whether this request's body must be read before its record is made: the body may name a
/// patient and the route inspects bodies. Says in `access.body_inspected` what was decided for
/// a body that could name a patient. Cheap, and all a request without a body ever costs here.
pub fn must_read(parts: &Parts, body: &Incoming, route: &config::Route, access: &mut record::Access) -> bool {
    if body.is_end_stream() || !clinical::inspectable(content_type(parts)) {
        return false;
    }
    access.body_inspected = Some(route.inspect_body);
    route.inspect_body
}

fn content_type(parts: &Parts) -> Option<&[u8]> {
    parts.headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes())
}

/// Reads a body [`must_read`] chose, adds what it names to `facts` and `access.clinical`, and
/// runs the checks on what the request names again with it.
pub async fn read(
    parts: &Parts,
    body: Incoming,
    bounds: Bounds<'_>,
    facts: &mut Facts,
    access: &mut record::Access,
) -> Result<RequestBody, Rejection> {
    let content_type = content_type(parts);
    let route = bounds.route;
    let limit = route.inspect_body_limit;
    let announced = body.size_hint().exact();
    if announced.is_some_and(|n| n > limit) {
        return Err(Rejection::BodyTooLarge);
    }
    // Reserve what the body may take before reading a byte of it.
    let reservation = Reservation::take(bounds.held, announced.unwrap_or(limit), bounds.cap)?;
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(bounds.deadline, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(Rejection::BodyTooLarge),
        Ok(Err(_)) => return Err(Rejection::BadRequest("the request body could not be read whole")),
        Err(_) => {
            return Err(Rejection::BadRequest(
                "the request body did not arrive within listener.header_timeout",
            ))
        }
    };
    let parsed = clinical::inspect_body(content_type, &bytes, &route.into(), facts);
    access.clinical.clone_from(&facts.clinical);
    // The checks on what the request names, again with what its body names.
    parsed.map_err(|_| Rejection::BadRequest("the request body says it is JSON but does not parse"))?;
    super::patients_recordable(facts)?;
    super::nhs_number_valid(route, facts)?;
    Ok(RequestBody::Inspected(Inspected {
        data: Some(bytes),
        _reservation: reservation,
    }))
}

/// Bytes of [`Held`] set aside for one body, given back when it is dropped.
struct Reservation {
    held: Arc<Held>,
    n: u64,
}

impl Reservation {
    fn take(held: &Arc<Held>, n: u64, cap: u64) -> Result<Reservation, Rejection> {
        let before = held.0.fetch_add(n, Ordering::AcqRel);
        let reservation = Reservation { held: held.clone(), n };
        if before.saturating_add(n) > cap {
            // Dropped: given back at once.
            return Err(Rejection::Overloaded);
        }
        Ok(reservation)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.held.0.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// A body read whole, sent on as one frame. Its memory counts against the gateway's cap
/// until it has gone upstream (or the request ended).
pub struct Inspected {
    data: Option<Bytes>,
    _reservation: Reservation,
}

impl Body for Inspected {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_by_the_cap_and_given_back() {
        let held = Arc::new(Held::default());
        let a = Reservation::take(&held, 600, 1000).unwrap();
        assert!(matches!(
            Reservation::take(&held, 500, 1000),
            Err(Rejection::Overloaded)
        ));
        // The refused one took nothing.
        assert_eq!(held.0.load(Ordering::Acquire), 600);
        let b = Reservation::take(&held, 400, 1000).unwrap();
        drop(a);
        drop(b);
        assert_eq!(held.0.load(Ordering::Acquire), 0);
    }
}
