//! Completion tokens: what a completion belongs to, packed into the `u64` an
//! [`Io`](super::Io) carries from submission to completion.
//!
//! A shard has one ring and one loop that waits on it, so every operation it
//! queues (log writes and syncs, checkpoint I/O, reads for callers) comes back
//! through the same `wait`; a blob log's writer thread has its own ring and uses
//! the blob kinds. The token says whose it is: a [`TokenKind`] in the
//! top byte and a payload of the owner's choosing below it. Kinds are an enum,
//! so two owners can never pick overlapping bits, and a payload too large for
//! its field is refused when the token is made rather than routed wrongly.
//!
//! Layout of the `u64`: bits 56..64 hold the kind's code (never zero, so no
//! token is 0, and never 0xff, so no token is `u64::MAX`, which the io_uring
//! backend keeps for its eventfd read); bits 0..56 hold the payload.

/// Bits of a token below the kind.
pub const PAYLOAD_BITS: u32 = 56;

/// Largest payload a token carries.
pub const PAYLOAD_MAX: u64 = (1 << PAYLOAD_BITS) - 1;

/// Whose completion it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenKind {
    /// A log batch write; the payload is the batch's sequence number.
    LogWrite = 1,
    /// A standalone fdatasync of the log; the payload is a sequence number.
    LogSync = 2,
    /// Checkpoint I/O (page loads and writes, the table write); the payload is the
    /// operation's index within its step.
    Checkpoint = 3,
    // 4 and 5 were callers' page and chunk reads on the shard's ring (callers read
    // tree nodes and chunks themselves now); the codes stay unused.
    /// A blob log batch write; the payload is the batch's flush number.
    BlobWrite = 6,
    /// A standalone fdatasync of the blob log's open segment; the payload is unused (0).
    BlobSync = 7,
}

impl TokenKind {
    /// Every kind, for exhaustive checks.
    pub const ALL: [TokenKind; 5] =
        [TokenKind::LogWrite, TokenKind::LogSync, TokenKind::Checkpoint, TokenKind::BlobWrite, TokenKind::BlobSync];

    fn from_code(code: u8) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

// The top byte 0xff would let a token equal `u64::MAX`, the io_uring backend's own tag.
const _: () = {
    let mut i = 0;
    while i < TokenKind::ALL.len() {
        let code = TokenKind::ALL[i] as u8;
        assert!(code != 0 && code != 0xff, "token kind codes must leave 0 and 0xff unused");
        i += 1;
    }
};

/// A decoded completion token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Whose completion it is.
    pub kind: TokenKind,
    /// The owner's own number (at most [`PAYLOAD_MAX`]).
    pub payload: u64,
}

impl Token {
    /// A token of `kind` carrying `payload`.
    ///
    /// # Panics
    /// If `payload` exceeds [`PAYLOAD_MAX`]: the owner would otherwise get another
    /// owner's completions.
    pub fn new(kind: TokenKind, payload: u64) -> Token {
        assert!(payload <= PAYLOAD_MAX, "a {kind:?} token payload of {payload} overflows into the kind");
        Token { kind, payload }
    }

    /// The `u64` handed to the [`Io`](super::Io).
    pub fn encode(self) -> u64 {
        (u64::from(self.kind as u8) << PAYLOAD_BITS) | self.payload
    }

    /// The token `raw` encodes, or `None` if no [`Token::encode`] made it.
    pub fn decode(raw: u64) -> Option<Token> {
        let code = u8::try_from(raw >> PAYLOAD_BITS).expect("the top byte fits in u8");
        let kind = TokenKind::from_code(code)?;
        Some(Token { kind, payload: raw & PAYLOAD_MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind() {
        for kind in TokenKind::ALL {
            for payload in [0, 1, 42, 1 << 40, PAYLOAD_MAX] {
                let token = Token::new(kind, payload);
                assert_eq!(Token::decode(token.encode()), Some(token));
            }
        }
    }

    #[test]
    fn kinds_never_collide() {
        for a in TokenKind::ALL {
            for b in TokenKind::ALL {
                for payload in [0, 7, PAYLOAD_MAX] {
                    let (ta, tb) = (Token::new(a, payload).encode(), Token::new(b, payload).encode());
                    assert_eq!(ta == tb, a == b, "{a:?} and {b:?} encode alike");
                }
            }
        }
    }

    #[test]
    fn foreign_values_do_not_decode() {
        // 0 and u64::MAX (the io_uring backend's eventfd read) are no token.
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(u64::MAX), None);
        assert_eq!(Token::decode(5), None);
    }

    #[test]
    #[should_panic(expected = "overflows into the kind")]
    fn oversized_payload_is_refused() {
        let _ = Token::new(TokenKind::LogWrite, PAYLOAD_MAX + 1);
    }
}
