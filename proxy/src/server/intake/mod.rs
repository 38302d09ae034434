//! The strict HTTP/1 intake: an I/O layer between a client socket and
//! hyper that follows the byte stream's message framing and lets a request
//! head through only once it passed every rule in [`head`]. A refused head
//! never reaches hyper: the intake drops its bytes and hands hyper a short
//! marker request instead, which the connection's service answers with the
//! refusal (so pipelined requests before it are answered first, in order)
//! and `Connection: close`. Bodies are followed to find the next head: a
//! malformed chunked body, a stalled body or a client gone mid-body surface
//! as an error of the request's body, which the request path classifies as
//! the client's fault.
//!
//! An HTTP/2 connection (its preface as the first bytes) and the bytes after
//! a protocol-switch request pass through untouched; `h2` checks its frames
//! itself.

pub mod head;

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::framing::{ChunkScanner, Step};
use head::{Framing, HeadLimits, Partial, Refusal, Scan};

/// What the intake enforces, from `[limits]` and `[timeouts]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntakeSettings {
    pub limits: HeadLimits,
    /// A head must arrive whole within this of its first byte (or of the
    /// connection's start, for the first request).
    pub header_read: Duration,
    /// A body may pause this long between bytes.
    pub body_idle: Duration,
}

/// What the intake tells the connection's service: the refusal behind the
/// marker request, if one was sent.
#[derive(Debug, Default)]
pub(crate) struct IntakeReport {
    pending: AtomicBool,
    refusal: Mutex<Option<(String, Refusal)>>,
}

impl IntakeReport {
    /// The refusal whose marker request has this path, if it is one. The
    /// check is a single load until the intake refused something.
    pub fn take_refusal(&self, path: &str) -> Option<Refusal> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_ref() {
            Some((marker, _)) if marker == path => slot.take().map(|(_, refusal)| refusal),
            _ => None,
        }
    }

    fn refuse(&self, refusal: Refusal) -> String {
        // Unguessable, so no client request can pose as a marker.
        let token = std::hash::BuildHasher::hash_one(
            &std::hash::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let marker = format!("/.weir/intake-refused/{token:016x}");
        *self
            .refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((marker.clone(), refusal));
        self.pending.store(true, Ordering::Release);
        marker
    }
}

/// Where in the byte stream the intake is.
#[derive(Debug)]
enum Phase {
    /// Reading a head; nothing of it has gone to hyper yet.
    Head { scan: Scan, skipped_crlf: bool },
    /// A chunked request's head is accepted but held back until its first
    /// chunk-size line proves well-formed, so a body that is malformed from
    /// its first byte never sends the head upstream.
    AwaitChunk {
        head_len: usize,
        fed: usize,
        scanner: ChunkScanner,
        upgrade: bool,
    },
    /// Body bytes still to come.
    Body { left: u64, upgrade: bool },
    Chunked {
        scanner: ChunkScanner,
        upgrade: bool,
    },
    /// HTTP/2, or after a protocol switch: bytes pass untouched.
    Passthrough,
    /// After a refusal or a body error: nothing more goes to hyper.
    Closed,
}

/// Which deadline the timer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Off,
    Head,
    Body,
}

/// A client socket as hyper reads it through the intake.
pub(crate) struct Intake<S> {
    io: S,
    /// Bytes read from the socket that hyper has not taken: `hold[..ready]`
    /// passed the checks, the rest is an unfinished head.
    hold: BytesMut,
    ready: usize,
    phase: Phase,
    settings: IntakeSettings,
    report: std::sync::Arc<IntakeReport>,
    /// No request yet (an HTTP/2 preface is possible).
    first: bool,
    /// When the head being read started (the connection's start for the first).
    head_started: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes arrived since the body timer was last armed: it restarts.
    progress: bool,
    /// A body error to hand hyper once the bytes before it are taken.
    fault: Option<io::Error>,
    eof: bool,
}

impl<S> Intake<S> {
    pub fn new(io: S, settings: IntakeSettings, report: std::sync::Arc<IntakeReport>) -> Self {
        Self {
            io,
            hold: BytesMut::new(),
            ready: 0,
            phase: Phase::Head {
                scan: Scan::default(),
                skipped_crlf: false,
            },
            settings,
            report,
            first: true,
            head_started: Some(Instant::now()),
            timer: None,
            progress: true,
            fault: None,
            eof: false,
        }
    }

    /// Advances the framing over `pending` (bytes read but not released,
    /// starting at the current head or body position). Returns how many of
    /// them may go to hyper now, and the refusal of the head after those,
    /// if it broke a rule. A body fault is left in `self.fault`.
    fn advance(&mut self, pending: &[u8]) -> (usize, Option<Refusal>) {
        match self.advance_inner(pending) {
            Ok(done) => (done, None),
            Err((done, refusal)) => (done, Some(refusal)),
        }
    }

    fn advance_inner(&mut self, pending: &[u8]) -> Result<usize, (usize, Refusal)> {
        let mut done = 0;
        loop {
            let rest = &pending[done..];
            if rest.is_empty() {
                return Ok(done);
            }
            match &mut self.phase {
                Phase::Head { scan, skipped_crlf } => {
                    // RFC 9112 §2.2: one empty line before a request line is
                    // tolerated (clients add one after a body).
                    if !*skipped_crlf && rest.starts_with(b"\r\n") {
                        *skipped_crlf = true;
                        done += 2;
                        continue;
                    }
                    if rest == b"\r" && !*skipped_crlf {
                        return Ok(done);
                    }
                    if self.first {
                        if rest.starts_with(head::H2_PREFACE) {
                            self.phase = Phase::Passthrough;
                            return Ok(pending.len());
                        }
                        if head::H2_PREFACE.starts_with(rest) {
                            // Perhaps HTTP/2's preface: wait for the rest.
                            return Ok(done);
                        }
                    }
                    let limits = &self.settings.limits;
                    // A head that arrived whole is judged in one pass; one
                    // that trickles in is scanned as it comes, then judged.
                    let judged = if scan.is_fresh() {
                        head::parse(rest, limits)
                    } else {
                        match head::find_end(rest, scan, limits) {
                            Ok(Partial::Complete(end)) => head::parse(&rest[..end], limits),
                            Ok(Partial::NeedMore) => Ok(None),
                            Err(refusal) => Err(refusal),
                        }
                    };
                    let (end, head) = match judged.map_err(|r| (done, r))? {
                        Some(judged) => judged,
                        None => {
                            // Remember how far it was scanned.
                            if scan.is_fresh() {
                                head::find_end(rest, scan, limits).map_err(|r| (done, r))?;
                            }
                            return Ok(done);
                        }
                    };
                    self.first = false;
                    self.head_started = None;
                    let upgrade = head.upgrade;
                    match head.framing {
                        Framing::Empty => {
                            done += end;
                            self.phase = after_message(upgrade);
                        }
                        Framing::Length(left) => {
                            done += end;
                            self.phase = Phase::Body { left, upgrade };
                        }
                        Framing::Chunked if head.expects_continue => {
                            done += end;
                            self.phase = Phase::Chunked {
                                scanner: self.chunk_scanner(),
                                upgrade,
                            };
                        }
                        Framing::Chunked => {
                            self.phase = Phase::AwaitChunk {
                                head_len: end,
                                fed: 0,
                                scanner: self.chunk_scanner(),
                                upgrade,
                            };
                        }
                    }
                }
                Phase::AwaitChunk {
                    head_len,
                    fed,
                    scanner,
                    upgrade,
                } => {
                    let body = &rest[*head_len + *fed..];
                    match scanner.advance(body) {
                        Err(error) => {
                            return Err((
                                done,
                                Refusal {
                                    status: http::StatusCode::BAD_REQUEST,
                                    reason: error.0,
                                },
                            ));
                        }
                        Ok(Step::Ended(used)) => {
                            done += *head_len + *fed + used;
                            self.phase = after_message(*upgrade);
                        }
                        Ok(Step::Consumed) => {
                            *fed += body.len();
                            if !scanner.first_size_seen() {
                                return Ok(done);
                            }
                            done += *head_len + *fed;
                            let scanner = std::mem::replace(scanner, ChunkScanner::new(0));
                            self.phase = Phase::Chunked {
                                scanner,
                                upgrade: *upgrade,
                            };
                        }
                    }
                }
                Phase::Body { left, upgrade } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    done += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.phase = after_message(*upgrade);
                    }
                }
                Phase::Chunked { scanner, upgrade } => match scanner.advance(rest) {
                    Ok(Step::Consumed) => return Ok(pending.len()),
                    Ok(Step::Ended(used)) => {
                        done += used;
                        self.phase = after_message(*upgrade);
                    }
                    Err(error) => {
                        self.fail(io::ErrorKind::InvalidData, error.0);
                        return Ok(done);
                    }
                },
                Phase::Passthrough => return Ok(pending.len()),
                Phase::Closed => return Ok(done),
            }
        }
    }

    fn chunk_scanner(&self) -> ChunkScanner {
        ChunkScanner::new(self.settings.limits.max_head)
    }

    /// The request's body failed: hyper gets the error after the bytes
    /// before it, and nothing after.
    fn fail(&mut self, kind: io::ErrorKind, reason: &'static str) {
        self.fault = Some(io::Error::new(kind, reason));
        self.phase = Phase::Closed;
    }

    /// Replaces everything not yet released with the marker request for
    /// `refusal`.
    fn refuse(&mut self, refusal: Refusal) {
        let marker = self.report.refuse(refusal);
        self.hold.truncate(self.ready);
        self.hold.extend_from_slice(b"GET ");
        self.hold.extend_from_slice(marker.as_bytes());
        self.hold
            .extend_from_slice(b" HTTP/1.1\r\nhost: weir.invalid\r\nconnection: close\r\n\r\n");
        self.ready = self.hold.len();
        self.phase = Phase::Closed;
    }

    /// Runs the framing over what is held and not yet released.
    fn advance_held(&mut self) {
        let pending = self.hold.split_off(self.ready);
        let (released, refusal) = self.advance(&pending);
        self.hold.unsplit(pending);
        self.ready += released;
        match refusal {
            Some(refusal) => self.refuse(refusal),
            None if matches!(self.phase, Phase::Closed) => self.hold.truncate(self.ready),
            None => {}
        }
    }

    /// The deadline the current phase runs against while the socket has
    /// nothing, if any.
    fn wanted_timer(&self) -> Timer {
        match self.phase {
            Phase::Head { .. } if self.head_started.is_some() || self.hold.len() > self.ready => {
                Timer::Head
            }
            Phase::AwaitChunk { .. } | Phase::Body { .. } | Phase::Chunked { .. } => Timer::Body,
            _ => Timer::Off,
        }
    }

    /// Called when the socket has nothing: arms or checks the phase's timer.
    /// `Ready` when it ran out.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A head's deadline is fixed at its start (taken lazily: a head that
        // arrives in one read never reads the clock); a body's moves with
        // every pause (it counts idle time, not total time).
        let deadline = match self.wanted_timer() {
            Timer::Off => return Poll::Pending,
            Timer::Head => {
                *self.head_started.get_or_insert_with(Instant::now) + self.settings.header_read
            }
            Timer::Body if self.progress || self.timer.is_none() => {
                self.progress = false;
                Instant::now() + self.settings.body_idle
            }
            Timer::Body => match &self.timer {
                Some(timer) => timer.deadline(),
                None => return Poll::Pending,
            },
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx)
    }

    /// The phase's deadline passed with the socket silent.
    fn timed_out(&mut self) {
        match self.phase {
            Phase::Head { .. } if self.ready == 0 && self.hold.is_empty() => {
                // Nothing of a request arrived: close quietly, as for an
                // idle keep-alive connection.
                self.eof = true;
            }
            Phase::Head { .. } | Phase::AwaitChunk { .. } => self.refuse(Refusal {
                status: http::StatusCode::REQUEST_TIMEOUT,
                reason: "request head not received in time",
            }),
            _ => self.fail(io::ErrorKind::TimedOut, "request body stalled"),
        }
    }
}

/// The phase after a message: the next head, or raw bytes after a protocol
/// switch request (the service closes the connection if the upstream
/// declines the switch, so those bytes are never read as HTTP/1).
fn after_message(upgrade: bool) -> Phase {
    if upgrade {
        Phase::Passthrough
    } else {
        Phase::Head {
            scan: Scan::default(),
            skipped_crlf: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Intake<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.hold[..n]);
                this.hold.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(fault) = this.fault.take() {
                return Poll::Ready(Err(fault));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.phase, Phase::Closed) {
                // Hyper answers what it has and closes the connection.
                return Poll::Pending;
            }
            if this.hold.is_empty() {
                // Fast path: read straight into hyper's buffer and check in
                // place; only an unfinished head is copied aside.
                let before = out.filled().len();
                if let Poll::Ready(result) = Pin::new(&mut this.io).poll_read(cx, out) {
                    result?;
                    let filled = out.filled().len();
                    if filled == before {
                        this.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                    this.progress = true;
                    let (released, refusal) = {
                        let new = &out.filled()[before..];
                        let (released, refusal) = this.advance(new);
                        if refusal.is_none()
                            && released < new.len()
                            && !matches!(this.phase, Phase::Closed)
                        {
                            this.hold.extend_from_slice(&new[released..]);
                        }
                        (released, refusal)
                    };
                    out.set_filled(before + released);
                    if let Some(refusal) = refusal {
                        this.refuse(refusal);
                    }
                    if released > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
            } else {
                let start = this.hold.len();
                this.hold.reserve(8192);
                if let Poll::Ready(result) =
                    tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.hold)
                {
                    if result? == 0 {
                        this.hold.truncate(this.ready);
                        this.eof = true;
                        continue;
                    }
                    this.progress = true;
                    debug_assert!(this.hold.len() > start);
                    this.advance_held();
                    continue;
                }
            }
            ready!(this.poll_timer(cx));
            this.timed_out();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Intake<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
