//! The writer of one WebSocket connection. Every frame for the connection (a reply, a push, a
//! close) goes through its queue; the writer alone writes to the socket, and tells each frame's
//! sender whether the socket took it:
//!
//! - Frames already waiting in the queue go out together, in one flush (a flush is forced once
//!   [`MAX_ACKS_PER_FLUSH`] acknowledged frames wait for it).
//! - A frame's `ack` is answered after the flush: `true` if the frame was fed and flushed.
//! - A close frame flushes the frames before it, answers them, then sends a WebSocket Close.
//! - The writer stops after a close, after a failed write or flush, or when every sender is
//!   gone. Frames still queued then are answered `false`, so their senders keep them (a push
//!   reports the connection gone and the message stays in the inbox). It says whether the socket
//!   failed ([`Ended`]): the connection is then over, whoever still reads from it.

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt};
use tokio::sync::{mpsc, oneshot};

use crate::sockets::{Charge, Outgoing};

/// A flush is forced once this many acknowledged frames wait for it (frames without an ack,
/// such as replies, do not count).
pub const MAX_ACKS_PER_FLUSH: usize = 64;

/// Writes a connection's queue to its socket: `SocketWriter::new(sink, queue).run()`.
pub struct SocketWriter<S> {
    sink: S,
    queue: mpsc::UnboundedReceiver<Outgoing>,
    /// Acks of the frames fed since the last flush.
    unflushed: Vec<oneshot::Sender<bool>>,
    /// The queue-bound charges of the frames fed since the last flush: a frame fed to a socket
    /// that takes nothing waits in the socket's buffer, so it counts until it is flushed.
    charges: Vec<Charge>,
}

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// After a close, or with the queue (every sender gone).
    Done,
    /// A write or a flush failed, e.g. past the socket's write buffer bound.
    Failed,
}

/// How a batch ended.
enum Batch {
    /// Fed and flushed: the writer goes on.
    Written,
    /// A write or the flush failed: the socket is done.
    Failed,
    /// A close frame came (with this close code); the frames before it are fed but not flushed
    /// yet.
    Close(Option<u16>),
}

impl<S: Sink<Message> + Unpin> SocketWriter<S> {
    pub fn new(sink: S, queue: mpsc::UnboundedReceiver<Outgoing>) -> Self {
        Self {
            sink,
            queue,
            unflushed: Vec::new(),
            charges: Vec::new(),
        }
    }

    /// Writes batch after batch until a close, a failure, or the end of the queue; then answers
    /// what is left as not written.
    pub async fn run(mut self) -> Ended {
        let mut ended = Ended::Done;
        while let Some(first) = self.queue.recv().await {
            match self.write_batch(first).await {
                Batch::Written => {}
                Batch::Failed => {
                    ended = Ended::Failed;
                    break;
                }
                Batch::Close(code) => {
                    self.close(code).await;
                    break;
                }
            }
        }
        self.fail_pending().await;
        ended
    }

    /// Feeds `first` and the frames already queued behind it, then flushes them once and answers
    /// their acks with the outcome. Stops feeding at a close frame (left to [`Self::close`]), at
    /// a failed write (nothing is flushed: every ack of the batch gets `false`), or once
    /// [`MAX_ACKS_PER_FLUSH`] acks wait.
    async fn write_batch(&mut self, first: Outgoing) -> Batch {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            if out.close {
                return Batch::Close(out.close_code);
            }
            let Outgoing {
                frame, ack, charge, ..
            } = out;
            self.charges.extend(charge);
            let fed = self.sink.feed(Message::Text(frame.into())).await.is_ok();
            self.unflushed.extend(ack);
            if !fed {
                self.answer(false);
                return Batch::Failed;
            }
            if self.unflushed.len() >= MAX_ACKS_PER_FLUSH {
                break;
            }
            next = self.queue.try_recv().ok();
        }
        let flushed = self.sink.flush().await.is_ok();
        self.answer(flushed);
        if flushed {
            Batch::Written
        } else {
            Batch::Failed
        }
    }

    /// Flushes the frames fed before the close frame, answers them, and sends a Close.
    async fn close(&mut self, code: Option<u16>) {
        let flushed = self.sink.flush().await.is_ok();
        self.answer(flushed);
        let frame = code.map(|code| CloseFrame {
            code,
            reason: "".into(),
        });
        let _ = self.sink.send(Message::Close(frame)).await;
    }

    /// Closes the queue (later sends fail) and answers every frame still in it as not written.
    async fn fail_pending(&mut self) {
        self.answer(false);
        self.queue.close();
        while let Some(out) = self.queue.recv().await {
            if let Some(ack) = out.ack {
                let _ = ack.send(false);
            }
        }
    }

    /// Answers the acks of the frames fed since the last flush.
    fn answer(&mut self, written: bool) {
        self.charges.clear();
        for ack in self.unflushed.drain(..) {
            let _ = ack.send(written);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use super::*;

    /// What the socket saw, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Frame(String),
        Close,
        Flush,
    }

    #[derive(Default)]
    struct Wire {
        events: Vec<Event>,
        /// The text frame (counted from 0) whose write fails.
        fail_frame: Option<usize>,
        frames: usize,
        fail_flush: bool,
        /// While set, a flush waits (its waker is kept here).
        hold_flush: bool,
        flush_waiting: Option<Waker>,
    }

    /// A socket whose writes and flushes the test controls and records.
    #[derive(Clone, Default)]
    struct TestSink(Arc<Mutex<Wire>>);

    impl TestSink {
        fn wire(&self) -> std::sync::MutexGuard<'_, Wire> {
            self.0.lock().unwrap()
        }

        fn events(&self) -> Vec<Event> {
            self.wire().events.clone()
        }
    }

    impl Sink<Message> for TestSink {
        type Error = ();

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
            let mut wire = self.wire();
            match item {
                Message::Text(text) => {
                    let n = wire.frames;
                    wire.frames += 1;
                    if wire.fail_frame == Some(n) {
                        return Err(());
                    }
                    wire.events.push(Event::Frame(text.as_str().to_string()));
                }
                Message::Close(_) => wire.events.push(Event::Close),
                other => panic!("unexpected message {other:?}"),
            }
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
            let mut wire = self.wire();
            if wire.hold_flush {
                wire.flush_waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            wire.events.push(Event::Flush);
            Poll::Ready(if wire.fail_flush { Err(()) } else { Ok(()) })
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(text: &str) -> (Outgoing, oneshot::Receiver<bool>) {
        let (ack, written) = oneshot::channel();
        let out = Outgoing {
            frame: text.to_string(),
            ack: Some(ack),
            ..Outgoing::default()
        };
        (out, written)
    }

    fn close_frame() -> Outgoing {
        Outgoing::close(None)
    }

    fn text(t: &str) -> Event {
        Event::Frame(t.to_string())
    }

    /// Queues frames `texts`, returning their acks.
    fn queue(tx: &mpsc::UnboundedSender<Outgoing>, texts: &[&str]) -> Vec<oneshot::Receiver<bool>> {
        texts
            .iter()
            .map(|t| {
                let (out, written) = frame(t);
                tx.send(out).unwrap();
                written
            })
            .collect()
    }

    async fn answers(acks: Vec<oneshot::Receiver<bool>>) -> Vec<Result<bool, ()>> {
        let mut out = Vec::new();
        for ack in acks {
            out.push(ack.await.map_err(|_| ()));
        }
        out
    }

    /// Runs the writer to its end: it must stop by itself, even while a sender is alive.
    async fn run(sink: &TestSink, rx: mpsc::UnboundedReceiver<Outgoing>) -> Ended {
        tokio::time::timeout(
            Duration::from_secs(5),
            SocketWriter::new(sink.clone(), rx).run(),
        )
        .await
        .expect("the writer stops")
    }

    #[tokio::test]
    async fn frames_already_waiting_go_out_in_one_flush() {
        let sink = TestSink::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let acks = queue(&tx, &["a", "b", "c"]);
        drop(tx);
        run(&sink, rx).await;
        assert_eq!(
            sink.events(),
            [text("a"), text("b"), text("c"), Event::Flush]
        );
        assert_eq!(answers(acks).await, [Ok(true); 3]);
    }

    #[tokio::test]
    async fn a_flush_is_forced_after_64_acknowledged_frames() {
        let sink = TestSink::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let texts: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let acks = queue(&tx, &texts.iter().map(String::as_str).collect::<Vec<_>>());
        drop(tx);
        run(&sink, rx).await;
        let events = sink.events();
        let flushes: Vec<usize> = (0..events.len())
            .filter(|&i| events[i] == Event::Flush)
            .collect();
        assert_eq!(flushes, [MAX_ACKS_PER_FLUSH, 101]);
        assert_eq!(answers(acks).await, [Ok(true); 100]);
    }

    #[tokio::test]
    async fn an_ack_is_answered_only_after_the_flush() {
        let sink = TestSink::default();
        sink.wire().hold_flush = true;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(SocketWriter::new(sink.clone(), rx).run());
        let mut acks = queue(&tx, &["a"]);
        for _ in 0..1000 {
            if sink.wire().flush_waiting.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(sink.wire().flush_waiting.is_some(), "no flush began");
        assert_eq!(sink.events(), [text("a")]);
        assert!(acks[0].try_recv().is_err(), "answered before the flush");
        let waker = {
            let mut wire = sink.wire();
            wire.hold_flush = false;
            wire.flush_waiting.take().unwrap()
        };
        waker.wake();
        assert_eq!(answers(acks).await, [Ok(true)]);
        drop(tx);
        writer.await.unwrap();
        assert_eq!(sink.events(), [text("a"), Event::Flush]);
    }

    #[tokio::test]
    async fn a_frame_counts_against_the_queue_bound_until_flushed() {
        let sink = TestSink::default();
        sink.wire().hold_flush = true;
        let (queue, rx) = crate::sockets::Queue::new(1_000_000);
        let writer = tokio::spawn(SocketWriter::new(sink.clone(), rx).run());
        let reply = Outgoing {
            frame: "abc".into(),
            ..Outgoing::default()
        };
        assert!(queue.send(reply));
        for _ in 0..1000 {
            if sink.wire().flush_waiting.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(sink.wire().flush_waiting.is_some(), "no flush began");
        assert_eq!(queue.queued_bytes(), 3, "fed, not flushed: still counted");
        let waker = {
            let mut wire = sink.wire();
            wire.hold_flush = false;
            wire.flush_waiting.take().unwrap()
        };
        waker.wake();
        for _ in 0..1000 {
            if queue.queued_bytes() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(queue.queued_bytes(), 0, "flushed: no longer counted");
        drop(queue);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_answers_the_batch_and_every_queued_frame_false() {
        let sink = TestSink::default();
        sink.wire().fail_frame = Some(1);
        let (tx, rx) = mpsc::unbounded_channel();
        // "a" is fed, "b" fails: nothing is flushed, and "c" is never written.
        let acks = queue(&tx, &["a", "b", "c"]);
        assert_eq!(run(&sink, rx).await, Ended::Failed);
        assert_eq!(sink.events(), [text("a")]);
        assert_eq!(answers(acks).await, [Ok(false); 3]);
    }

    #[tokio::test]
    async fn a_failed_flush_answers_the_batch_false_and_stops() {
        let sink = TestSink::default();
        sink.wire().fail_flush = true;
        let (tx, rx) = mpsc::unbounded_channel();
        let acks = queue(&tx, &["a", "b"]);
        assert_eq!(run(&sink, rx).await, Ended::Failed);
        assert_eq!(sink.events(), [text("a"), text("b"), Event::Flush]);
        assert_eq!(answers(acks).await, [Ok(false); 2]);
    }

    #[tokio::test]
    async fn a_close_flushes_what_came_before_then_sends_close() {
        let sink = TestSink::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let before = queue(&tx, &["a", "b"]);
        tx.send(close_frame()).unwrap();
        let after = queue(&tx, &["c"]);
        assert_eq!(run(&sink, rx).await, Ended::Done);
        assert_eq!(
            sink.events(),
            // The last flush is the Close frame's own.
            [
                text("a"),
                text("b"),
                Event::Flush,
                Event::Close,
                Event::Flush
            ]
        );
        assert_eq!(answers(before).await, [Ok(true); 2]);
        assert_eq!(answers(after).await, [Ok(false)]);
    }
}
