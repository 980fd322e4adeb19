//! Login tokens as durable state: what `Login`, `Logout` and
//! `ExpireTokens` change. Only a token's SHA-256 is kept, never the token;
//! expiry is a unix time in the command (the state reads no clock), checked
//! by whoever validates against their own clock.

use super::Map;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A SHA-256, as the state keys tokens.
pub type Digest = [u8; 32];

/// One live login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The token's SHA-256, hex.
    pub sha256: String,
    pub name: Arc<str>,
    /// The roles at login (validation reads the configuration's current ones).
    pub roles: Vec<String>,
    pub expires_ms: u64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tokens {
    by_digest: Map<Digest, Arc<Token>>,
}

/// A token's SHA-256 from its hex form; `None` if it is not one.
pub fn parse_hex(hex: &str) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

impl Tokens {
    pub fn from_parts(tokens: Vec<Token>) -> Tokens {
        let mut t = Tokens::default();
        for token in tokens {
            if let Some(digest) = parse_hex(&token.sha256) {
                t.by_digest.insert(digest, Arc::new(token));
            }
        }
        t
    }

    pub fn get(&self, digest: &Digest) -> Option<&Token> {
        self.by_digest.get(digest).map(|t| &**t)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    pub fn shared(&self) -> impl Iterator<Item = &Arc<Token>> {
        self.by_digest.values()
    }

    /// The soonest expiry, if any token is held.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_digest.values().map(|t| t.expires_ms).min()
    }

    /// Keep a login; the user's oldest tokens beyond `keep` are dropped
    /// (returned, for those who follow the logins).
    pub fn login(&mut self, token: Token, keep: usize) -> Vec<Digest> {
        let Some(digest) = parse_hex(&token.sha256) else {
            return Vec::new();
        };
        let mut theirs: Vec<(u64, Digest)> = self
            .by_digest
            .iter()
            .filter(|(_, t)| t.name == token.name)
            .map(|(d, t)| (t.expires_ms, *d))
            .collect();
        let mut dropped = Vec::new();
        if theirs.len() >= keep.max(1) {
            // Ties broken by digest: every node drops the same ones.
            theirs.sort_unstable();
            for (_, d) in &theirs[..=theirs.len() - keep.max(1)] {
                self.by_digest.remove(d);
                dropped.push(*d);
            }
        }
        self.by_digest.insert(digest, Arc::new(token));
        dropped
    }

    /// Whether the token was held.
    pub fn logout(&mut self, sha256: &str) -> bool {
        parse_hex(sha256).is_some_and(|d| self.by_digest.remove(&d).is_some())
    }

    /// Forget tokens expired by `now_ms`; which.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Digest> {
        let gone: Vec<Digest> = self
            .by_digest
            .iter()
            .filter(|(_, t)| t.expires_ms <= now_ms)
            .map(|(d, _)| *d)
            .collect();
        for d in &gone {
            self.by_digest.remove(d);
        }
        gone
    }
}
