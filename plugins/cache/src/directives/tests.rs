use super::*;

#[test]
fn parses_response_directives() {
    let cc = CacheControl::parse("public, max-age=60, s-maxage=\"120\", must-revalidate");
    assert!(cc.public && cc.must_revalidate);
    assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(120)));
    let cc = CacheControl::parse("No-Store,PRIVATE, no-cache=\"set-cookie, x\" , proxy-revalidate");
    assert!(cc.no_store && cc.private && cc.no_cache && cc.proxy_revalidate);
    let cc = CacheControl::parse("max-age=10, stale-while-revalidate=30, stale-if-error=600");
    assert_eq!(cc.stale_while_revalidate, Some(30));
    assert_eq!(cc.stale_if_error, Some(600));
}

#[test]
fn first_occurrence_wins_and_invalid_max_age_is_stale() {
    assert_eq!(
        CacheControl::parse("max-age=5, max-age=100").max_age,
        Some(5)
    );
    assert_eq!(CacheControl::parse("max-age=abc").max_age, Some(0));
    assert_eq!(CacheControl::parse("max-age=-1").max_age, Some(0));
    assert_eq!(CacheControl::parse("max-age").max_age, Some(0));
    assert_eq!(
        CacheControl::parse("max-age=99999999999999999999").max_age,
        Some(DELTA_MAX)
    );
    assert_eq!(CacheControl::parse("").max_age, None);
    assert_eq!(
        CacheControl::parse("x-ext=\"a,b\", max-age=7").max_age,
        Some(7)
    );
}

#[test]
fn parses_request_directives() {
    let cc = CacheControl::parse("max-stale, min-fresh=10, only-if-cached, no-cache");
    assert_eq!(cc.max_stale, Some(None));
    assert_eq!(cc.min_fresh, Some(10));
    assert!(cc.only_if_cached && cc.no_cache);
    assert_eq!(
        CacheControl::parse("max-stale=30").max_stale,
        Some(Some(30))
    );
    assert_eq!(CacheControl::parse("max-age=0").max_age, Some(0));
}

#[test]
fn etags_compare_weakly() {
    assert!(etag_matches("\"a\"", "\"a\""));
    assert!(etag_matches("W/\"a\"", "\"a\""));
    assert!(etag_matches("\"x\", W/\"a\"", "W/\"a\""));
    assert!(etag_matches("*", "\"z\""));
    assert!(!etag_matches("\"b\"", "\"a\""));
}
