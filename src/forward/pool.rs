//! Idle upstream connections, kept by each worker thread for each origin, and the response
//! body that gives its connection back once it has been read to the end.
//!
//! The pool is ours rather than hyper-util's general client: a worker's connections are only
//! ever used by that worker, so its pool needs no waiters, no background tasks and no
//! connection racing, only a stack of idle senders. One the upstream closed while idle is
//! found out by hyper, which hands the unsent request back to try the next.

use super::UpBody;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An idle connection older than this is closed rather than used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections a worker keeps to one origin.
const MAX_IDLE: usize = 1024;

/// Idle connections to one origin, most recently used last.
#[derive(Default)]
pub(super) struct Idle(Mutex<Vec<(SendRequest<UpBody>, Instant)>>);

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SendRequest<UpBody>, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open, once it is ready (at once,
    /// unless the end of its last response is still on its way through its task).
    pub(super) async fn take(&self) -> Option<SendRequest<UpBody>> {
        loop {
            let mut sender = {
                let mut idle = self.lock();
                let now = Instant::now();
                loop {
                    let (sender, since) = idle.pop()?;
                    if !sender.is_closed() && now.duration_since(since) < IDLE_TIMEOUT {
                        break sender;
                    }
                }
            };
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender` for the next request, dropping connections idle too long.
    pub(super) fn put(&self, sender: SendRequest<UpBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        if idle
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
        }
        if idle.len() < MAX_IDLE {
            idle.push((sender, now));
        }
    }
}

/// Where a response's connection goes back to.
struct Home {
    sender: SendRequest<UpBody>,
    pool: Arc<Idle>,
}

/// A response body from an upstream. Read to its end, it gives its connection back to the
/// pool; dropped before, the connection closes with it (HTTP/1 cannot skip the rest).
pub struct UpstreamBody {
    body: Incoming,
    home: Option<Home>,
}

impl UpstreamBody {
    /// `body`, read on `sender`'s connection, which goes back to `pool` at its end.
    pub(super) fn new(body: Incoming, sender: SendRequest<UpBody>, pool: Arc<Idle>) -> UpstreamBody {
        UpstreamBody {
            body,
            home: Some(Home { sender, pool }),
        }
    }

    fn give_back(&mut self) {
        if let Some(home) = self.home.take() {
            home.pool.put(home.sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}
