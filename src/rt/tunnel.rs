//! Copying bytes both ways between two connections until either side ends: WebSocket tunnels and the SNI
//! passthrough.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::clock::now_ms;

/// Copy bytes both ways; when either direction ends (EOF or error) both connections are closed, as PlanB does
/// (so a client that keeps a half-closed socket cannot hold a tunnel). With `idle`, a tunnel in which neither
/// side sent anything for that long is closed too.
pub async fn tunnel<A, B>(a: A, b: B, idle: Option<Duration>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let (mut a_read, mut a_write) = tokio::io::split(Activity {
        inner: a,
        last: last.clone(),
    });
    let (mut b_read, mut b_write) = tokio::io::split(Activity {
        inner: b,
        last: last.clone(),
    });
    let a_to_b = async {
        let _ = tokio::io::copy(&mut a_read, &mut b_write).await;
        let _ = b_write.shutdown().await;
    };
    let b_to_a = async {
        let _ = tokio::io::copy(&mut b_read, &mut a_write).await;
        let _ = a_write.shutdown().await;
    };
    let idle_watch = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let idle_ms = idle.as_millis() as u64;
        loop {
            let deadline = last.load(Ordering::Relaxed) + idle_ms;
            let now = now_ms();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline - now)).await;
        }
    };
    // Whichever ends first ends the tunnel; dropping the halves closes both connections.
    tokio::select! {
        _ = a_to_b => {}
        _ = b_to_a => {}
        _ = idle_watch => {}
    }
}

/// A stream that notes when it last read anything.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
