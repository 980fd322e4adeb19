//! The server side of the transport: whole messages in and out of a ROUTER
//! socket, with a size limit and the routing envelope split off. pycomd and
//! hosted services both use it; the body inside is [`proto`]'s business.

mod recycled;

use crate::proto;
pub use recycled::{BodyPool, RecycledBody, BUFFER_BYTES as BODY_BUFFER_BYTES};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Routing frames a message may carry before its command (ROUTER identity,
/// proxies' identities, the empty delimiter).
const MAX_ENVELOPE_FRAMES: usize = 8;
/// Allowance over `max_message_bytes` for the routing envelope.
const ENVELOPE_BYTES: usize = 1024;
/// Most frames of one message kept: its envelope, command, body and up to
/// 1,000 attachments. Frames past it are read and dropped as they come, so
/// a message of many tiny frames costs no more than this many.
pub const MAX_FRAMES: usize = MAX_ENVELOPE_FRAMES + 2 + 1000;
/// Frames `recv` makes room for at once.
const TYPICAL_FRAMES: usize = 8;

/// The frames of a message after its envelope.
pub type Parts = smallvec::SmallVec<[zmq::Message; 2]>;

/// One message read from the ROUTER socket.
pub struct Incoming {
    /// Identity frames and, if the peer sent one, the empty delimiter.
    pub envelope: Vec<zmq::Message>,
    /// `[command, body, attachment...]`; cut short when `oversize` is set.
    /// A call's two frames are held inline: one allocation less per request.
    pub parts: Parts,
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
    recv_into(socket, max_bytes, &mut Vec::new())
}

/// [`recv`], the frames read into a vector from `spare` (empty ones), if
/// it has any.
fn recv_into(
    socket: &zmq::Socket,
    max_bytes: usize,
    spare: &mut Vec<Vec<zmq::Message>>,
) -> Result<Option<Incoming>, zmq::Error> {
    let first = match socket.recv_msg(zmq::DONTWAIT) {
        Ok(msg) => msg,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let budget = max_bytes.saturating_add(ENVELOPE_BYTES);
    let mut more = first.get_more();
    let mut total = first.len();
    // Room for a usual request (identity, a routing frame or two, the
    // delimiter, command and body) without growing: one allocation.
    let mut frames = spare.pop().unwrap_or_else(|| Vec::with_capacity(TYPICAL_FRAMES));
    frames.push(first);
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
    let parts = frames.drain(split..).collect();
    Ok(Some(Incoming {
        envelope: frames,
        parts,
        oversize: dropping.then_some(total),
        frames: count,
    }))
}

/// Why a request is answered without being handled.
#[derive(Debug)]
pub enum Refused {
    /// Not a call at all (no frames, unknown command): answered `FAIL` with
    /// this text.
    Fail(String),
    /// A call that cannot be taken (too big, a bad body): answered with
    /// this fault.
    Fault(proto::Fault),
}

/// The call a message's `parts` carry, borrowed from them, or why it is
/// refused. `oversize` and `max_bytes` are [`Incoming`]'s and the limit
/// [`recv`] was given: a message cut short is refused naming the limit.
pub fn decode(
    parts: &[zmq::Message],
    oversize: Option<usize>,
    max_bytes: usize,
) -> Result<proto::CallRef<'_>, Refused> {
    if let Some(size) = oversize {
        return Err(Refused::Fault(proto::Fault::bad_request(format!(
            "request of {size} bytes exceeds max_message_bytes = {max_bytes}"
        ))));
    }
    proto::decode_call(parts.first().map(|m| &m[..]), parts.get(1).map(|m| &m[..])).map_err(|e| match e {
        proto::DecodeError::Framing(message) => Refused::Fail(message),
        proto::DecodeError::Body(message) => Refused::Fault(proto::Fault::bad_request(message)),
    })
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

/// A reply body kept once in memory however many peers it goes to, and
/// counted in a shared `pending` byte count from its making until the last
/// copy has left libzmq (its queue for a slow peer included). libzmq counts
/// queued messages, not bytes, and its queues cannot be inspected: this is
/// how a server bounds the bytes big replies hold.
#[derive(Debug)]
pub struct SharedBody {
    bytes: Box<[u8]>,
    pending: Arc<AtomicUsize>,
}

impl SharedBody {
    /// Hold `bytes`, counted in `pending` until dropped.
    pub fn new(bytes: Vec<u8>, pending: &Arc<AtomicUsize>) -> Arc<SharedBody> {
        pending.fetch_add(bytes.len(), Ordering::Relaxed);
        Arc::new(SharedBody {
            bytes: bytes.into_boxed_slice(),
            pending: pending.clone(),
        })
    }

    /// The body's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// An empty body.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// libzmq's callback when it is done with a message made by [`send_shared`]:
/// `hint` is the `Box<Arc<SharedBody>>` that kept the bytes alive.
unsafe extern "C" fn release_shared(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` came from Box::into_raw in send_shared, and libzmq
    // calls this exactly once per message.
    drop(unsafe { Box::from_raw(hint as *mut Arc<SharedBody>) });
}

/// Send `body` as the last frame without copying it: the message points at
/// the shared bytes and holds a reference until libzmq releases it.
fn send_shared(socket: &mut zmq::Socket, body: &Arc<SharedBody>) -> Result<(), zmq::Error> {
    let hint = Box::into_raw(Box::new(body.clone()));
    // SAFETY: the bytes live as long as the Arc in `hint`, which only
    // `release_shared` frees; libzmq never writes to message data it did
    // not allocate; a message not sent is closed here, which releases it.
    unsafe {
        let mut msg: zmq_sys::zmq_msg_t = std::mem::zeroed();
        let data = body.bytes.as_ptr() as *mut c_void;
        let rc = zmq_sys::zmq_msg_init_data(
            &mut msg,
            data,
            body.len(),
            Some(release_shared),
            hint as *mut c_void,
        );
        if rc != 0 {
            drop(Box::from_raw(hint));
            return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
        }
        if zmq_sys::zmq_msg_send(&mut msg, socket.as_mut_ptr(), zmq_sys::ZMQ_DONTWAIT as i32) < 0 {
            let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
            zmq_sys::zmq_msg_close(&mut msg);
            return Err(error);
        }
    }
    Ok(())
}

/// A reply's body: its own bytes, or bytes shared with other replies.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes sent once (copied into the message).
    Owned(Vec<u8>),
    /// Bytes shared, sent without copying.
    Shared(Arc<SharedBody>),
}

/// A queued reply's body.
enum Queued {
    Body(Body),
    /// Written into a recycled buffer: it leaves without another copy.
    Recycled(RecycledBody),
}

/// Replies gathered while a batch of requests is handled, sent together:
/// libzmq's I/O thread then writes many replies per system call instead of
/// waking for each one.
#[derive(Default)]
pub struct Outbox {
    replies: Vec<(Vec<zmq::Message>, &'static [u8], Queued)>,
    /// The envelopes' vectors once their replies left, emptied, for the
    /// next requests read (see [`Outbox::recv`]).
    spare: Vec<Vec<zmq::Message>>,
}

/// Most emptied envelope vectors kept (each holds `TYPICAL_FRAMES`
/// messages' room, 512 bytes).
const SPARE_MOST: usize = 1024;

impl Outbox {
    /// [`recv`] for a server that reads requests in batches and sends
    /// their replies after: each request's envelope is read into a vector
    /// a reply sent before left behind, instead of a new one (a batch of
    /// hundreds would otherwise allocate as many, and free them after).
    pub fn recv(&mut self, socket: &zmq::Socket, max_bytes: usize) -> Result<Option<Incoming>, zmq::Error> {
        recv_into(socket, max_bytes, &mut self.spare)
    }

    /// Queue `[envelope..., status, body]`; the envelope frames are moved, not copied.
    pub fn push(&mut self, envelope: Vec<zmq::Message>, status: &'static [u8], body: Vec<u8>) {
        self.replies
            .push((envelope, status, Queued::Body(Body::Owned(body))));
    }

    /// Queue a reply whose body is shared with others (see [`SharedBody`]).
    pub fn push_body(&mut self, envelope: Vec<zmq::Message>, status: &'static [u8], body: Body) {
        self.replies.push((envelope, status, Queued::Body(body)));
    }

    /// Queue a reply whose body was written into a recycled buffer.
    pub fn push_recycled(&mut self, envelope: Vec<zmq::Message>, status: &'static [u8], body: RecycledBody) {
        self.replies.push((envelope, status, Queued::Recycled(body)));
    }

    /// Replies queued, not yet sent.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The status and body of the reply queued last (a server counting
    /// replies by code reads it).
    pub fn last(&self) -> Option<(&'static [u8], &[u8])> {
        self.replies.last().map(|(_, status, body)| {
            let bytes: &[u8] = match body {
                Queued::Body(Body::Owned(bytes)) => bytes,
                Queued::Body(Body::Shared(shared)) => &shared.bytes,
                Queued::Recycled(body) => body.bytes(),
            };
            (*status, bytes)
        })
    }

    /// Send everything queued (see [`send`] for what happens to slow
    /// peers). Returns how many replies were dropped.
    pub fn flush(&mut self, socket: &mut zmq::Socket) -> u64 {
        let mut dropped = 0;
        for (mut envelope, status, body) in self.replies.drain(..) {
            let sent = envelope
                .drain(..)
                .try_for_each(|frame| socket.send(frame, zmq::SNDMORE | zmq::DONTWAIT))
                .and_then(|()| socket.send(status, zmq::SNDMORE | zmq::DONTWAIT))
                .and_then(|()| match body {
                    Queued::Body(Body::Owned(bytes)) => socket.send(&bytes[..], zmq::DONTWAIT),
                    Queued::Body(Body::Shared(shared)) => send_shared(socket, &shared),
                    Queued::Recycled(body) => body.send(socket),
                });
            if let Err(e) = sent {
                dropped += 1;
                tracing::debug!("reply dropped: {e}");
            }
            // Bounded in bytes: only vectors of a usual message's room.
            if envelope.capacity() <= TYPICAL_FRAMES && self.spare.len() < SPARE_MOST {
                envelope.clear();
                self.spare.push(envelope);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(outbox: &mut Outbox, server: &zmq::Socket) -> Incoming {
        assert_eq!(server.poll(zmq::POLLIN, 5000).unwrap(), 1, "no request came");
        outbox.recv(server, 1 << 20).unwrap().unwrap()
    }

    #[test]
    fn a_request_after_a_reply_is_read_into_the_envelope_vector_the_reply_left() {
        let ctx = zmq::Context::new();
        let mut server = ctx.socket(zmq::ROUTER).unwrap();
        server.bind("inproc://outbox").unwrap();
        let client = ctx.socket(zmq::DEALER).unwrap();
        client.connect("inproc://outbox").unwrap();
        let mut outbox = Outbox::default();

        client.send_multipart([&b""[..], b"CALL", b"{}"], 0).unwrap();
        let first = read(&mut outbox, &server);
        assert_eq!(first.parts.len(), 2, "command and body");
        outbox.push(first.envelope, proto::STATUS_OK, b"{}".to_vec());
        assert_eq!(outbox.flush(&mut server), 0);
        assert_eq!(client.recv_multipart(0).unwrap()[1], b"OK");
        assert_eq!(outbox.spare.len(), 1, "the reply's envelope vector was not kept");

        client.send_multipart([&b""[..], b"CALL", b"{}"], 0).unwrap();
        let second = read(&mut outbox, &server);
        assert_eq!(second.envelope.len(), 2, "identity and delimiter");
        assert!(outbox.spare.is_empty(), "the kept vector was not used");
    }
}
