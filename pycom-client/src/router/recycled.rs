//! Reply bodies written into buffers that come back for the next replies
//! once libzmq has sent them.
//!
//! Why: a body the serving thread allocates is freed by libzmq's I/O
//! thread, after sending. With glibc's malloc that free takes the lock of
//! the serving thread's arena, which the serving thread holds for its own
//! allocations: pipelined `locate`s made 127 futex calls per 1,000 replies
//! between the two threads (pycomd, 4 clients x 64 in flight). A recycled
//! body crosses back through one short lock of its own, which the serving
//! thread takes once per [`RETURNED_MOST`] bodies; the message header
//! libzmq allocates for it is small enough for glibc to free without one.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Size of each buffer: a body longer than this is not recycled (the
/// usual `locate` reply is 150 to 400 bytes).
pub const BUFFER_BYTES: usize = 1024;
/// Most buffers waiting to be reused: what the pool can hold is bounded
/// at `RETURNED_MOST x BUFFER_BYTES` (512 KiB). Buffers returned past it
/// are freed.
const RETURNED_MOST: usize = 512;

type Buffer = Box<[u8; BUFFER_BYTES]>;

/// Buffers sent and given back by libzmq, waiting to be reused.
#[derive(Default)]
struct Returned {
    buffers: Mutex<Vec<Buffer>>,
}

/// The serving thread's end: takes buffers for bodies.
#[derive(Default)]
pub struct BodyPool {
    /// Taken from `returned` a whole list at a time.
    spare: Vec<Buffer>,
    returned: Arc<Returned>,
}

impl BodyPool {
    /// A body of `len` bytes to write, or `None` if it is too long to be
    /// recycled (write it into a message of its own).
    pub fn body(&mut self, len: usize) -> Option<RecycledBody> {
        if len > BUFFER_BYTES {
            return None;
        }
        if self.spare.is_empty() {
            if let Ok(mut returned) = self.returned.buffers.lock() {
                std::mem::swap(&mut self.spare, &mut *returned);
            }
        }
        let buffer = self.spare.pop().unwrap_or_else(|| Box::new([0; BUFFER_BYTES]));
        Some(RecycledBody {
            buffer,
            len,
            returned: self.returned.clone(),
        })
    }
}

/// A reply body in a recycled buffer.
pub struct RecycledBody {
    buffer: Buffer,
    len: usize,
    returned: Arc<Returned>,
}

impl std::fmt::Debug for RecycledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecycledBody").field("len", &self.len).finish()
    }
}

impl RecycledBody {
    /// The body's bytes, to be written.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[..self.len]
    }

    /// The body's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    /// Send as the last frame, without copying: libzmq gives the buffer
    /// back (to [`give_back`]) once it is done with it.
    pub(super) fn send(self, socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
        let RecycledBody {
            buffer,
            len,
            returned,
        } = self;
        let data = Box::into_raw(buffer) as *mut c_void;
        let hint = Arc::into_raw(returned) as *mut c_void;
        // SAFETY: `data` and `hint` are owned by the message from here on:
        // libzmq calls `give_back` exactly once for it (when it is closed,
        // sent or not), which rebuilds both. libzmq never writes to message
        // data it did not allocate.
        unsafe {
            let mut msg: zmq_sys::zmq_msg_t = std::mem::zeroed();
            if zmq_sys::zmq_msg_init_data(&mut msg, data, len, Some(give_back), hint) != 0 {
                let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
                give_back(data, hint);
                return Err(error);
            }
            if zmq_sys::zmq_msg_send(&mut msg, socket.as_mut_ptr(), zmq_sys::ZMQ_DONTWAIT as i32) < 0 {
                let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
                zmq_sys::zmq_msg_close(&mut msg);
                return Err(error);
            }
        }
        Ok(())
    }
}

/// libzmq's callback when it is done with a message made by
/// [`RecycledBody::send`]: the buffer goes back to its pool.
unsafe extern "C" fn give_back(data: *mut c_void, hint: *mut c_void) {
    // SAFETY: both came from `into_raw` in RecycledBody::send, and each
    // message is given back once.
    let (buffer, returned) = unsafe {
        (
            Box::from_raw(data as *mut [u8; BUFFER_BYTES]),
            Arc::from_raw(hint as *const Returned),
        )
    };
    if let Ok(mut buffers) = returned.buffers.lock() {
        if buffers.len() < RETURNED_MOST {
            buffers.push(buffer);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_body_arrives_whole_and_its_buffer_comes_back() {
        let ctx = zmq::Context::new();
        let mut tx = ctx.socket(zmq::PAIR).unwrap();
        let rx = ctx.socket(zmq::PAIR).unwrap();
        rx.bind("inproc://recycled").unwrap();
        tx.connect("inproc://recycled").unwrap();
        let mut pool = BodyPool::default();
        for round in 0..3u8 {
            let mut body = pool.body(5).unwrap();
            body.bytes_mut().copy_from_slice(&[round; 5]);
            body.send(&mut tx).unwrap();
            assert_eq!(rx.recv_bytes(0).unwrap(), vec![round; 5]);
        }
        // Each buffer came back once libzmq closed its message: no more
        // than one was ever made.
        let spare = pool.spare.len() + pool.returned.buffers.lock().unwrap().len();
        assert_eq!(spare, 1);
        assert!(pool.body(BUFFER_BYTES + 1).is_none());
    }
}
