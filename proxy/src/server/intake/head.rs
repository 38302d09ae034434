//! The rules a request head must pass before hyper parses it: strict
//! RFC 9112 syntax (CRLF line endings, no obs-fold, no whitespace before a
//! colon, no control characters in values), one known version, one Host,
//! and unambiguous body framing. A pure function over bytes, so the rules
//! can be tested and fuzzed without sockets.

use http::StatusCode;

/// How a refused head is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// Why, for the `Proxy-Status` details and the log. Never echoes client
    /// bytes.
    pub reason: &'static str,
}

impl Refusal {
    const fn bad(reason: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }
}

/// What the next bytes after an accepted head are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    Empty,
    /// Exactly this many body bytes.
    Length(u64),
    /// A chunked body.
    Chunked,
}

/// What the intake needs to know about an accepted head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub framing: Framing,
    /// The request asks to switch protocols (`Connection: upgrade` and an
    /// `Upgrade` field): if the upstream agrees, the bytes after its body are
    /// no longer HTTP/1.
    pub upgrade: bool,
    /// `Expect: 100-continue`: the client waits for the interim response
    /// before sending its body.
    pub expects_continue: bool,
}

/// Limits a head is checked against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_request_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
}

/// The HTTP/2 connection preface's first line: a request line whose
/// "method" is `PRI` and version `HTTP/2.0`.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The result of looking at the start of a head that is not complete yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// More bytes are needed; the head so far breaks no rule.
    NeedMore,
    /// The head ends at this offset (just past its empty line).
    Complete(usize),
}

/// How far [`find_end`] has looked into a head that is still arriving, so
/// a head that trickles in is scanned once, not once per arrival.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan {
    /// The next byte to look at (just past the last line ending found).
    at: usize,
    /// Line endings found so far.
    lines: usize,
}

impl Scan {
    /// Nothing of the head has been scanned yet.
    pub fn is_fresh(&self) -> bool {
        self.at == 0
    }
}

/// Scans `buf` (the head so far) for the end of the head, refusing early
/// what can be refused early: a bare LF, an over-long request line, an
/// over-large head.
pub fn find_end(buf: &[u8], scan: &mut Scan, limits: &HeadLimits) -> Result<Partial, Refusal> {
    while let Some(offset) = memchr::memchr(b'\n', &buf[scan.at..]) {
        let lf = scan.at + offset;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Err(Refusal::bad("bare LF line ending in the request head"));
        }
        if lf + 1 > limits.max_head {
            return Err(too_large());
        }
        if scan.lines == 0 {
            // The request line is whole: judge it now, so an HTTP/0.9
            // request (which has no head to end) or a bad version is
            // answered at once rather than at the head's deadline.
            parse_request_line(&buf[..lf - 1], limits)?;
        }
        // An empty line (CRLF right after the previous CRLF) ends the head.
        let empty_line = lf == scan.at + 1 && scan.lines > 0;
        scan.lines += 1;
        scan.at = lf + 1;
        if empty_line {
            return Ok(Partial::Complete(lf + 1));
        }
    }
    if scan.lines == 0 && buf.len() > limits.max_request_line + 1 {
        return Err(uri_too_long());
    }
    if buf.len() >= limits.max_head {
        return Err(too_large());
    }
    Ok(Partial::NeedMore)
}

fn too_large() -> Refusal {
    Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason: "request head too large",
    }
}

fn uri_too_long() -> Refusal {
    Refusal {
        status: StatusCode::URI_TOO_LONG,
        reason: "request line too long",
    }
}

/// Checks a complete head (request line, fields, the empty line).
#[cfg(test)]
pub fn check(head: &[u8], limits: &HeadLimits) -> Result<Head, Refusal> {
    match parse(head, limits)? {
        Some((_, head)) => Ok(head),
        None => Err(Refusal::bad("incomplete request head")),
    }
}

/// Checks the head at the start of `buf` in one pass: `Some((end, head))`
/// when it is complete and passes every rule, `None` when its empty line has
/// not arrived yet (nothing seen so far breaks a rule). Lines are found with
/// `memchr` and every byte is judged by a table lookup, so a head that
/// arrives whole costs one pass.
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<(usize, Head)>, Refusal> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        if buf.len() > limits.max_request_line + 1 {
            return Err(uri_too_long());
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(Refusal::bad("bare LF line ending in the request head"));
    }
    let line = parse_request_line(&buf[..lf - 1], limits)?;
    let mut facts = Fields::default();
    let mut count = 0usize;
    let mut at = lf + 1;
    loop {
        match buf.get(at..at + 2) {
            Some(b"\r\n") => {
                let end = at + 2;
                if end > limits.max_head {
                    return Err(too_large());
                }
                return facts.finish(&line).map(|head| Some((end, head)));
            }
            _ if at >= buf.len() => return incomplete(buf, limits),
            _ => {}
        }
        let Some(offset) = memchr::memchr(b'\n', &buf[at..]) else {
            return incomplete(buf, limits);
        };
        let lf = at + offset;
        if lf == at || buf[lf - 1] != b'\r' {
            return Err(Refusal::bad("bare LF line ending in the request head"));
        }
        count += 1;
        if count > limits.max_headers {
            return Err(Refusal {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "too many header fields",
            });
        }
        if lf + 1 > limits.max_head {
            return Err(too_large());
        }
        facts.add(&buf[at..lf - 1])?;
        at = lf + 1;
    }
}

/// No empty line yet: fine unless the head is already too large.
fn incomplete(buf: &[u8], limits: &HeadLimits) -> Result<Option<(usize, Head)>, Refusal> {
    if buf.len() >= limits.max_head {
        return Err(too_large());
    }
    Ok(None)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

struct RequestLine<'a> {
    version: Version,
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
}

fn parse_request_line<'a>(line: &'a [u8], limits: &HeadLimits) -> Result<RequestLine<'a>, Refusal> {
    if line.len() > limits.max_request_line {
        return Err(uri_too_long());
    }
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().ok_or(Refusal::bad("malformed request line"))?;
    let Some(version) = parts.next() else {
        // `GET /path`: HTTP/0.9.
        return Err(version_not_supported());
    };
    if parts.next().is_some() {
        return Err(Refusal::bad("malformed request line"));
    }
    if method.is_empty() || !all_in(method, &TCHAR) {
        return Err(Refusal::bad("malformed method"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(version_not_supported());
        }
        _ => return Err(Refusal::bad("malformed HTTP version")),
    };
    if target.is_empty() || !all_target_bytes(target) {
        return Err(Refusal::bad("malformed request target"));
    }
    if method == b"CONNECT" {
        return Err(Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            reason: "CONNECT is not supported",
        });
    }
    let authority = match target[0] {
        b'/' => None,
        b'*' if target == b"*" && method == b"OPTIONS" => None,
        _ => Some(absolute_authority(target)?),
    };
    Ok(RequestLine { version, authority })
}

fn version_not_supported() -> Refusal {
    Refusal {
        status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        reason: "only HTTP/1.0, HTTP/1.1 and HTTP/2 are supported",
    }
}

/// The authority of an absolute-form target (`http://host:port/path`).
fn absolute_authority(target: &[u8]) -> Result<&[u8], Refusal> {
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(Refusal::bad("malformed request target"))?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(Refusal::bad("malformed authority in the request target"));
    }
    Ok(authority)
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &bytes[prefix.len()..])
}

/// A byte-class table: `TABLE[b]` says whether byte `b` belongs.
macro_rules! byte_table {
    ($belongs:expr) => {{
        let mut out = [false; 256];
        let mut b = 0usize;
        while b < 256 {
            out[b] = $belongs(b as u8);
            b += 1;
        }
        out
    }};
}

const fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

const fn value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b <= 0x7e) || b >= 0x80
}

const fn target_byte(b: u8) -> bool {
    b >= 0x21 && b <= 0x7e
}

/// RFC 9110 §5.6.2 `tchar`.
static TCHAR: [bool; 256] = byte_table!(tchar);

/// RFC 9110 §5.5 field-value bytes: visible, space, tab, obs-text.
static VALUE: [bool; 256] = byte_table!(value_byte);

/// Request-target bytes: visible ASCII.
static TARGET: [bool; 256] = byte_table!(target_byte);

fn all_in(bytes: &[u8], class: &[bool; 256]) -> bool {
    bytes.iter().all(|b| class[usize::from(*b)])
}

const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether some byte of `w` is below `n` (`n` ≤ 0x80; bytes ≥ 0x80 never
/// count). Exact as an "any" test: a false hit needs a true one below it.
const fn has_less(w: u64, n: u8) -> bool {
    w.wrapping_sub(LOW.wrapping_mul(n as u64)) & !w & HIGH != 0
}

/// Whether some byte of `w` equals `b`.
const fn has_byte(w: u64, b: u8) -> bool {
    has_less(w ^ LOW.wrapping_mul(b as u64), 1)
}

/// `all_in(bytes, &VALUE)`, eight bytes at a time where it can: a word with
/// no byte below 0x20 and no DEL is all value bytes (obs-text included);
/// only a word with a tab (or a bad byte) is looked at byte by byte.
fn all_value_bytes(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let w = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        if (has_less(w, 0x20) || has_byte(w, 0x7f)) && !all_in(word, &VALUE) {
            return false;
        }
    }
    all_in(words.remainder(), &VALUE)
}

/// `all_in(bytes, &TARGET)`, eight bytes at a time: visible ASCII only.
fn all_target_bytes(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let w = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        if w & HIGH != 0 || has_less(w, 0x21) || has_byte(w, 0x7f) {
            return false;
        }
    }
    all_in(words.remainder(), &TARGET)
}

/// What the fields said about framing and routing.
#[derive(Default)]
struct Fields<'a> {
    hosts: usize,
    host: &'a [u8],
    content_length: Option<u64>,
    content_lengths: usize,
    transfer_encodings: usize,
    chunked: bool,
    connection_upgrade: bool,
    upgrade: bool,
    expects_continue: bool,
}

impl<'a> Fields<'a> {
    fn add(&mut self, line: &'a [u8]) -> Result<(), Refusal> {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Refusal::bad("obsolete line folding in the request head"));
        }
        let colon =
            memchr::memchr(b':', line).ok_or(Refusal::bad("header field without a colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !all_in(name, &TCHAR) {
            return Err(Refusal::bad("malformed header field name"));
        }
        let raw_value = &line[colon + 1..];
        let value = trim_ows(raw_value);
        if !all_value_bytes(value) {
            return Err(Refusal::bad("control character in a header field value"));
        }
        // Only a handful of fields matter; the length check keeps the common
        // case to one comparison.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.hosts += 1;
                self.host = value;
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                self.expects_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            10 if name.eq_ignore_ascii_case(b"connection")
                && value
                    .split(|b| *b == b',')
                    .any(|token| trim_ows(token).eq_ignore_ascii_case(b"upgrade")) =>
            {
                self.connection_upgrade = true;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                check_framing_spacing(raw_value)?;
                self.content_lengths += 1;
                self.content_length = Some(parse_content_length(value)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                check_framing_spacing(raw_value)?;
                self.transfer_encodings += 1;
                self.chunked = check_transfer_encoding(value)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self, line: &RequestLine<'_>) -> Result<Head, Refusal> {
        if self.hosts > 1 {
            return Err(Refusal::bad("more than one Host field"));
        }
        if self.hosts == 0 && line.version == Version::Http11 {
            return Err(Refusal::bad("HTTP/1.1 request without Host"));
        }
        if let Some(authority) = line.authority
            && self.hosts == 1
            && !authority.eq_ignore_ascii_case(self.host)
        {
            return Err(Refusal::bad(
                "the request target's authority differs from Host",
            ));
        }
        if self.hosts == 1 && self.host.is_empty() && line.authority.is_none() {
            return Err(Refusal::bad("empty Host field"));
        }
        if self.content_lengths > 1 {
            return Err(Refusal::bad("more than one Content-Length field"));
        }
        if self.transfer_encodings > 1 {
            return Err(Refusal::bad("more than one Transfer-Encoding field"));
        }
        let framing = match (self.transfer_encodings, self.content_length) {
            (1, Some(_)) => {
                return Err(Refusal::bad("both Content-Length and Transfer-Encoding"));
            }
            (1, None) if line.version == Version::Http10 => {
                return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            (1, None) if self.chunked => Framing::Chunked,
            (_, Some(0)) | (_, None) => Framing::Empty,
            (_, Some(n)) => Framing::Length(n),
        };
        Ok(Head {
            framing,
            upgrade: self.upgrade && self.connection_upgrade,
            expects_continue: self.expects_continue,
        })
    }
}

/// The framing fields allow what every parser reads the same way: at most
/// spaces before the value, nothing after it, no tabs. (Other whitespace is
/// valid HTTP, but a peer that trims it differently would frame the body
/// differently.)
fn check_framing_spacing(raw: &[u8]) -> Result<(), Refusal> {
    if raw.contains(&b'\t') || matches!(raw.last(), Some(b' ')) {
        return Err(Refusal::bad("odd whitespace in a framing field"));
    }
    Ok(())
}

fn parse_content_length(value: &[u8]) -> Result<u64, Refusal> {
    crate::framing::content_length(value).ok_or(Refusal::bad("malformed Content-Length"))
}

/// Only exactly `chunked` is accepted; any other coding is not implemented
/// (501), and lists, odd case or odd spacing are refused as ambiguous (400):
/// a peer might read them differently.
fn check_transfer_encoding(value: &[u8]) -> Result<bool, Refusal> {
    if value == b"chunked" {
        return Ok(true);
    }
    let token_only = !value.is_empty() && all_in(value, &TCHAR);
    if token_only && !value.eq_ignore_ascii_case(b"chunked") {
        return Err(Refusal {
            status: StatusCode::NOT_IMPLEMENTED,
            reason: "unsupported transfer coding",
        });
    }
    Err(Refusal::bad("ambiguous Transfer-Encoding"))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod word_tests {
    use super::*;

    #[test]
    fn word_checks_agree_with_the_tables_on_every_byte_in_every_position() {
        for b in 0..=255u8 {
            for at in 0..11 {
                let mut bytes = vec![b'a'; 11];
                bytes[at] = b;
                assert_eq!(
                    all_value_bytes(&bytes),
                    all_in(&bytes, &VALUE),
                    "{b:#x} at {at}"
                );
                assert_eq!(
                    all_target_bytes(&bytes),
                    all_in(&bytes, &TARGET),
                    "{b:#x} at {at}"
                );
            }
        }
        // Two odd bytes in one word, and a borrow across bytes.
        assert!(!all_value_bytes(b"ab\x00\x01cdefgh"));
        assert!(all_value_bytes(b"\t\x80\xff !~a\t"));
        assert!(!all_target_bytes(b"/\x20\x21abcdefg"));
    }
}
