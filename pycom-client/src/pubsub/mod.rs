//! Pub-sub through pycomd's forwarder (PROTOCOL.md 5).
//!
//! [`wire`] is the format of publications, shared with pycomd.

pub mod wire;
