//! The chunked transfer coding of upstream responses (RFC 9112 §7.1),
//! decoded strictly: sizes in at most 16 hex digits, lines ended by CRLF,
//! chunk extensions and the trailer section bounded. Data is handed on as
//! slices of the read buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::Error;
use super::head::parse_trailers;

/// Chunk extensions longer than this (per chunk) are refused.
const MAX_EXTENSION_BYTES: usize = 4096;
/// A trailer section longer than this is refused.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body has ended (after its trailers, if it had any).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { value: u64, digits: u8 },
    Extension { value: u64, seen: usize },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    Trailers,
    End,
}

/// A chunked body's decoding state.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl Decoder {
    /// Decodes from the start of `buf`, taking what it uses; `Ok(None)`
    /// when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        loop {
            match self.state {
                State::Data { left } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
                }
                State::Trailers => return self.trailers(buf),
                State::End => return Ok(Some(Decoded::End)),
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(None);
            };
            buf.advance(1);
            self.state = match (self.state, byte) {
                (State::Size { value, digits }, _) if byte.is_ascii_hexdigit() => {
                    if digits == 16 {
                        return Err(Error::BadChunk);
                    }
                    let digit = (byte as char).to_digit(16).unwrap_or_default();
                    State::Size {
                        value: (value << 4) | u64::from(digit),
                        digits: digits + 1,
                    }
                }
                (State::Size { digits: 0, .. }, _) => return Err(Error::BadChunk),
                (State::Size { value, .. }, b'\r') => State::SizeLf { value },
                (State::Size { value, .. }, b';' | b' ' | b'\t') => {
                    State::Extension { value, seen: 1 }
                }
                (State::Extension { value, .. }, b'\r') => State::SizeLf { value },
                (State::Extension { value, seen }, _)
                    if seen < MAX_EXTENSION_BYTES && (byte == b'\t' || byte >= b' ') =>
                {
                    State::Extension {
                        value,
                        seen: seen + 1,
                    }
                }
                (State::SizeLf { value: 0 }, b'\n') => State::Trailers,
                (State::SizeLf { value }, b'\n') => State::Data { left: value },
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return Err(Error::BadChunk),
            };
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::End;
            return Ok(Some(Decoded::End));
        }
        if buf.len() < 2 {
            return Ok(None);
        }
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => {
                let section = buf.split_to(at + 4);
                self.state = State::End;
                Ok(Some(Decoded::Trailers(parse_trailers(&section)?)))
            }
            None if buf.len() > MAX_TRAILER_BYTES => Err(Error::BadChunk),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; the data joined, the
    /// trailers, and whether the end was reached.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Some(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
                Some(Decoded::Trailers(fields)) => trailers = Some(fields),
                Some(Decoded::End) => return Ok((data, trailers)),
                None if fed < input.len() => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                None => return Err(Error::IncompleteBody),
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_read_sizes() {
        let body = b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            let (data, trailers) = decode_in_steps(body, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(trailers.is_none());
        }
    }

    #[test]
    fn trailers_come_after_the_last_chunk() {
        let body = b"3\r\nabc\r\n0\r\nx-sum: 6\r\n\r\n";
        for step in [1, 4, body.len()] {
            let (data, trailers) = decode_in_steps(body, step).unwrap();
            assert_eq!(data, b"abc");
            assert_eq!(trailers.unwrap()["x-sum"], "6");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let endless_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_EXTENSION_BYTES));
        let endless_trailers = format!("0\r\nx: {}", "y".repeat(MAX_TRAILER_BYTES));
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"1;a\nb\r\nx\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            endless_extension.as_bytes(),
            endless_trailers.as_bytes(),
        ] {
            assert!(
                decode_in_steps(bad, 3).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_largest_size_is_taken_as_a_count_not_wrapped() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nabc"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert!(decoder.decode(&mut buf).unwrap().is_none());
    }
}
