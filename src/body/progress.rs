//! The progress of a connection's HTTP/2 response bodies, for the connection to see a client
//! that stopped reading (`listener.body_idle_timeout`).

use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
