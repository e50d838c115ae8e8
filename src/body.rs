//! Body wrappers of the pipeline: request bytes counted on their way up (and cut off when the
//! client stops sending), the response body that cannot forget its `complete` audit record (end,
//! error and drop each fire it once), and the progress of HTTP/2 response bodies for the
//! connection to see a client that stopped reading (`listener.body_idle_timeout`).

use crate::audit::record::{Complete, Event};
use crate::audit::AuditLog;
use crate::limit::Grant;
use crate::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What the request body did, shared between its wrapper and the completion.
#[derive(Debug, Default)]
pub struct Tally {
    pub bytes_in: AtomicU64,
    /// The client's upload failed part-way (it went away, or sent a malformed body).
    pub client_error: AtomicBool,
}

pin_project_lite::pin_project! {
    /// The client's request body, counted, and failed (which aborts the upstream request) when
    /// the client sends nothing for `listener.body_idle_timeout` while the upstream waits for it.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        tally: Arc<Tally>,
        idle: Option<IdleDeadline>,
    }
}

impl<B> Counted<B> {
    /// `idle`: `listener.body_idle_timeout`, for a body still coming from the client.
    pub fn new(inner: B, tally: Arc<Tally>, idle: Option<Duration>) -> Self {
        Counted {
            inner,
            tally,
            idle: idle.map(IdleDeadline::new),
        }
    }
}

/// How long the body has been waited for without a frame, and the timer that ends the wait.
/// The timer is made on the first wait and moved only when it fires early (a wait that began
/// after it was set): nothing per frame but a clock read when a wait begins.
struct IdleDeadline {
    idle: Duration,
    waiting_since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleDeadline {
    fn new(idle: Duration) -> IdleDeadline {
        IdleDeadline {
            idle,
            waiting_since: None,
            timer: None,
        }
    }

    /// A frame arrived: the wait is over.
    fn progress(&mut self) {
        self.waiting_since = None;
    }

    /// The body is pending: true once it has been for the whole idle timeout (else the timer
    /// will wake the task by then).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let now = tokio::time::Instant::now();
        let due = *self.waiting_since.get_or_insert(now) + self.idle;
        if now >= due {
            return true;
        }
        // Set for an earlier wait, the timer fires early: then it is moved to this wait's end.
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.as_mut().poll(cx).is_ready() {
            timer.as_mut().reset(due);
            let _ = timer.as_mut().poll(cx);
        }
        false
    }
}

/// The error a request body ends with when its client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body bytes within listener.body_idle_timeout")]
pub struct BodyIdle;

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
                if let Some(idle) = this.idle {
                    idle.progress();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.tally.client_error.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                if !this.idle.as_mut().is_some_and(|idle| idle.expired(cx)) {
                    return Poll::Pending;
                }
                // The record says `client_aborted`: the client let its upload die.
                this.tally.client_error.store(true, Ordering::Relaxed);
                *this.idle = None;
                Poll::Ready(Some(Err(BodyIdle.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
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
                // An upstream that fails because the client's upload failed (or idled out)
                // mid-answer: the client's doing.
                let client = this.completion.tally.client_error.load(Ordering::Relaxed);
                this.completion
                    .finish(if client { "client_aborted" } else { "upstream_error" });
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

/// How the HTTP/2 response bodies of one connection are getting on, for the connection to cut
/// a client that stopped reading: HTTP/2 flow control then stops hyper polling the body without
/// the socket ever blocking, so nothing in the body itself can notice. A body that handed a
/// frame over and has not been asked for the next is *waiting on the client*; the connection
/// checks, once per half `body_idle_timeout`, whether any is and no frame at all went out for
/// the whole timeout. Coarse on purpose: one clock read and two atomic adds per frame; a
/// stalled stream beside a busy one on the same connection is only seen once the busy one stops.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// Milliseconds since `epoch` of the latest frame handed over.
    last: AtomicU64,
    /// Bodies that handed a frame over and were not polled since.
    waiting: AtomicUsize,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Progress {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// True when a body waits on the client and no frame went out for `idle`.
    pub fn stalled(&self, idle: Duration) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
            && self.now_ms().saturating_sub(self.last.load(Ordering::Relaxed)) >= idle.as_millis() as u64
    }
}

pin_project_lite::pin_project! {
    /// A response body whose progress the connection watches (HTTP/2); with no [`Progress`]
    /// (HTTP/1, where a client that stops reading blocks the socket) it only passes through.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        progress: Option<Arc<Progress>>,
        handed: bool,
    }

    impl<B> PinnedDrop for Watched<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (true, Some(p)) = (*this.handed, this.progress.as_ref()) {
                p.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, progress: Option<Arc<Progress>>) -> Self {
        Watched {
            inner,
            progress,
            handed: false,
        }
    }
}

impl<B: Body> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(p) = this.progress.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        if std::mem::take(this.handed) {
            p.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            p.last.store(p.now_ms(), Ordering::Relaxed);
            p.waiting.fetch_add(1, Ordering::Relaxed);
            *this.handed = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
