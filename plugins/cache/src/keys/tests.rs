use super::*;

#[test]
fn primary_key_follows_the_settings() {
    let all = KeyConfig::default();
    assert_eq!(
        primary(&all, Some("Ex.COM"), "/a", Some("q=1")),
        "GET ex.com/a?q=1"
    );
    assert_eq!(primary(&all, None, "/a", None), "GET /a");
    let no_q = KeyConfig {
        host: true,
        query: false,
    };
    assert_eq!(primary(&no_q, Some("h"), "/a", Some("q=1")), "GET h/a");
    let no_h = KeyConfig {
        host: false,
        query: true,
    };
    assert_eq!(primary(&no_h, Some("h"), "/a", Some("q")), "GET /a?q");
}

#[test]
fn vary_index_round_trips_and_selects_variants() {
    let idx = Index::from_vary(Some("Accept-Encoding, Accept-Language"), 42);
    assert_eq!(idx.names, ["accept-encoding", "accept-language"]);
    assert_eq!(Index::decode(&idx.encode()), Some(idx.clone()));
    let none = Index::from_vary(None, 7);
    assert_eq!(Index::decode(&none.encode()), Some(none.clone()));
    assert_eq!(
        none.variant("p", |_| None),
        none.variant("p", |_| Some("x".into()))
    );

    let v = |enc: Option<&str>, lang: Option<&str>| {
        idx.variant("p", |n| match n {
            "accept-encoding" => enc.map(str::to_owned),
            _ => lang.map(str::to_owned),
        })
    };
    assert_eq!(v(Some("gzip"), Some("en")), v(Some(" gzip "), Some("en")));
    assert_eq!(v(Some("gzip,  br"), None), v(Some("gzip, br"), None));
    assert_ne!(v(Some("gzip"), None), v(Some("br"), None));
    assert_ne!(
        v(Some(""), None),
        v(None, None),
        "absent differs from empty"
    );
    let other_nonce = Index {
        nonce: 43,
        ..idx.clone()
    };
    assert_ne!(
        other_nonce.variant("p", |_| None),
        idx.variant("p", |_| None)
    );
}

#[test]
fn meta_round_trips() {
    let m = Meta {
        initial_age: 3,
        lifetime: 600,
        heuristic: true,
        no_cache: false,
        must_revalidate: true,
        swr: 30,
        sie: 300,
        has_validator: true,
    };
    assert_eq!(decode_meta(&encode_meta(&m)), Some(m));
    assert_eq!(decode_meta(b"junk"), None);
    assert_eq!(decode_meta(&[]), None);
}

#[test]
fn cache_status_members() {
    let s = CacheStatus::new("weir")
        .hit()
        .ttl(-3)
        .detail("stale-if-error");
    assert_eq!(s.as_str(), "weir; hit; ttl=-3; detail=\"stale-if-error\"");
    let s = CacheStatus::new("weir")
        .fwd("uri-miss")
        .fwd_status(200)
        .stored()
        .ttl(60);
    assert_eq!(
        s.as_str(),
        "weir; fwd=uri-miss; fwd-status=200; stored; ttl=60"
    );
}
