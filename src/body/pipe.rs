//! A request body handed over by the connection that reads it, one frame at a time: the proxy's own HTTP/1
//! server decodes the client's body from its socket and gives each frame to the request's [`Piped`] body
//! through a [`Feed`], in the same task that runs the request.
//!
//! One frame waits at most: the server reads the next only once the body has taken the last, so a backend
//! that reads slowly slows the client down (hyper's server keeps the same bound with its body channel).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::ClientBodyError;

/// A body fed by its connection, in a request handed to the proxy.
pub struct Piped {
    shared: Arc<Mutex<Slot>>,
    /// Bytes still to come, when the request said (Content-Length): the size hint guards and mirrors read.
    remaining: Option<u64>,
}

/// The connection's side of a [`Piped`] body.
pub struct Feed {
    shared: Arc<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    /// The frame the body has not taken yet.
    frame: Option<Frame<Bytes>>,
    end: End,
    /// Who waits for a frame (the request) and who waits for room (the connection).
    reader: Option<Waker>,
    feeder: Option<Waker>,
    /// The body was dropped: nobody takes another frame.
    dropped: bool,
    /// The body has been asked for a frame (a client that sent `Expect: 100-continue` is told to send it then).
    wanted: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum End {
    #[default]
    Open,
    Done,
    /// The body's framing was malformed or the client went away; the text says which.
    Failed(&'static str),
    /// The failure was handed to the body; it ends after it.
    Reported,
}

/// A body of `length` bytes (`None`: chunked), and the connection's side that feeds it.
pub fn pipe(length: Option<u64>) -> (Piped, Feed) {
    let shared = Arc::new(Mutex::new(Slot::default()));
    let feed = Feed {
        shared: shared.clone(),
    };
    (
        Piped {
            shared,
            remaining: length,
        },
        feed,
    )
}

fn lock(shared: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keep `waker` in `slot` (without cloning it again when it is the same task's).
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) if kept.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

impl Feed {
    /// `Ready(true)` when the body can take a frame, `Ready(false)` once it was dropped (nothing more is
    /// wanted); `Pending` while the last frame still waits, with the task woken when it is taken.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut slot = lock(&self.shared);
        if slot.dropped {
            return Poll::Ready(false);
        }
        if slot.frame.is_none() {
            return Poll::Ready(true);
        }
        register(&mut slot.feeder, cx.waker());
        Poll::Pending
    }

    /// `Ready(true)` once the body has been asked for a frame, `Ready(false)` once it was dropped without
    /// that; `Pending` until then, with the task woken when it happens.
    pub fn poll_wanted(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut slot = lock(&self.shared);
        if slot.wanted {
            return Poll::Ready(true);
        }
        if slot.dropped {
            return Poll::Ready(false);
        }
        register(&mut slot.feeder, cx.waker());
        Poll::Pending
    }

    /// The body was dropped before its end: what is left of it is not wanted.
    pub fn abandoned(&self) -> bool {
        lock(&self.shared).dropped
    }

    /// Hand over the next frame (after [`Feed::poll_room`] said there is room).
    pub fn send(&self, frame: Frame<Bytes>) {
        self.wake_with(|slot| slot.frame = Some(frame));
    }

    /// The body ended as its framing says.
    pub fn finish(&self) {
        self.wake_with(|slot| slot.end = End::Done);
    }

    /// The body cannot end: malformed framing, or the client went away (`why` says which).
    pub fn fail(&self, why: &'static str) {
        self.wake_with(|slot| {
            if slot.end == End::Open {
                slot.end = End::Failed(why);
            }
        });
    }

    fn wake_with(&self, change: impl FnOnce(&mut Slot)) {
        let reader = {
            let mut slot = lock(&self.shared);
            change(&mut slot);
            slot.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The connection stopped reading (it closed, timed out or failed) before the body ended.
        self.fail("connection closed before the body ended");
    }
}

impl Body for Piped {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let (polled, feeder) = {
            let mut slot = lock(&this.shared);
            slot.wanted = true;
            let polled = match (slot.frame.take(), slot.end) {
                (Some(frame), _) => Poll::Ready(Some(Ok(frame))),
                (None, End::Open) => {
                    register(&mut slot.reader, cx.waker());
                    Poll::Pending
                }
                (None, End::Done | End::Reported) => Poll::Ready(None),
                (None, End::Failed(why)) => {
                    slot.end = End::Reported;
                    Poll::Ready(Some(Err(ClientBodyError::Framing(why))))
                }
            };
            (polled, slot.feeder.take())
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(remaining)) = (&polled, &mut this.remaining) {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            *remaining = remaining.saturating_sub(len);
        }
        if let Some(feeder) = feeder {
            feeder.wake();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.shared);
        slot.frame.is_none() && matches!(slot.end, End::Done | End::Reported)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let feeder = {
            let mut slot = lock(&self.shared);
            slot.dropped = true;
            slot.frame = None;
            slot.feeder.take()
        };
        if let Some(feeder) = feeder {
            feeder.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_arrive_in_order_one_at_a_time_and_the_end_is_said() {
        let (mut body, feed) = pipe(Some(5));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(feed.poll_room(&mut cx), Poll::Ready(true));
        feed.send(Frame::data(Bytes::from_static(b"hel")));
        // The frame waits: no room for another until it is taken.
        assert_eq!(feed.poll_room(&mut cx), Poll::Pending);
        assert_eq!(body.size_hint().exact(), Some(5));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"hel");
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(feed.poll_room(&mut cx), Poll::Ready(true));
        feed.send(Frame::data(Bytes::from_static(b"lo")));
        feed.finish();
        assert!(!body.is_end_stream());
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&second[..], b"lo");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        drop(body);
        assert_eq!(feed.poll_room(&mut cx), Poll::Ready(false));
        assert!(feed.abandoned());
    }

    #[tokio::test]
    async fn the_feed_learns_when_the_body_is_first_asked_for() {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut body, feed) = pipe(Some(2));
        assert_eq!(feed.poll_wanted(&mut cx), Poll::Pending);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(feed.poll_wanted(&mut cx), Poll::Ready(true));
        let (body, feed) = pipe(Some(2));
        drop(body);
        assert_eq!(feed.poll_wanted(&mut cx), Poll::Ready(false));
    }

    #[tokio::test]
    async fn a_failure_is_reported_once_and_a_dropped_feed_is_one() {
        let (mut body, feed) = pipe(None);
        feed.fail("invalid chunk size line");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "client body: invalid chunk size line");
        assert!(body.frame().await.is_none());

        let (mut body, feed) = pipe(Some(10));
        drop(feed);
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("connection closed"), "{err}");
    }
}
