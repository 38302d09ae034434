//! `/debug/pprof/profile?seconds=N[&format=pb]`: a CPU profile of the whole
//! process (all worker threads) taken with the `pprof` crate's sampling
//! profiler, as a flamegraph SVG (default) or pprof protobuf. Admin listener
//! only; one profile at a time.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use pprof::protos::Message as _;

/// The longest profile one request may ask for.
pub const MAX_SECONDS: u64 = 60;
/// Without `seconds=`.
pub const DEFAULT_SECONDS: u64 = 10;
/// Samples per second (a prime, so sampling does not beat with timers).
const FREQUENCY: i32 = 99;

/// Why a profile request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRequestError {
    #[error("seconds must be a whole number from 1 to {MAX_SECONDS}, not {0:?}")]
    Seconds(String),
    #[error("format must be \"svg\" (flamegraph) or \"pb\" (pprof protobuf), not {0:?}")]
    Format(String),
    #[error("unknown query parameter {0:?}")]
    Unknown(String),
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Flamegraph,
    Protobuf,
}

/// Parses the query string.
pub fn parse_query(query: Option<&str>) -> Result<(Duration, Format), ProfileRequestError> {
    let mut seconds = DEFAULT_SECONDS;
    let mut format = Format::Flamegraph;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "seconds" => {
                seconds = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or_else(|| ProfileRequestError::Seconds(value.to_owned()))?;
            }
            "format" => {
                format = match value {
                    "svg" | "flamegraph" => Format::Flamegraph,
                    "pb" | "proto" | "protobuf" => Format::Protobuf,
                    other => return Err(ProfileRequestError::Format(other.to_owned())),
                };
            }
            other => return Err(ProfileRequestError::Unknown(other.to_owned())),
        }
    }
    Ok((Duration::from_secs(seconds), format))
}

/// Profiles for the requested time and answers the profile.
pub async fn profile(query: Option<&str>) -> Response<Full<Bytes>> {
    let (duration, format) = match parse_query(query) {
        Ok(parsed) => parsed,
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(guard) => guard,
        // pprof allows one profiler per process.
        Err(error) => {
            return plain(
                StatusCode::CONFLICT,
                format!("cannot start the profiler (is another profile running?): {error}\n"),
            );
        }
    };
    tokio::time::sleep(duration).await;
    let report = match guard.report().build() {
        Ok(report) => report,
        Err(error) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot build the profile: {error}\n"),
            );
        }
    };
    drop(guard);
    let (body, content_type) = match format {
        Format::Flamegraph => {
            let mut svg = Vec::new();
            if let Err(error) = report.flamegraph(&mut svg) {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot draw the flamegraph: {error}\n"),
                );
            }
            (svg, "image/svg+xml")
        }
        Format::Protobuf => {
            let encoded = report.pprof().map(|profile| profile.encode_to_vec());
            match encoded {
                Ok(bytes) => (bytes, "application/octet-stream"),
                Err(error) => {
                    return plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot encode the profile: {error}\n"),
                    );
                }
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_bounded_and_checked() {
        assert_eq!(
            parse_query(None),
            Ok((Duration::from_secs(DEFAULT_SECONDS), Format::Flamegraph))
        );
        assert_eq!(
            parse_query(Some("seconds=2&format=pb")),
            Ok((Duration::from_secs(2), Format::Protobuf))
        );
        for bad in [
            "seconds=0",
            "seconds=61",
            "seconds=x",
            "seconds=-1",
            "format=gif",
            "x=1",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
