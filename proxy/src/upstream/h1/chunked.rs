//! Chunked upstream response bodies (RFC 9112 §7.1), decoded with the
//! crate's one chunked state machine ([`crate::framing`], which the intake
//! uses for client bodies): the same strict rules both ways. Data is handed
//! on as slices of the read buffer, never copied; the trailer section is
//! bounded and parsed into fields.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::Error;
use super::head::parse_trailers;
use crate::framing::ChunkScanner;

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

/// A chunked body's decoding state.
#[derive(Debug)]
pub(super) struct Decoder {
    scanner: ChunkScanner,
    /// The trailer section so far.
    trailer: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            scanner: ChunkScanner::new(MAX_TRAILER_BYTES),
            trailer: Vec::new(),
        }
    }
}

impl Decoder {
    /// Decodes from the start of `buf`, taking what it uses; `Ok(None)`
    /// when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        loop {
            if let Some(left) = self.scanner.data_left() {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                self.scanner
                    .advance(&buf[..take])
                    .map_err(Error::BadChunk)?;
                return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
            }
            if self.scanner.is_done() {
                // Only the final empty line: no trailers.
                if self.trailer.len() <= 2 {
                    return Ok(Some(Decoded::End));
                }
                let section = std::mem::take(&mut self.trailer);
                return Ok(Some(Decoded::Trailers(parse_trailers(&section)?)));
            }
            if buf.is_empty() {
                return Ok(None);
            }
            let in_trailers = self.scanner.in_trailers();
            let used = self.scanner.advance_framing(buf).map_err(Error::BadChunk)?;
            if in_trailers {
                self.trailer.extend_from_slice(&buf[..used]);
            }
            buf.advance(used);
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
        let endless_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(4096));
        let endless_trailers = format!("0\r\nx: {}", "y".repeat(MAX_TRAILER_BYTES));
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"1;a\nb\r\nx\r\n0\r\n\r\n",
            b"1 ;a\r\nx\r\n0\r\n\r\n",
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
        assert_eq!(decoder.scanner.data_left(), Some(u64::MAX - 3));
    }
}
