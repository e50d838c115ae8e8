//! Body wrappers of the pipeline: request bytes counted on their way up (and cut off when the
//! client stops sending), the response body that cannot forget its `complete` audit record (end,
//! error and drop each fire it once), the connection's [`Delivery`] that holds that record back
//! until the response's last byte has been flushed to the socket, and the progress of HTTP/2
//! response bodies for the connection to see a client that stopped reading
//! (`listener.body_idle_timeout`).

use crate::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

mod complete;
mod progress;

pub use complete::{Completing, Completion, Delivery};
pub use progress::{Progress, Watched};

/// What the request body did, shared between its wrapper and the completion.
#[derive(Default)]
pub struct Tally {
    pub bytes_in: AtomicU64,
    /// How the client's upload failed part-way, if it did: a [`ClientFault`] as `u8`, 0 for none.
    fault: AtomicU8,
    /// A request body is streaming upstream ([`Counted`] made for it and not yet dropped).
    uploading: AtomicBool,
    /// A response dropped while its upload was still streaming: HTTP/2 resets the stream of an
    /// upload that broke its framing, and whether the response or the upload hears of it first
    /// is up to the scheduler, so the upload's end writes the record (with its fault).
    waiting: Mutex<Option<Completion>>,
}

/// Why a client's upload ended before its end, as the `complete` record's outcome names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// It went away (the connection closed, the HTTP/2 stream was reset).
    Aborted = 1,
    /// Its body broke its own framing: a bad chunk, or HTTP/2 DATA that disagrees with its
    /// `content-length`.
    BadBody = 2,
    /// It sent nothing for `listener.body_idle_timeout`.
    Idle = 3,
}

impl ClientFault {
    /// The `complete` record's outcome.
    pub fn outcome(self) -> &'static str {
        match self {
            ClientFault::Aborted => "client_aborted",
            ClientFault::BadBody => "client_error",
            ClientFault::Idle => "client_timeout",
        }
    }

    /// What a request body error says about the client. hyper reports a chunk it cannot parse
    /// as an `InvalidInput`/`InvalidData` I/O error, and h2 a body that disagrees with its
    /// `content-length` as a stream reset it made itself with `PROTOCOL_ERROR`; anything else
    /// (end of stream, a reset by the client) is the client going away.
    fn of(e: &(dyn std::error::Error + 'static)) -> ClientFault {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                ) {
                    return ClientFault::BadBody;
                }
            }
            if let Some(h2) = c.downcast_ref::<h2::Error>() {
                if h2.is_library() && h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                    return ClientFault::BadBody;
                }
            }
            cause = c.source();
        }
        ClientFault::Aborted
    }
}

impl Tally {
    /// How the upload failed, if it did.
    pub fn fault(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Aborted),
            2 => Some(ClientFault::BadBody),
            3 => Some(ClientFault::Idle),
            _ => None,
        }
    }

    fn set_fault(&self, f: ClientFault) {
        self.fault.store(f as u8, Ordering::Relaxed);
    }

    /// The outcome of a response cut short by the client: its upload's fault, if it had one.
    fn cut_short(&self) -> &'static str {
        self.fault().map_or("client_aborted", ClientFault::outcome)
    }

    /// Keeps `c` for the upload's end; false (and `c` is dropped, recording) when it is over.
    fn wait_for_upload(&self, c: Completion) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.uploading.load(Ordering::Acquire) {
            return false;
        }
        *waiting = Some(c);
        true
    }

    /// The upload is over: a completion that waited for it is recorded now.
    fn upload_over(&self) {
        self.uploading.store(false, Ordering::Release);
        let c = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut c) = c {
            c.finish(self.cut_short());
        }
    }
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

    impl<B> PinnedDrop for Counted<B> {
        fn drop(this: Pin<&mut Self>) {
            this.tally.upload_over();
        }
    }
}

impl<B> Counted<B> {
    /// `idle`: `listener.body_idle_timeout`, for a body still coming from the client.
    pub fn new(inner: B, tally: Arc<Tally>, idle: Option<Duration>) -> Self {
        tally.uploading.store(true, Ordering::Release);
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
                let e: BoxError = e.into();
                this.tally.set_fault(ClientFault::of(&*e));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                if !this.idle.as_mut().is_some_and(|idle| idle.expired(cx)) {
                    return Poll::Pending;
                }
                // The client let its upload die: 408, and the record says `client_timeout`.
                this.tally.set_fault(ClientFault::Idle);
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
