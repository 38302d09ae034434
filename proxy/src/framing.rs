//! HTTP/1 body framing, read the same strict way in both directions: the
//! intake uses it to know where a client's body ends and the next head
//! begins, the upstream client to know where a response's body lies.
//!
//! The chunked transfer coding (RFC 9112 §7.1) is followed byte by byte,
//! refusing what a peer could read differently: non-hex sizes, sizes past
//! `u64`, bare LF, whitespace before an extension, over-long size lines and
//! trailers. A `Content-Length` value is `1*DIGIT` and nothing else.

/// A `Content-Length` value (RFC 9110 §8.6): `1*DIGIT`, nothing else (no
/// sign, no list, no spaces); `None` when it is not one.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 4096;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: hex digits so far, whether an extension began.
    Size {
        digits: u8,
        extension: bool,
    },
    /// The size line's CR was seen.
    SizeLf,
    /// Chunk data still to come.
    Data(u64),
    /// After the data: its CRLF.
    DataCr,
    DataLf,
    /// In the trailer section: at the start of a line (`empty` so far).
    Trailer {
        line_start: bool,
    },
    TrailerLf {
        empty: bool,
    },
    /// The body is complete.
    Done,
}

/// Where in a chunked body the bytes seen so far end.
#[derive(Debug, Clone)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    line: usize,
    trailer_bytes: usize,
    max_trailer: usize,
    /// Size lines completed (the intake waits for the first before it lets
    /// the head through).
    sizes_seen: u64,
}

/// What [`ChunkScanner::advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every byte given belongs to the body; it goes on.
    Consumed,
    /// The body ended after this many of the given bytes.
    Ended(usize),
}

impl ChunkScanner {
    /// A scanner at the start of a body whose trailers may take up to
    /// `max_trailer` bytes.
    pub fn new(max_trailer: usize) -> Self {
        Self {
            state: State::Size {
                digits: 0,
                extension: false,
            },
            size: 0,
            line: 0,
            trailer_bytes: 0,
            max_trailer,
            sizes_seen: 0,
        }
    }

    /// Whether a complete chunk-size line has been seen.
    pub fn first_size_seen(&self) -> bool {
        self.sizes_seen > 0
    }

    /// Chunk data still to come in the current chunk, if the scanner is in
    /// a chunk's data.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data(left) => Some(left),
            _ => None,
        }
    }

    /// Whether the scanner is in the trailer section.
    pub fn in_trailers(&self) -> bool {
        matches!(self.state, State::Trailer { .. } | State::TrailerLf { .. })
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over the framing at the start of `bytes` (size lines, data
    /// endings, trailers), stopping where chunk data or the trailer section
    /// begins, or where the body ends. Returns the bytes used.
    pub fn advance_framing(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let trailers = self.in_trailers();
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(self.state, State::Data(_) | State::Done) {
                return Ok(i);
            }
            self.byte(b)?;
            if matches!(self.state, State::Data(_) | State::Done) || self.in_trailers() != trailers
            {
                return Ok(i + 1);
            }
        }
        Ok(bytes.len())
    }

    /// Advances over `bytes`.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<Step, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Done => return Ok(Step::Ended(i)),
                _ => {}
            }
            self.byte(bytes[i])?;
            i += 1;
            if self.state == State::Done {
                return Ok(Step::Ended(i));
            }
        }
        Ok(Step::Consumed)
    }

    fn byte(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { digits, extension } => {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk size line too long"));
                }
                match b {
                    b'\r' if digits > 0 => State::SizeLf,
                    b';' if digits > 0 => State::Size {
                        digits,
                        extension: true,
                    },
                    _ if extension => {
                        if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 {
                            State::Size { digits, extension }
                        } else {
                            return Err(ChunkError("control character in a chunk extension"));
                        }
                    }
                    _ => {
                        let digit = hex(b).ok_or(ChunkError("malformed chunk size"))?;
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = (self.size << 4) | u64::from(digit);
                        State::Size {
                            digits: digits + 1,
                            extension,
                        }
                    }
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("malformed chunk size line ending"));
                }
                self.sizes_seen += 1;
                self.line = 0;
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    State::Trailer { line_start: true }
                } else {
                    State::Data(size)
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data longer than its size"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("malformed chunk data ending"));
                }
                State::Size {
                    digits: 0,
                    extension: false,
                }
            }
            State::Trailer { line_start } => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.max_trailer {
                    return Err(ChunkError("trailer section too large"));
                }
                match b {
                    b'\r' => State::TrailerLf { empty: line_start },
                    b'\n' => return Err(ChunkError("bare LF in the trailer section")),
                    b' ' | b'\t' if line_start => {
                        return Err(ChunkError("obsolete line folding in a trailer"));
                    }
                    0..=0x08 | 0x0a..=0x1f | 0x7f => {
                        return Err(ChunkError("control character in a trailer"));
                    }
                    _ => State::Trailer { line_start: false },
                }
            }
            State::TrailerLf { empty } => {
                if b != b'\n' {
                    return Err(ChunkError("malformed trailer line ending"));
                }
                if empty {
                    State::Done
                } else {
                    State::Trailer { line_start: true }
                }
            }
            State::Data(_) | State::Done => self.state,
        };
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &[u8]) -> Result<Step, ChunkError> {
        ChunkScanner::new(1024).advance(body)
    }

    #[test]
    fn a_whole_body_ends_where_it_ends() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET";
        assert_eq!(scan(body), Ok(Step::Ended(body.len() - 3)));
        let with_ext = b"5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(scan(with_ext), Ok(Step::Ended(with_ext.len())));
    }

    #[test]
    fn byte_by_byte_gives_the_same_end() {
        let body = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut s = ChunkScanner::new(1024);
        for (i, b) in body.iter().enumerate() {
            let step = s.advance(std::slice::from_ref(b)).unwrap();
            if i + 1 == body.len() {
                assert_eq!(step, Step::Ended(1));
            } else {
                assert_eq!(step, Step::Consumed, "byte {i}");
            }
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"zz\r\n\r\n"[..],
            b"\r\n",
            b"5 \r\nhello\r\n",
            b"5 ;x\r\nhello\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"3;a\x00b\r\n",
        ] {
            assert!(scan(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn long_size_lines_and_trailers_are_bounded() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert!(scan(&long).is_err());
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', 2000));
        assert!(scan(&trailer).is_err());
    }

    #[test]
    fn a_content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 ",
            b" 1",
            b"1,1",
            b"0x1",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_largest_size_parses() {
        let mut s = ChunkScanner::new(16);
        assert_eq!(s.advance(b"ffffffffffffffff\r\n"), Ok(Step::Consumed));
        assert!(s.first_size_seen());
    }
}
