//! The server side of the transport: whole messages in and out of a ROUTER
//! socket, with a size limit and the routing envelope split off. pycomd and
//! hosted services both use it; the body inside is [`proto`]'s business.

use crate::proto;

/// Routing frames a message may carry before its command (ROUTER identity,
/// proxies' identities, the empty delimiter).
const MAX_ENVELOPE_FRAMES: usize = 8;
/// Allowance over `max_message_bytes` for the routing envelope.
const ENVELOPE_BYTES: usize = 1024;
/// Most frames of one message kept: its envelope, command, body and up to
/// 1,000 attachments. Frames past it are read and dropped as they come, so
/// a message of many tiny frames costs no more than this many.
pub const MAX_FRAMES: usize = MAX_ENVELOPE_FRAMES + 2 + 1000;

/// One message read from the ROUTER socket.
pub struct Incoming {
    /// Identity frames and, if the peer sent one, the empty delimiter.
    pub envelope: Vec<zmq::Message>,
    /// `[command, body, attachment...]`; cut short when `oversize` is set.
    pub parts: Vec<zmq::Message>,
    /// Set when the message was larger than allowed: its size in bytes.
    pub oversize: Option<usize>,
    /// Frames the message had in all (more than `parts` when some were dropped).
    pub frames: usize,
}

/// Read one whole message without blocking; `None` when none is waiting.
///
/// Frames past `max_bytes` are read and dropped at once, so an oversized
/// message costs pycomd no more memory than the limit (libzmq itself
/// refuses single frames above the socket's `ZMQ_MAXMSGSIZE`).
pub fn recv(socket: &zmq::Socket, max_bytes: usize) -> Result<Option<Incoming>, zmq::Error> {
    let first = match socket.recv_msg(zmq::DONTWAIT) {
        Ok(msg) => msg,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let budget = max_bytes.saturating_add(ENVELOPE_BYTES);
    let mut more = first.get_more();
    let mut total = first.len();
    let mut frames = vec![first];
    let mut count = 1;
    let mut dropping = false;
    while more {
        let msg = socket.recv_msg(0)?;
        more = msg.get_more();
        count += 1;
        total = total.saturating_add(msg.len());
        if total > budget {
            dropping = true;
        }
        if !dropping && frames.len() < MAX_FRAMES {
            frames.push(msg);
        }
    }
    let split = envelope_len(&frames);
    let parts = frames.split_off(split);
    Ok(Some(Incoming {
        envelope: frames,
        parts,
        oversize: dropping.then_some(total),
        frames: count,
    }))
}

/// Where the envelope ends. REQ peers and well-behaved DEALER peers send an
/// empty delimiter; a DEALER that does not still gets answered, on the
/// envelope it came with.
fn envelope_len(frames: &[zmq::Message]) -> usize {
    for (i, frame) in frames.iter().enumerate().take(MAX_ENVELOPE_FRAMES).skip(1) {
        if frame.is_empty() {
            return i + 1;
        }
        if &frame[..] == proto::CMD_CALL {
            return i;
        }
    }
    1.min(frames.len())
}

/// Send `[envelope..., status, body]`. A peer that went away or stopped
/// reading (its queue is at the high-water mark) loses the reply: ROUTER
/// drops it rather than block every other peer.
pub fn send<E: std::ops::Deref<Target = [u8]>>(
    socket: &zmq::Socket,
    envelope: &[E],
    status: &[u8],
    body: &[u8],
) {
    let frames = envelope.iter().map(|frame| &frame[..]).chain([status, body]);
    if let Err(e) = socket.send_multipart(frames, zmq::DONTWAIT) {
        tracing::debug!("reply dropped: {e}");
    }
}

/// Replies gathered while a batch of requests is handled, sent together:
/// libzmq's I/O thread then writes many replies per system call instead of
/// waking for each one.
#[derive(Default)]
pub struct Outbox {
    replies: Vec<(Vec<zmq::Message>, &'static [u8], Vec<u8>)>,
}

impl Outbox {
    /// Queue `[envelope..., status, body]`; the envelope frames are moved, not copied.
    pub fn push(&mut self, envelope: Vec<zmq::Message>, status: &'static [u8], body: Vec<u8>) {
        self.replies.push((envelope, status, body));
    }

    /// Replies queued, not yet sent.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Send everything queued (see [`send`] for what happens to slow
    /// peers). Returns how many replies were dropped.
    pub fn flush(&mut self, socket: &zmq::Socket) -> u64 {
        let mut dropped = 0;
        for (envelope, status, body) in self.replies.drain(..) {
            let sent = envelope
                .into_iter()
                .try_for_each(|frame| socket.send(frame, zmq::SNDMORE | zmq::DONTWAIT))
                .and_then(|()| socket.send(status, zmq::SNDMORE | zmq::DONTWAIT))
                .and_then(|()| socket.send(body, zmq::DONTWAIT));
            if let Err(e) = sent {
                dropped += 1;
                tracing::debug!("reply dropped: {e}");
            }
        }
        dropped
    }
}
