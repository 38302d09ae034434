//! The store: byte bound, maximum object size, teeing (clean end, abort,
//! error, oversize), freshening from a 304, and coalescing.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;

fn store(capacity: u64, max_object: u64) -> Arc<CacheStore> {
    Arc::new(CacheStore::new(CacheStoreConfig {
        capacity_bytes: capacity,
        max_object_bytes: max_object,
    }))
}

fn directive(s: &Arc<CacheStore>, key: &str) -> StoreDirective {
    let mut headers = HeaderMap::new();
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    headers.insert("connection", HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    StoreDirective::new(
        Arc::clone(s),
        key.as_bytes(),
        StatusCode::OK,
        headers,
        Bytes::from_static(b"meta"),
        Duration::from_secs(60),
        0,
    )
}

type Chunks = Vec<Result<Frame<Bytes>, Infallible>>;
type ChunkBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn chunks(parts: &[&'static str]) -> ChunkBody {
    let frames: Chunks = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn tee_stores_the_whole_body_when_it_ends_cleanly() {
    let s = store(1 << 20, 1 << 20);
    let body = directive(&s, "k").tee(chunks(&["hel", "lo ", "world"]));
    let got = body.collect().await.unwrap().to_bytes();
    assert_eq!(got, "hello world");
    let e = s.lookup(b"k").unwrap();
    assert_eq!(e.body, "hello world");
    assert_eq!(e.status, StatusCode::OK);
    assert_eq!(&e.meta[..], b"meta");
    assert!(e.headers.get("etag").is_some());
    assert!(e.headers.get("x-hop").is_none() && e.headers.get("connection").is_none());
    // A plain value under another key does not look like a response.
    s.put_value(b"v", Bytes::from_static(b"x"), Duration::from_secs(5));
    assert!(s.lookup(b"v").is_none());
    assert_eq!(s.get_value(b"v").as_deref(), Some(&b"x"[..]));
}

#[tokio::test]
async fn tee_does_not_store_an_oversized_or_abandoned_or_failed_body() {
    let s = store(1 << 20, 8);
    let got = directive(&s, "big")
        .tee(chunks(&["12345", "67890"]))
        .collect()
        .await
        .unwrap();
    assert_eq!(
        got.to_bytes(),
        "1234567890",
        "the client still gets all of it"
    );
    assert!(s.lookup(b"big").is_none());

    let s = store(1 << 20, 1 << 20);
    let mut body = directive(&s, "gone").tee(chunks(&["a", "b"]));
    let _first = body.frame().await;
    drop(body);
    assert!(s.lookup(b"gone").is_none());

    let frames: Vec<Result<Frame<Bytes>, &'static str>> =
        vec![Ok(Frame::data(Bytes::from_static(b"a"))), Err("reset")];
    let body = directive(&s, "err").tee(StreamBody::new(futures_util::stream::iter(frames)));
    assert!(body.collect().await.is_err());
    assert!(s.lookup(b"err").is_none());

    // A body shorter than its Content-Length is not stored.
    let mut d = directive(&s, "short");
    d.headers
        .insert("content-length", HeaderValue::from_static("10"));
    let _ = d.tee(chunks(&["abc"])).collect().await;
    assert!(s.lookup(b"short").is_none());
}

#[tokio::test]
async fn an_empty_body_is_stored_without_being_polled() {
    let s = store(1 << 20, 1 << 20);
    let body = directive(&s, "empty").tee(Full::new(Bytes::new()));
    assert!(!body.is_storing());
    assert_eq!(s.lookup(b"empty").unwrap().body.len(), 0);
}

#[test]
fn the_store_stays_within_its_byte_budget_and_object_limit() {
    let s = store(64 * 1024, 16 * 1024);
    let body = Bytes::from(vec![b'x'; 4096]);
    for i in 0..100 {
        assert!(directive(&s, &format!("k{i}")).store_full(body.clone()));
    }
    s.sync();
    assert!(s.weighted_size() <= 64 * 1024, "{}", s.weighted_size());
    assert!(s.entry_count() < 100 && s.entry_count() > 0);
    assert!(!directive(&s, "huge").store_full(Bytes::from(vec![0u8; 16 * 1024 + 1])));
    assert!(s.lookup(b"huge").is_none());
}

#[test]
fn freshen_merges_the_304_fields_and_keeps_the_body() {
    let s = store(1 << 20, 1 << 20);
    assert!(directive(&s, "k").store_full(Bytes::from_static(b"body")));
    let base = s.lookup(b"k").unwrap();
    let mut nm = HeaderMap::new();
    nm.insert("etag", HeaderValue::from_static("\"v2\""));
    nm.insert("content-length", HeaderValue::from_static("0"));
    nm.insert("cache-control", HeaderValue::from_static("max-age=5"));
    let fresh = s.freshen(
        b"k",
        &base,
        &nm,
        Bytes::from_static(b"m2"),
        Duration::from_secs(9),
    );
    assert_eq!(fresh.body, "body");
    assert_eq!(fresh.headers["etag"], "\"v2\"");
    assert_eq!(fresh.headers["cache-control"], "max-age=5");
    assert!(fresh.headers.get("content-length").is_none());
    assert_eq!(&s.lookup(b"k").unwrap().meta[..], b"m2");
    assert!(s.invalidate(b"k"));
    assert!(!s.invalidate(b"k"));
}

#[tokio::test]
async fn one_leader_per_key_and_followers_wake_when_it_stores() {
    let s = store(1 << 20, 1 << 20);
    let Acquired::Leader(guard) = s.acquire(b"k") else {
        panic!("first is the leader");
    };
    assert!(matches!(s.acquire(b"other"), Acquired::Leader(_)));
    let followers: Vec<_> = (0..5)
        .map(|_| match s.acquire(b"k") {
            Acquired::Follower(w) => {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let done = w.with_limit(Duration::from_secs(5)).wait().await;
                    (done, s.lookup(b"k").is_some())
                })
            }
            Acquired::Leader(_) => panic!("a second leader"),
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut d = directive(&s, "k");
    d.lock = Some(guard);
    assert!(d.store_full(Bytes::from_static(b"x")));
    for f in followers {
        assert_eq!(
            f.await.unwrap(),
            (true, true),
            "woke after the entry was in"
        );
    }
    // The key is free again.
    assert!(matches!(s.acquire(b"k"), Acquired::Leader(_)));
}

#[tokio::test]
async fn a_follower_gives_up_after_its_limit() {
    let s = store(1 << 20, 1 << 20);
    let _leader = s.acquire(b"k");
    let Acquired::Follower(w) = s.acquire(b"k") else {
        panic!("expected a follower");
    };
    assert!(!w.with_limit(Duration::from_millis(10)).wait().await);
}
