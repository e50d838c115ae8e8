//! Body wrappers of the pipeline: request bytes counted on their way up, and the response body
//! that cannot forget its `complete` audit record (end, error and drop each fire it once).

use crate::audit::record::{Complete, Event};
use crate::audit::AuditLog;
use crate::limit::Grant;
use crate::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the request body did, shared between its wrapper and the completion.
#[derive(Debug, Default)]
pub struct Tally {
    pub bytes_in: AtomicU64,
    /// The client's upload failed part-way (it went away, or sent a malformed body).
    pub client_error: AtomicBool,
}

pin_project_lite::pin_project! {
    /// The client's request body, counted.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        tally: Arc<Tally>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, tally: Arc<Tally>) -> Self {
        Counted { inner, tally }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.tally.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.tally.client_error.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A hook that sees the finished record (metrics).
type OnComplete = Box<dyn FnOnce(&Complete) + Send>;

/// Writes the `complete` record exactly once. Dropped without `finish`, it records a client
/// abort: the only way a response stops without anyone saying so.
pub struct Completion {
    audit: AuditLog,
    request_id: Arc<str>,
    started: Instant,
    tally: Arc<Tally>,
    status: u16,
    bytes_out: u64,
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
            done: false,
            recorded: true,
            _grant: None,
            on_complete: None,
        }
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn add_bytes_out(&mut self, n: u64) {
        self.bytes_out += n;
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

    pub fn finish(&mut self, outcome: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        let record = Complete {
            request_id: std::mem::take(&mut self.request_id),
            status: self.status,
            bytes_in: self.tally.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
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
        // Dropped unfinished: the client went away, or the gateway cut it off when its drain
        // deadline passed (`timeout`: SPEC §5 has no other outcome for it).
        self.finish(if crate::worker::stopping() {
            "timeout"
        } else {
            "client_aborted"
        });
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
            completion.finish("ok");
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
                    this.completion.bytes_out += d.len() as u64;
                }
                // The last frame of a sized body: hyper may drop the body without polling
                // for the end, and that is a normal end, not an abort.
                if this.inner.is_end_stream() {
                    this.completion.finish("ok");
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.completion.finish("upstream_error");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.completion.finish("ok");
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
