//! The connection's flushes, told to its [`Delivery`]: a flush that returns has put every byte
//! hyper wrote before it through rustls into the kernel's socket, so the responses that ended
//! before it have reached their client (as far as a server can know), and their `complete`
//! records are written then, not when hyper took their last frame.

use crate::body::Delivery;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// An IO that reports each successful flush (and shutdown, which flushes) to a [`Delivery`],
    /// and its own end. One atomic add per flush; reads and writes pass straight through.
    pub struct Flushed<IO> {
        #[pin]
        inner: IO,
        delivery: Arc<Delivery>,
    }

    impl<IO> PinnedDrop for Flushed<IO> {
        fn drop(this: Pin<&mut Self>) {
            // The connection is gone: whatever is still waiting for a flush never got one.
            this.delivery.closed();
        }
    }
}

impl<IO> Flushed<IO> {
    pub fn new(inner: IO, delivery: Arc<Delivery>) -> Self {
        Flushed { inner, delivery }
    }
}

impl<IO: AsyncRead> AsyncRead for Flushed<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Flushed<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_flush(cx);
        if let Poll::Ready(Ok(())) = res {
            this.delivery.flushed();
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = res {
            this.delivery.flushed();
        }
        res
    }
}
