//! The Weir plugin ABI: every constant, code and layout shared by the host
//! (`weir-proxy`) and the guest SDK (`weir-sdk`), so the two cannot drift.
//! The reference page is `sdk/ABI.md`; this crate is its executable half.
//!
//! The ABI is plain core WebAssembly: exports and imports take and return
//! `i32`/`i64`/`f64`, and anything larger travels in buffers that live in the
//! guest's linear memory. The host only ever reads or writes a guest buffer
//! during the import call that names it, so the guest owns all of its memory.
#![no_std]

/// The ABI version this crate describes. A plugin exports the version it was
/// built against; the host refuses any other (exact match: the ABI is young
/// and every change so far would break one side).
pub const ABI_VERSION: u32 = 1;

/// Names of the functions (and memory) a plugin exports.
///
/// `ABI_VERSION`, `CONFIGURE` and `MEMORY` are required; every other hook is
/// optional and the host calls only the hooks that are exported.
pub mod exports {
    /// `() -> i32`: the ABI version the plugin was built for.
    pub const ABI_VERSION: &str = "weir_abi_version";
    /// `(config_len: i32) -> i32`: read the config with `input_read`, return
    /// [`crate::status::OK`] or [`crate::status::REJECTED`] (message via `output_write`).
    pub const CONFIGURE: &str = "weir_configure";
    /// `(request_id: i64, method: i32, attempt: i32) -> i32`: a [`crate::RequestDecision`].
    pub const ON_REQUEST: &str = "weir_on_request";
    /// `(request_id: i64, attempt: i32, endpoints: i32, tried: i32) -> i64`:
    /// the chosen endpoint id, or [`crate::SELECT_DEFAULT`] to let the host choose.
    pub const SELECT: &str = "weir_select";
    /// `(request_id: i64, attempt: i32, status: i32, error: i32, endpoint: i32, latency_us: i64) -> i64`:
    /// a [`crate::ResponseDecision`] encoded with [`crate::ResponseDecision::encode`].
    pub const ON_RESPONSE: &str = "weir_on_response";
    /// `(request_id: i64, status: i32, error: i32) -> ()`: the request is over.
    pub const ON_END: &str = "weir_on_end";
    /// `() -> i32`: write a JSON status with `output_write`.
    pub const STATUS: &str = "weir_status";
    /// `() -> i32`: write opaque state bytes with `output_write`.
    pub const SNAPSHOT: &str = "weir_snapshot";
    /// `(len: i32) -> i32`: read the previous version's snapshot with `input_read`.
    pub const RESTORE: &str = "weir_restore";
    /// The guest's linear memory, where every buffer lives.
    pub const MEMORY: &str = "memory";
    /// Optional, `() -> i32`, never called: its presence declares that the
    /// plugin guards access (authentication, authorisation), so its failures
    /// answer 503 on every route, whatever the route's `on_plugin_error`.
    pub const FAIL_CLOSED: &str = "weir_fail_closed";
}

/// The import module every host function lives in.
pub const IMPORT_MODULE: &str = "weir";

/// Names of the host functions (module [`IMPORT_MODULE`]). Signatures are in
/// `sdk/ABI.md`; every one returns a [`status`] code or a length, never traps.
pub mod imports {
    /// `() -> i64`: monotonic nanoseconds since the host started.
    pub const CLOCK_NS: &str = "clock_ns";
    /// `() -> i64`: 64 random bits (not cryptographic).
    pub const RANDOM: &str = "random";
    /// `(level: i32, ptr: i32, len: i32) -> i32`: log a UTF-8 message.
    pub const LOG: &str = "log";
    /// `(ptr: i32, cap: i32) -> i32`: copy the call's input bytes; returns the full length.
    pub const INPUT_READ: &str = "input_read";
    /// `(ptr: i32, len: i32) -> i32`: hand the host this call's output bytes.
    pub const OUTPUT_WRITE: &str = "output_write";
    /// `(field: i32, ptr: i32, cap: i32) -> i32`: copy a request field ([`crate::RequestField`]).
    pub const REQUEST_FIELD: &str = "request_field";
    /// `(map: i32, name_ptr: i32, name_len: i32, ptr: i32, cap: i32) -> i32`: copy a header value.
    pub const HEADER_GET: &str = "header_get";
    /// `(map: i32, name_ptr: i32, name_len: i32, value_ptr: i32, value_len: i32, mode: i32) -> i32`.
    pub const HEADER_SET: &str = "header_set";
    /// `(map: i32, name_ptr: i32, name_len: i32) -> i32`: remove every value of a header.
    pub const HEADER_REMOVE: &str = "header_remove";
    /// `(timeout_ms: i64) -> i32`: this attempt's upstream timeout (on_request only).
    pub const SET_ATTEMPT_TIMEOUT: &str = "set_attempt_timeout";
    /// `(status: i32, headers_ptr: i32, headers_len: i32, body_ptr: i32, body_len: i32) -> i32`.
    pub const ANSWER: &str = "answer";
    /// `(ptr: i32, cap: i32) -> i32`: copy the endpoints for `select`, [`crate::ENDPOINT_SIZE`] bytes each.
    pub const ENDPOINTS_READ: &str = "endpoints_read";
    /// `(ptr: i32, cap: i32) -> i32`: copy the ids already tried, 4 bytes each.
    pub const TRIED_READ: &str = "tried_read";
    /// `(endpoint_id: i32, ptr: i32) -> i32`: copy one endpoint's stats.
    pub const ENDPOINT_STATS: &str = "endpoint_stats";
    /// `(kind: i32, name_ptr: i32, name_len: i32) -> i32`: define a metric, returns its id.
    pub const METRIC_DEFINE: &str = "metric_define";
    /// `(id: i32, value: f64) -> i32`: add to a counter, set a gauge, observe a histogram.
    pub const METRIC_RECORD: &str = "metric_record";
    /// `(key_ptr: i32, key_len: i32, ptr: i32, cap: i32) -> i32`: copy a cached value.
    pub const CACHE_GET: &str = "cache_get";
    /// `(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32, ttl_ms: i64) -> i32`.
    pub const CACHE_PUT: &str = "cache_put";
    /// `(name_ptr: i32, name_len: i32, delta: i64, out_ptr: i32) -> i32`: add to a shared counter.
    pub const COUNTER_ADD: &str = "counter_add";
    /// `() -> i64`: wall-clock milliseconds since the Unix epoch (for HTTP dates).
    pub const TIME_UNIX_MS: &str = "time_unix_ms";
    /// `(key_ptr: i32, key_len: i32, ptr: i32, cap: i32) -> i32`: look up a stored
    /// response; copies a [`crate::cache::EntryInfo`] and the plugin's metadata.
    pub const CACHE_LOOKUP: &str = "cache_lookup";
    /// `(key_ptr: i32, key_len: i32, headers_ptr: i32, headers_len: i32, flags: i32) -> i32`:
    /// answer with a stored response.
    pub const CACHE_SERVE: &str = "cache_serve";
    /// `(key_ptr: i32, key_len: i32, meta_ptr: i32, meta_len: i32, keep_ms: i64, max_bytes: i64) -> i32`:
    /// store this response (its body is teed by the host).
    pub const CACHE_STORE: &str = "cache_store";
    /// `(key_ptr: i32, key_len: i32, meta_ptr: i32, meta_len: i32, keep_ms: i64) -> i32`:
    /// update a stored response from a 304's headers.
    pub const CACHE_FRESHEN: &str = "cache_freshen";
    /// `(key_ptr: i32, key_len: i32) -> i32`: remove a stored response or value.
    pub const CACHE_INVALIDATE: &str = "cache_invalidate";
    /// `(key_ptr: i32, key_len: i32, wait_ms: i64) -> i32`: one fetch per key in
    /// flight; returns a [`crate::cache::Lock`] code.
    pub const CACHE_LOCK: &str = "cache_lock";
    /// `(ptr: i32) -> i32`: writes the store's entry count and weighted bytes (2 × `u64` LE).
    pub const CACHE_STATS: &str = "cache_stats";
    /// `(name_ptr: i32, name_len: i32, delta: i64, ttl_ms: i64, out_ptr: i32) -> i32`: add to a
    /// shared counter that expires `ttl_ms` after it was created (windowed limits).
    pub const COUNTER_ADD_TTL: &str = "counter_add_ttl";
    /// `(endpoint_id: i32, unhealthy_for_ms: i64) -> i32`: passive ejection; `0` clears a mark.
    pub const ENDPOINT_MARK: &str = "endpoint_mark";
    /// `() -> i32`: the request's [`crate::request_flags`].
    pub const REQUEST_FLAGS: &str = "request_flags";
    /// `(ms_from_now: i64) -> i32`: set (shorten) the request's overall deadline (on_request).
    pub const DEADLINE_SET: &str = "deadline_set";
    /// `() -> i64`: milliseconds left before the request's deadline, or `NOT_FOUND`.
    pub const DEADLINE_REMAINING: &str = "deadline_remaining";
    /// `(endpoint_id: i32, field: i32, key_ptr: i32, key_len: i32, ptr: i32, cap: i32) -> i32`:
    /// an [`crate::EndpointField`] of an endpoint of the route's upstream
    /// (`key` names the metadata entry; empty otherwise); the value's length,
    /// or `NOT_FOUND`. Added within ABI version 1: a module that imports it
    /// needs a host that has it.
    pub const ENDPOINT_FIELD: &str = "endpoint_field";
}

/// Bits of the value `request_flags` returns.
pub mod request_flags {
    /// The request body outgrew the route's replay buffer (or was streamed
    /// past it): it cannot be sent again, so the request must not be retried.
    pub const BODY_NOT_REPLAYABLE: i32 = 0x1;
}

/// Status codes returned by host functions (and by `configure`/`restore`).
/// Non-negative values are success (`OK` or a length); negative are errors.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// The header, key or endpoint does not exist.
    pub const NOT_FOUND: i32 = -1;
    /// A pointer/length is outside guest memory, or a name/value is invalid.
    pub const BAD_ARGUMENT: i32 = -2;
    /// The call is not allowed in the current phase (e.g. setting a request
    /// header in `on_response`).
    pub const BAD_PHASE: i32 = -3;
    /// The value exceeds a host limit (answer body, cache value, log line).
    pub const TOO_LARGE: i32 = -4;
    /// The thing asked for is not there in this call (no response yet, no input).
    pub const UNAVAILABLE: i32 = -5;
    /// The plugin refused (from `configure`/`restore`).
    pub const REJECTED: i32 = -6;

    /// A short name for a status code, for error messages.
    pub const fn name(code: i32) -> &'static str {
        match code {
            OK => "ok",
            NOT_FOUND => "not found",
            BAD_ARGUMENT => "bad argument",
            BAD_PHASE => "not allowed in this phase",
            TOO_LARGE => "too large",
            UNAVAILABLE => "unavailable",
            REJECTED => "rejected",
            _ if code > 0 => "ok (length)",
            _ => "unknown status",
        }
    }
}

/// Limits the host enforces on guest-provided data.
pub mod limits {
    /// Largest local answer body, in bytes.
    pub const ANSWER_BODY_MAX: usize = 64 * 1024;
    /// Largest encoded answer header block, in bytes.
    pub const ANSWER_HEADERS_MAX: usize = 16 * 1024;
    /// Largest log message; longer ones are cut.
    pub const LOG_MAX: usize = 4 * 1024;
    /// Largest cache value, in bytes.
    pub const CACHE_VALUE_MAX: usize = 1024 * 1024;
    /// Largest `output_write` payload (status JSON, snapshot, reject message).
    pub const OUTPUT_MAX: usize = 1024 * 1024;
    /// Most metrics one instance may define.
    pub const METRICS_MAX: usize = 64;
    /// Largest cache key, in bytes.
    pub const CACHE_KEY_MAX: usize = 4 * 1024;
    /// Largest plugin metadata attached to a stored response, in bytes.
    pub const CACHE_META_MAX: usize = 4 * 1024;
    /// Longest a coalesced request waits for the fetch in flight, in milliseconds.
    pub const CACHE_WAIT_MAX_MS: u64 = 60_000;
    /// Most endpoint marks one instance may leave between two drains by the core.
    pub const MARKS_MAX: usize = 256;
}

/// Returned by `select` to let the host choose (round robin).
pub const SELECT_DEFAULT: i64 = -1;

/// Defines a `#[repr(i32)]` enum with a checked conversion from its code.
macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            /// The enum for a wire code, if it is one.
            pub const fn from_code(code: i32) -> Option<Self> {
                match code { $($n => Some(Self::$v),)* _ => None }
            }
            /// The wire code.
            pub const fn code(self) -> i32 { self as i32 }
        }
    };
}

code_enum! {
    /// The phase the host is in during a call; imports check it.
    Phase {
        /// No call in progress.
        Idle = 0,
        /// `configure`.
        Configure = 1,
        /// `on_request`: request headers may change, answers allowed.
        OnRequest = 2,
        /// `select`: request readable, endpoints readable.
        Select = 3,
        /// `on_response`: response headers may change, answers allowed.
        OnResponse = 4,
        /// `on_end`: nothing of the request is readable any more.
        OnEnd = 5,
        /// `status`.
        Status = 6,
        /// `snapshot`.
        Snapshot = 7,
        /// `restore`.
        Restore = 8,
    }
}

code_enum! {
    /// The request method, passed to `on_request` as a scalar.
    Method {
        /// Any method not listed (read it with `request_field`).
        Other = 0,
        /// GET
        Get = 1,
        /// HEAD
        Head = 2,
        /// POST
        Post = 3,
        /// PUT
        Put = 4,
        /// DELETE
        Delete = 5,
        /// CONNECT
        Connect = 6,
        /// OPTIONS
        Options = 7,
        /// TRACE
        Trace = 8,
        /// PATCH
        Patch = 9,
    }
}

code_enum! {
    /// What `on_request` returns.
    RequestDecision {
        /// Go on inwards.
        Continue = 0,
        /// Answer locally with what the plugin passed to `answer` in this call.
        Answer = 1,
    }
}

code_enum! {
    /// A field of the request line for `request_field`.
    RequestField {
        /// The path, without the query.
        Path = 0,
        /// The query string, without `?` (NOT_FOUND if absent).
        Query = 1,
        /// The method as text.
        Method = 2,
        /// The authority (host\[:port\]) (NOT_FOUND if absent).
        Authority = 3,
        /// The client's IP address as text (NOT_FOUND if unknown).
        ClientAddr = 4,
        /// `https` when the request came over TLS, else `http`. Added within
        /// ABI version 1: an older host answers BAD_ARGUMENT.
        Scheme = 5,
        /// The TLS server name (SNI) the client sent (NOT_FOUND without TLS
        /// or SNI).
        TlsServerName = 6,
        /// The ALPN protocol agreed (NOT_FOUND without TLS or ALPN).
        TlsAlpn = 7,
        /// The subject of the client's certificate, e.g. `CN=alice, O=ops`
        /// (NOT_FOUND without one).
        ClientCertSubject = 8,
        /// The DNS, email and URI names of the client's certificate, one per
        /// line (NOT_FOUND without a certificate).
        ClientCertNames = 9,
    }
}

code_enum! {
    /// Which header map `header_*` addresses.
    HeaderMap {
        /// The request's headers (writable in `on_request`).
        Request = 0,
        /// The response's headers (readable and writable in `on_response`;
        /// for a local answer, the answer's headers).
        Response = 1,
        /// The headers of the stored response this request last looked up
        /// with `cache_lookup` (read-only; `UNAVAILABLE` before a lookup).
        Cached = 2,
    }
}

/// Flag or-ed into `header_get`'s `map`: read every line of the field,
/// joined with `", "` (RFC 9110 §5.3), instead of the first line alone. For
/// list-valued fields such as `Cache-Control` or `Vary`, split over lines.
pub const HEADER_JOINED: i32 = 0x100;

code_enum! {
    /// How `header_set` treats existing values.
    SetMode {
        /// Replace every existing value.
        Replace = 0,
        /// Append another value.
        Append = 1,
    }
}

code_enum! {
    /// Classified upstream failure, as the `error` scalar of `on_response`.
    /// The low byte is the class; [`REACHED_UPSTREAM`] may be or-ed in.
    ErrorClass {
        /// No error: the outcome is a response.
        None = 0,
        /// The upstream refused the connection (nothing was sent).
        ConnectRefused = 1,
        /// Connecting timed out (nothing was sent).
        ConnectTimeout = 2,
        /// The connection was reset.
        Reset = 3,
        /// The attempt timed out waiting for the response head.
        Timeout = 4,
        /// The upstream broke the HTTP protocol.
        Protocol = 5,
    }
}

/// Flag or-ed into the `error` scalar: the request (or part of it) reached
/// the upstream, so retrying a non-idempotent request may repeat its effect.
pub const REACHED_UPSTREAM: i32 = 0x100;
/// Flag or-ed into the `error` scalar: the outcome is a local answer made by
/// a plugin (status is the answer's status).
pub const LOCAL_ANSWER: i32 = 0x200;
/// Flag or-ed into `on_end`'s `error`: the request did not finish normally
/// (the client went away or the request was dropped).
pub const CANCELLED: i32 = 0x400;
/// Flag or-ed into `on_end`'s `error`: the route's timeout ran out before
/// the request finished.
pub const TIMED_OUT: i32 = 0x800;
/// Flag or-ed into `on_end`'s `error`: the client's request was malformed
/// (a bad body, or a body that stalled); nothing about the upstream is
/// known from it, and no `on_response` ran for it.
pub const CLIENT_ERROR: i32 = 0x1000;
/// Mask of the class in the `error` scalar.
pub const ERROR_CLASS_MASK: i32 = 0xff;

code_enum! {
    /// Kind of a plugin-defined metric.
    MetricKind {
        /// Monotonic: `metric_record` adds.
        Counter = 0,
        /// `metric_record` sets.
        Gauge = 1,
        /// `metric_record` observes.
        Histogram = 2,
    }
}

code_enum! {
    /// Log level for `log`.
    LogLevel {
        /// Error.
        Error = 0,
        /// Warn.
        Warn = 1,
        /// Info.
        Info = 2,
        /// Debug.
        Debug = 3,
        /// Trace.
        Trace = 4,
    }
}

/// What `on_response` returns, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseDecision {
    /// Pass the outcome outwards unchanged.
    Pass,
    /// Replace it with the answer passed to `answer` in this call.
    Replace,
    /// Run everything inside this plugin again after `delay_ms`.
    Retry {
        /// Milliseconds to wait before the new attempt.
        delay_ms: u32,
    },
}

impl ResponseDecision {
    const PASS: i64 = 0;
    const REPLACE: i64 = 1;
    const RETRY: i64 = 2;

    /// Packs the decision into the `i64` `on_response` returns: kind in the low
    /// 8 bits, retry delay in milliseconds in the high 32.
    pub const fn encode(self) -> i64 {
        match self {
            Self::Pass => Self::PASS,
            Self::Replace => Self::REPLACE,
            Self::Retry { delay_ms } => Self::RETRY | ((delay_ms as i64) << 32),
        }
    }

    /// Unpacks what [`Self::encode`] made; `None` for anything else.
    pub const fn decode(raw: i64) -> Option<Self> {
        match raw & 0xff {
            Self::PASS => Some(Self::Pass),
            Self::REPLACE => Some(Self::Replace),
            Self::RETRY => Some(Self::Retry {
                delay_ms: (raw >> 32) as u32,
            }),
            _ => None,
        }
    }
}

/// The cache store's part of the ABI: the record `cache_lookup` writes, the
/// `cache_serve` flags and the `cache_lock` answers.
pub mod cache {
    /// Size in bytes of the fixed part of what `cache_lookup` writes.
    pub const INFO_SIZE: usize = 16;

    /// `cache_serve` flag: answer `304 Not Modified` with the stored headers
    /// and no body (the client's own conditional request matched).
    pub const SERVE_NOT_MODIFIED: i32 = 1;

    /// What `cache_lookup` writes: this 16-byte record, little-endian
    /// `resident_ms: u64, status: u32, body_len: u32`, followed by the
    /// metadata the plugin attached when it stored the response.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EntryInfo {
        /// Milliseconds since the response was stored (or last freshened).
        pub resident_ms: u64,
        /// The stored status.
        pub status: u16,
        /// Length of the stored body in bytes.
        pub body_len: u32,
    }

    impl EntryInfo {
        /// Writes the record in its wire layout.
        pub fn encode(&self, out: &mut [u8; INFO_SIZE]) {
            out[0..8].copy_from_slice(&self.resident_ms.to_le_bytes());
            out[8..12].copy_from_slice(&u32::from(self.status).to_le_bytes());
            out[12..16].copy_from_slice(&self.body_len.to_le_bytes());
        }

        /// Reads a record from its wire layout.
        pub fn decode(b: &[u8; INFO_SIZE]) -> Self {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&b[0..8]);
            Self {
                resident_ms: u64::from_le_bytes(ms),
                status: u16::try_from(u32::from_le_bytes([b[8], b[9], b[10], b[11]])).unwrap_or(0),
                body_len: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            }
        }
    }

    code_enum! {
        /// What `cache_lock` answers.
        Lock {
            /// No fetch for this key is in flight: this request fetches it and
            /// holds the lock until its response is stored or it ends.
            Leader = 0,
            /// Another request is fetching it. With `wait_ms > 0` the host
            /// waits for that fetch after `on_request` returns `Continue`,
            /// then runs `on_request` again for the same attempt.
            Follower = 1,
            /// This request already waited once: go upstream without the lock.
            Pass = 2,
        }
    }
}

code_enum! {
    /// A fact about an endpoint, from the config or discovery, for `endpoint_field`.
    EndpointField {
        /// `host:port` as configured (or discovered).
        Address = 0,
        /// The zone it runs in (NOT_FOUND if none was given).
        Zone = 1,
        /// The metadata entry named by the key (NOT_FOUND if absent).
        Metadata = 2,
    }
}

/// Size in bytes of one endpoint record (see [`EndpointRecord`]).
pub const ENDPOINT_SIZE: usize = 24;

/// One endpoint as laid out in guest memory by `endpoints_read` and
/// `endpoint_stats`: little-endian `id: u32, weight: u32, in_flight: u32,
/// healthy: u32 (0/1), latency_ewma_us: u64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The endpoint's id, stable for the upstream's lifetime.
    pub id: u32,
    /// Configured weight.
    pub weight: u32,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Whether health checks consider it healthy.
    pub healthy: bool,
    /// Exponentially weighted moving average of its latency, in microseconds.
    pub latency_ewma_us: u64,
}

impl EndpointRecord {
    /// Writes the record in its wire layout.
    pub fn encode(&self, out: &mut [u8; ENDPOINT_SIZE]) {
        out[0..4].copy_from_slice(&self.id.to_le_bytes());
        out[4..8].copy_from_slice(&self.weight.to_le_bytes());
        out[8..12].copy_from_slice(&self.in_flight.to_le_bytes());
        out[12..16].copy_from_slice(&u32::from(self.healthy).to_le_bytes());
        out[16..24].copy_from_slice(&self.latency_ewma_us.to_le_bytes());
    }

    /// Reads a record from its wire layout.
    pub fn decode(b: &[u8; ENDPOINT_SIZE]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut lat = [0u8; 8];
        lat.copy_from_slice(&b[16..24]);
        Self {
            id: u32_at(0),
            weight: u32_at(4),
            in_flight: u32_at(8),
            healthy: u32_at(12) != 0,
            latency_ewma_us: u64::from_le_bytes(lat),
        }
    }
}

/// The header block of a local answer: repeated entries of
/// `name_len: u32 LE, value_len: u32 LE, name bytes, value bytes`.
pub mod header_block {
    /// Appends one entry to `out` (the SDK's encoder).
    #[cfg(feature = "alloc")]
    pub fn push(out: &mut alloc::vec::Vec<u8>, name: &[u8], value: &[u8]) {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }

    /// Iterates over the entries of a block; yields `Err(())` once and stops
    /// if the block is malformed.
    pub fn iter(block: &[u8]) -> Iter<'_> {
        Iter { rest: block }
    }

    /// Iterator returned by [`iter`].
    #[derive(Debug)]
    pub struct Iter<'a> {
        rest: &'a [u8],
    }

    impl<'a> Iterator for Iter<'a> {
        type Item = Result<(&'a [u8], &'a [u8]), ()>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.rest.is_empty() {
                return None;
            }
            let entry = split_entry(self.rest);
            // A malformed block stops here, so the error is reported once.
            self.rest = match entry {
                Some((_, _, rest)) => rest,
                None => &[],
            };
            Some(entry.map(|(n, v, _)| (n, v)).ok_or(()))
        }
    }

    type Entry<'a> = (&'a [u8], &'a [u8], &'a [u8]);

    fn split_entry(b: &[u8]) -> Option<Entry<'_>> {
        let (lens, rest) = b.split_at_checked(8)?;
        let name_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
        let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
        let (name, rest) = rest.split_at_checked(name_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        Some((name, value, rest))
    }
}

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "rejection")]
pub mod rejection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_decision_round_trips() {
        for d in [
            ResponseDecision::Pass,
            ResponseDecision::Replace,
            ResponseDecision::Retry { delay_ms: 0 },
            ResponseDecision::Retry { delay_ms: u32::MAX },
        ] {
            assert_eq!(ResponseDecision::decode(d.encode()), Some(d));
        }
        assert_eq!(ResponseDecision::decode(7), None);
    }

    #[test]
    fn endpoint_record_round_trips() {
        let r = EndpointRecord {
            id: 7,
            weight: 3,
            in_flight: 12,
            healthy: true,
            latency_ewma_us: 1 << 40,
        };
        let mut buf = [0u8; ENDPOINT_SIZE];
        r.encode(&mut buf);
        assert_eq!(EndpointRecord::decode(&buf), r);
    }

    #[test]
    fn header_block_rejects_truncation() {
        let mut block = [0u8; 8 + 3 + 2];
        block[0..4].copy_from_slice(&3u32.to_le_bytes());
        block[4..8].copy_from_slice(&2u32.to_le_bytes());
        block[8..11].copy_from_slice(b"a-b");
        block[11..13].copy_from_slice(b"cd");
        let mut it = header_block::iter(&block);
        assert_eq!(it.next(), Some(Ok((&b"a-b"[..], &b"cd"[..]))));
        assert_eq!(it.next(), None);
        let mut it = header_block::iter(&block[..12]);
        assert_eq!(it.next(), Some(Err(())));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn codes_round_trip() {
        assert_eq!(ErrorClass::from_code(5), Some(ErrorClass::Protocol));
        assert_eq!(Method::from_code(99), None);
        assert_eq!(Phase::OnEnd.code(), 5);
    }
}
