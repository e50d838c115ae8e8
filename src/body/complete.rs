//! The `complete` record: [`Completion`] writes it once, [`Completing`] (the response body)
//! fires it at the end, error or drop, and [`Delivery`] (one per connection) holds it back until
//! the flush that puts the response's last byte in the socket.

use super::{ClientFault, Tally};
use crate::audit::record::{Complete, Event};
use crate::audit::AuditLog;
use crate::limit::Grant;
use crate::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

/// A hook that sees the finished record (metrics).
type OnComplete = Box<dyn FnOnce(&Complete) + Send>;

/// Writes the `complete` record exactly once. Dropped without `finish`, it records a client
/// abort: the only way a response stops without anyone saying so.
///
/// With its connection's [`Delivery`], `bytes_out` counts what reached the socket: a frame is
/// delivered once the connection has flushed since it was handed to hyper, and a response that
/// ended waits (parked in the `Delivery`) for the flush that carries its last byte.
pub struct Completion {
    audit: AuditLog,
    request_id: Arc<str>,
    started: Instant,
    tally: Arc<Tally>,
    status: u16,
    /// Body bytes handed to hyper.
    bytes_out: u64,
    /// Of those, the bytes known flushed to the socket.
    delivered: u64,
    /// The connection's flush count when the latest frame was handed over.
    handed_at: u64,
    delivery: Option<Arc<Delivery>>,
    /// The outcome once the response is delivered (a refusal's may be other than `ok`).
    outcome: &'static str,
    done: bool,
    /// False for a request whose access record was never written: no `complete` record.
    recorded: bool,
    /// Held until the response is over: frees the concurrency slot on drop.
    _grant: Option<Grant>,
    on_complete: Option<OnComplete>,
}

impl Completion {
    pub fn new(audit: AuditLog, request_id: Arc<str>, started: Instant, tally: Arc<Tally>) -> Completion {
        Completion {
            audit,
            request_id,
            started,
            tally,
            status: 0,
            bytes_out: 0,
            delivered: 0,
            handed_at: 0,
            delivery: None,
            outcome: "ok",
            done: false,
            recorded: true,
            _grant: None,
            on_complete: None,
        }
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The outcome the record gets once the response has reached the client.
    pub fn set_outcome(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }

    /// The connection the response goes out on: the record waits for its flushes.
    pub fn deliver_on(&mut self, delivery: Option<Arc<Delivery>>) {
        self.handed_at = delivery.as_ref().map_or(0, |d| d.flushes());
        self.delivery = delivery;
    }

    pub fn hold(&mut self, grant: Grant) {
        self._grant = Some(grant);
    }

    /// A hook that sees the record (metrics), whether or not it is written.
    pub fn on_complete(&mut self, f: impl FnOnce(&Complete) + Send + 'static) {
        self.on_complete = Some(Box::new(f));
    }

    /// For a request whose access record was never written: no `complete` record either (an
    /// orphan would only confuse auditors); the hook still sees the end.
    pub fn unrecorded(&mut self) {
        self.recorded = false;
    }

    /// True when the connection has flushed since the latest frame was handed over (and so
    /// everything handed over so far is in the socket); without a `Delivery`, always.
    fn flushed_since_handed(&self) -> bool {
        match &self.delivery {
            Some(d) => d.flushes() > self.handed_at,
            None => self.handed_at != PARKED,
        }
    }

    /// A frame of `n` bytes is handed to hyper.
    fn handed(&mut self, n: u64) {
        if let Some(d) = &self.delivery {
            let now = d.flushes();
            if now > self.handed_at {
                self.delivered = self.bytes_out;
            }
            self.handed_at = now;
        }
        self.bytes_out += n;
    }

    /// The response's last byte is handed to hyper: the record now if it is already flushed,
    /// else at the connection's next flush (or as `client_aborted` if the connection ends first).
    fn ended(&mut self) {
        if self.done {
            return;
        }
        match &self.delivery {
            Some(d) if !self.flushed_since_handed() => {
                let d = d.clone();
                d.park(self.take());
            }
            _ => self.finish(self.outcome),
        }
    }

    /// This completion's state, moved out into one that finishes it; this one is left done.
    fn take(&mut self) -> Completion {
        self.done = true;
        Completion {
            audit: self.audit.clone(),
            request_id: std::mem::take(&mut self.request_id),
            started: self.started,
            tally: self.tally.clone(),
            status: self.status,
            bytes_out: self.bytes_out,
            delivered: self.delivered,
            handed_at: self.handed_at,
            delivery: self.delivery.take(),
            outcome: self.outcome,
            done: false,
            recorded: std::mem::replace(&mut self.recorded, false),
            _grant: self._grant.take(),
            on_complete: self.on_complete.take(),
        }
    }

    pub fn finish(&mut self, outcome: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        // Cut short: only what reached the socket was delivered.
        let bytes_out = if outcome == self.outcome || self.flushed_since_handed() {
            self.bytes_out
        } else {
            self.delivered
        };
        let record = Complete {
            request_id: std::mem::take(&mut self.request_id),
            status: self.status,
            bytes_in: self.tally.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration_ms: self.started.elapsed().as_millis() as u64,
            outcome: outcome.into(),
        };
        if let Some(f) = self.on_complete.take() {
            f(&record);
        }
        if self.recorded {
            self.audit.append(Event::Complete(record));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped unfinished: the client went away (or broke its upload, which for HTTP/2
        // resets the stream and with it the response), or the gateway cut it off when its
        // drain deadline passed (`timeout`: SPEC §5 has no other outcome for it).
        if self.done {
            return;
        }
        if crate::worker::stopping() {
            return self.finish("timeout");
        }
        if self.tally.fault().is_none() && self.tally.uploading.load(Ordering::Acquire) {
            let tally = self.tally.clone();
            if tally.wait_for_upload(self.take()) {
                return;
            }
        }
        self.finish(self.tally.cut_short());
    }
}

/// `Completion::handed_at` of a parked completion: its last bytes are not yet flushed.
const PARKED: u64 = u64::MAX;

/// How far one client connection's output has got: the flushes that put everything hyper had
/// written into the socket, and the completions of responses whose last byte is written but not
/// yet flushed. The connection's IO wrapper reports each flush ([`Delivery::flushed`]) and its
/// end ([`Delivery::closed`]). One per connection; per request it costs an atomic load per
/// frame and, for a response that ends before its flush, a lock to park it.
#[derive(Default)]
pub struct Delivery {
    flushes: AtomicU64,
    /// How many completions are parked: the flush path looks at the lock only when some are.
    parked_count: AtomicUsize,
    parked: Mutex<Vec<Completion>>,
}

impl Delivery {
    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    fn park(&self, mut c: Completion) {
        // Parked, it waits for a flush and knows it has not had one; it holds no `Arc` of the
        // connection's `Delivery`, so that dropping the connection drops it (and records it).
        c.delivery = None;
        c.handed_at = PARKED;
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        parked.push(c);
        self.parked_count.store(parked.len(), Ordering::Release);
    }

    /// The connection flushed: everything written before is in the socket, so every parked
    /// response has reached its client.
    pub fn flushed(&self) {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        if self.parked_count.load(Ordering::Acquire) == 0 {
            return;
        }
        // Finished under the lock, which only this connection's task takes (a parked completion
        // has no `Delivery` to come back to): the list keeps its capacity, nothing allocates.
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        self.parked_count.store(0, Ordering::Release);
        for mut c in parked.drain(..) {
            c.finish(c.outcome);
        }
    }

    /// The connection is over: a response still parked did not reach its client whole.
    pub fn closed(&self) {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        self.parked_count.store(0, Ordering::Release);
        // Dropped: each records `client_aborted` (or `timeout` in a drain cut-off) with what
        // was flushed.
        parked.clear();
    }
}

pin_project_lite::pin_project! {
    /// The response body on its way to the client: counts bytes and completes the record.
    pub struct Completing<B> {
        #[pin]
        inner: B,
        completion: Completion,
    }
}

impl<B: Body> Completing<B> {
    pub fn new(inner: B, mut completion: Completion) -> Self {
        // hyper need not poll a body that is over before it starts (HEAD, 204, 304).
        if inner.is_end_stream() {
            completion.ended();
        }
        Completing { inner, completion }
    }
}

impl<B> Body for Completing<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.completion.handed(d.len() as u64);
                }
                // The last frame of a sized body: hyper may drop the body without polling
                // for the end, and that is a normal end, not an abort.
                if this.inner.is_end_stream() {
                    this.completion.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // An upstream that fails because the client's upload failed (or idled out)
                // mid-answer: the client's doing.
                let outcome = this
                    .completion
                    .tally
                    .fault()
                    .map_or("upstream_error", ClientFault::outcome);
                this.completion.finish(outcome);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.completion.ended();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    type Seen = Arc<Mutex<Option<(String, u64)>>>;

    /// A completion on `delivery` whose end (outcome, bytes_out) lands in the answer.
    fn completion(log: &AuditLog, delivery: &Arc<Delivery>) -> (Completion, Seen) {
        let mut c = Completion::new(log.clone(), "r".into(), Instant::now(), Arc::default());
        c.deliver_on(Some(delivery.clone()));
        c.unrecorded();
        let seen: Seen = Arc::default();
        let s = seen.clone();
        c.on_complete(move |r| *s.lock().unwrap() = Some((r.outcome.to_string(), r.bytes_out)));
        (c, seen)
    }

    #[tokio::test]
    async fn a_response_completes_when_its_last_byte_is_flushed_and_counts_only_what_was() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&crate::config::Audit::in_dir(dir.path().join("audit"))).unwrap();
        let delivery = Arc::new(Delivery::default());

        // Its one frame is handed over: not complete until the connection flushes.
        let (c, seen) = completion(&log, &delivery);
        let mut body = Completing::new(Full::new(Bytes::from_static(b"hello")), c);
        assert!(body.frame().await.is_some());
        drop(body);
        assert_eq!(*seen.lock().unwrap(), None, "complete before its flush");
        delivery.flushed();
        assert_eq!(*seen.lock().unwrap(), Some(("ok".into(), 5)));

        // Two frames, a flush after the first only, then the connection ends: client_aborted,
        // with the first frame's bytes.
        let (c, seen) = completion(&log, &delivery);
        let frames =
            [b"hello", b"world"].map(|b| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b))));
        let mut body = Completing::new(StreamBody::new(futures_util::stream::iter(frames)), c);
        assert!(body.frame().await.is_some());
        delivery.flushed();
        assert!(body.frame().await.is_some());
        assert!(body.frame().await.is_none());
        drop(body);
        assert_eq!(*seen.lock().unwrap(), None, "complete before its flush");
        delivery.closed();
        assert_eq!(*seen.lock().unwrap(), Some(("client_aborted".into(), 5)));
    }
}
