//! Message heads of HTTP/1.1 to upstreams: the request head written from
//! the proxy's request, the response head read with `httparse`, and how the
//! response's body is delimited (RFC 9112 §6.3).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::Error;
use crate::framing;

/// Most header fields a response head may have (hyper's limit too).
pub(super) const MAX_HEADERS: usize = 100;

/// Largest response head accepted (hyper's default read buffer limit).
pub(super) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length`: this many bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What is known of the request body when its head is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum BodyLength {
    /// The body has ended already.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Not known until it ends.
    Unknown,
}

/// Writes the request head for `method`, `target` (origin form) and
/// `headers` into `out`, adding `Host` when the request has none and the
/// body's framing when its headers do not say it. Returns the framing.
pub(super) fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: &str,
    body: BodyLength,
    out: &mut Vec<u8>,
) -> Result<RequestFraming, Error> {
    out.reserve(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        // The proxy removed hop-by-hop fields; its own framing is decided here.
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match body {
        BodyLength::Empty => RequestFraming::Empty,
        // A length the client declared (and its body was held to) stands.
        _ if headers.contains_key(header::CONTENT_LENGTH) => {
            RequestFraming::Length(content_length(headers)?.ok_or(Error::RequestLength)?)
        }
        BodyLength::Known(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
            RequestFraming::Length(length)
        }
        BodyLength::Unknown => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            RequestFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A response head, parsed.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection may carry another exchange after this one.
    pub keep_alive: bool,
}

/// Parses a complete response head at the start of `buf` and removes it;
/// `Ok(None)` when more bytes are needed. `head_request` tells that the
/// response has no body whatever its headers say.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised: filling 100 empty fields costs more than parsing
    // a typical head.
    let mut raw = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut raw,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(error) => return Err(Error::BadHead(error)),
    };
    let code = response.code.unwrap_or_default();
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each field sits in the head (name at, name length, value at,
    // value length), so the values can be slices of one shared buffer once
    // the parser's borrow of it has ended. Heads are under 4 GiB.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = response.headers.len();
    let at = |slice: &[u8]| (slice.as_ptr() as usize - base) as u32;
    for (field, raw) in fields.iter_mut().zip(response.headers.iter()) {
        *field = (
            at(raw.name.as_bytes()),
            raw.name.len() as u32,
            at(raw.value),
            raw.value.len() as u32,
        );
    }
    let head: Bytes = buf.split_to(length).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Error::BadStatus(code))?;
    let mut headers = HeaderMap::with_capacity(count);
    for &(name_at, name_len, value_at, value_len) in &fields[..count] {
        let (name_at, value_at) = (name_at as usize, value_at as usize);
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len as usize])
            .map_err(|_| Error::BadField)?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len as usize))
                .map_err(|_| Error::BadField)?;
        headers.append(name, value);
    }
    // An HTTP/1.0 message with a transfer coding has faulty framing
    // (RFC 9112 §6.1): read as the coding says, then the connection closed.
    let faulty = version == Version::HTTP_10 && headers.contains_key(header::TRANSFER_ENCODING);
    let (framing, delimited) = response_framing(status, head_request, &mut headers)?;
    let keep_alive = delimited && !faulty && persistent(version, &headers);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The body's framing, and whether the connection can be reused after it
/// as far as framing goes. A chunked body's `Content-Length`, if any, is
/// removed (it is not the length of what the client will get) and the
/// connection is not reused: a message with both is a smuggling attempt or
/// a broken server (RFC 9112 §6.3).
fn response_framing(
    status: StatusCode,
    head_request: bool,
    headers: &mut HeaderMap,
) -> Result<(ResponseFraming, bool), Error> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        let had_length = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(if chunked_last {
            (ResponseFraming::Chunked, !had_length)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    match content_length(headers)? {
        Some(length) => Ok((ResponseFraming::Length(length), true)),
        None => Ok((ResponseFraming::UntilClose, false)),
    }
}

/// The `Content-Length` of a message: every value (and every item of a
/// list) must be the same run of digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let length = framing::content_length(item.trim_ascii()).ok_or(Error::BadLength)?;
            if found.is_some_and(|seen| seen != length) {
                return Err(Error::BadLength);
            }
            found = Some(length);
        }
    }
    Ok(found)
}

/// Whether the upstream lets the connection stay open after this response.
fn persistent(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_10 {
        connection_has_token(headers, "keep-alive")
    } else {
        !connection_has_token(headers, "close")
    }
}

/// Whether a message's `Connection` field lists `token`.
pub(crate) fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a trailer section (without its final empty line's CRLF handled
/// by the caller: `section` ends with the empty line).
pub(super) fn parse_trailers(section: &[u8]) -> Result<HeaderMap, Error> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(section, &mut raw) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => {
            return Err(Error::BadChunk(framing::ChunkError(
                "incomplete trailer section",
            )));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(error) => return Err(Error::BadHead(error)),
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Error::BadField)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| Error::BadField)?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ResponseHead>, Error> {
        parse_response(&mut BytesMut::from(text), false)
    }

    fn head(text: &str) -> ResponseHead {
        match parse(text) {
            Ok(Some(head)) => head,
            other => panic!("{text:?} did not parse: {other:?}"),
        }
    }

    #[test]
    fn a_head_and_what_follows_it_are_told_apart() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello");
        let parsed = parse_response(&mut buf, false).unwrap().unwrap();
        assert_eq!(parsed.status, StatusCode::OK);
        assert_eq!(parsed.framing, ResponseFraming::Length(5));
        assert!(parsed.keep_alive);
        assert_eq!(parsed.headers["x-a"], "1");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn a_partial_head_asks_for_more_and_an_endless_one_is_refused() {
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(parse(&endless), Err(Error::HeadTooLarge)));
        let whole_but_huge = format!("{endless}\r\n\r\n");
        assert!(matches!(parse(&whole_but_huge), Err(Error::HeadTooLarge)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(parse(&text), Err(Error::HeadTooLarge)));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            "SMTP 200 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing, ResponseFraming::Chunked);
        assert!(chunked.keep_alive);
        let both =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(both.framing, ResponseFraming::Chunked);
        assert!(!both.keep_alive && !both.headers.contains_key(header::CONTENT_LENGTH));
        let not_chunked = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(not_chunked.framing, ResponseFraming::UntilClose);
        assert!(!not_chunked.keep_alive);
        let unframed = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(unframed.framing, ResponseFraming::UntilClose);
        assert!(!unframed.keep_alive);
        for empty in [
            "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        ] {
            assert_eq!(head(empty).framing, ResponseFraming::Empty, "{empty:?}");
        }
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n");
        let to_head = parse_response(&mut buf, true).unwrap().unwrap();
        assert_eq!(to_head.framing, ResponseFraming::Empty);
    }

    #[test]
    fn content_lengths_must_agree_and_be_digits() {
        let same = head("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\ncontent-length: 4\r\n\r\n");
        assert_eq!(same.framing, ResponseFraming::Length(4));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(matches!(parse(bad), Err(Error::BadLength)), "{bad:?}");
        }
    }

    #[test]
    fn persistence_follows_version_and_connection() {
        assert!(
            !head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: x, Close\r\n\r\n")
                .keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
                .keep_alive
        );
        let coded =
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n";
        assert!(
            !head(coded).keep_alive,
            "faulty framing closes the connection"
        );
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        let framing = encode_request(
            &Method::GET,
            "/p?q",
            &headers,
            "up:80",
            BodyLength::Empty,
            &mut out,
        );
        assert_eq!(framing.unwrap(), RequestFraming::Empty);
        assert_eq!(out, b"GET /p?q HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\n\r\n");

        out.clear();
        headers.insert(header::HOST, HeaderValue::from_static("site"));
        let framing = encode_request(
            &Method::POST,
            "/",
            &headers,
            "up",
            BodyLength::Known(12),
            &mut out,
        );
        assert_eq!(framing.unwrap(), RequestFraming::Length(12));
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nx-a: 1\r\nhost: site\r\ncontent-length: 12\r\n\r\n"
        );

        out.clear();
        let framing = encode_request(
            &Method::PUT,
            "/",
            &headers,
            "up",
            BodyLength::Unknown,
            &mut out,
        );
        assert_eq!(framing.unwrap(), RequestFraming::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));

        out.clear();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let framing = encode_request(
            &Method::PUT,
            "/",
            &headers,
            "up",
            BodyLength::Unknown,
            &mut out,
        );
        assert_eq!(framing.unwrap(), RequestFraming::Length(3));
    }

    #[test]
    fn trailers_are_fields() {
        let trailers = parse_trailers(b"x-sum: 9\r\nx-b: 2\r\n\r\n").unwrap();
        assert_eq!(trailers["x-sum"], "9");
        assert!(parse_trailers(b"x-sum 9\r\n\r\n").is_err());
    }
}
