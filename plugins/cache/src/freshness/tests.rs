use super::*;

fn cfg() -> Config {
    Config::default()
}

fn facts(status: u16, headers: &[(&str, &str)]) -> ResponseFacts {
    ResponseFacts::from_headers(status, |n| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| (*v).to_owned())
    })
}

fn get() -> RequestFacts {
    RequestFacts {
        is_get: true,
        ..Default::default()
    }
}

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const T: u64 = 784_111_777;

#[test]
fn storability_follows_section_3() {
    let c = cfg();
    let ok = |req: &RequestFacts, f: &ResponseFacts| storable(req, f, &c);
    assert_eq!(
        ok(&get(), &facts(200, &[])),
        Ok(()),
        "heuristically cacheable status"
    );
    assert_eq!(ok(&get(), &facts(404, &[])), Ok(()));
    assert_eq!(ok(&get(), &facts(201, &[])), Err("not cacheable"));
    assert_eq!(
        ok(&get(), &facts(201, &[("cache-control", "max-age=5")])),
        Ok(())
    );
    assert_eq!(ok(&get(), &facts(302, &[("expires", DATE)])), Ok(()));
    assert_eq!(
        ok(&get(), &facts(500, &[("cache-control", "public")])),
        Ok(())
    );
    assert_eq!(
        ok(&get(), &facts(206, &[("cache-control", "max-age=5")])),
        Err("status")
    );
    assert_eq!(ok(&get(), &facts(304, &[])), Err("status"));
    let post = RequestFacts {
        is_get: false,
        ..get()
    };
    assert_eq!(ok(&post, &facts(200, &[])), Err("method"));
    assert_eq!(
        ok(&get(), &facts(200, &[("cache-control", "no-store")])),
        Err("no-store")
    );
    let req_no_store = RequestFacts {
        cc: CacheControl::parse("no-store"),
        ..get()
    };
    assert_eq!(ok(&req_no_store, &facts(200, &[])), Err("no-store"));
    assert_eq!(
        ok(
            &get(),
            &facts(200, &[("cache-control", "private, max-age=5")])
        ),
        Err("private")
    );
    assert_eq!(
        ok(&get(), &facts(200, &[("vary", "accept, *")])),
        Err("vary-star")
    );
    assert_eq!(
        ok(&get(), &facts(200, &[("set-cookie", "a=b")])),
        Err("set-cookie")
    );
    let auth = RequestFacts {
        authorization: true,
        ..get()
    };
    assert_eq!(
        ok(&auth, &facts(200, &[("cache-control", "max-age=5")])),
        Err("authorization")
    );
    for allowed in ["public", "s-maxage=5", "must-revalidate, max-age=5"] {
        assert_eq!(
            ok(&auth, &facts(200, &[("cache-control", allowed)])),
            Ok(()),
            "{allowed}"
        );
    }
    // A private cache stores private responses.
    let private = Config {
        shared: false,
        ..cfg()
    };
    assert_eq!(
        storable(
            &get(),
            &facts(200, &[("cache-control", "private, max-age=5")]),
            &private
        ),
        Ok(())
    );
}

#[test]
fn lifetime_prefers_s_maxage_then_max_age_then_expires() {
    let c = cfg();
    let f = facts(
        200,
        &[
            ("cache-control", "max-age=60, s-maxage=120"),
            ("expires", DATE),
            ("date", DATE),
        ],
    );
    assert_eq!(lifetime(&f, &c, T), (120, false));
    let private = Config {
        shared: false,
        ..cfg()
    };
    assert_eq!(lifetime(&f, &private, T), (60, false));
    let f = facts(
        200,
        &[("expires", "Sun, 06 Nov 1994 09:49:37 GMT"), ("date", DATE)],
    );
    assert_eq!(lifetime(&f, &c, T), (3600, false));
    // Without Date, Expires is measured from the response time.
    let f = facts(200, &[("expires", "Sun, 06 Nov 1994 09:49:37 GMT")]);
    assert_eq!(lifetime(&f, &c, T + 600), (3000, false));
    // An invalid Expires means already expired.
    let f = facts(200, &[("expires", "0"), ("last-modified", DATE)]);
    assert_eq!(lifetime(&f, &c, T), (0, false));
    // Capped by max_ttl_secs.
    let f = facts(200, &[("cache-control", "max-age=999999999")]);
    assert_eq!(lifetime(&f, &c, T), (86_400, false));
}

#[test]
fn heuristic_freshness_only_where_allowed() {
    let c = cfg();
    let lm = "Sun, 06 Nov 1994 06:49:37 GMT"; // two hours before DATE
    let f = facts(200, &[("last-modified", lm), ("date", DATE)]);
    assert_eq!(lifetime(&f, &c, T), (720, true), "10% of two hours");
    let f = facts(201, &[("last-modified", lm), ("date", DATE)]);
    assert_eq!(
        lifetime(&f, &c, T).0,
        0,
        "201 is not heuristically cacheable"
    );
    let f = facts(
        201,
        &[
            ("last-modified", lm),
            ("date", DATE),
            ("cache-control", "public"),
        ],
    );
    assert_eq!(lifetime(&f, &c, T), (720, true), "unless public");
    let f = facts(200, &[("date", DATE)]);
    assert_eq!(
        lifetime(&f, &c, T),
        (0, false),
        "no Last-Modified, no heuristic"
    );
    let capped = Config {
        heuristic_max_secs: 100,
        ..cfg()
    };
    let f = facts(200, &[("last-modified", lm), ("date", DATE)]);
    assert_eq!(lifetime(&f, &capped, T), (100, true));
}

#[test]
fn initial_age_takes_the_larger_of_apparent_and_corrected_age() {
    let ms = |s: u64| s * 1000;
    // Date 10 s before the response arrived: apparent age 10.
    let f = facts(200, &[("date", DATE)]);
    assert_eq!(initial_age(&f, ms(T + 9), ms(T + 10)), 10);
    // Age header plus the response delay.
    let f = facts(200, &[("date", DATE), ("age", "100")]);
    assert_eq!(initial_age(&f, ms(T), ms(T) + 1500), 102);
    // The delay is rounded to the nearest second: a fast upstream adds none.
    assert_eq!(initial_age(&f, ms(T), ms(T) + 1), 100);
    assert_eq!(initial_age(&f, ms(T), ms(T) + 499), 100);
    assert_eq!(initial_age(&f, ms(T), ms(T) + 500), 101);
    // A Date in the future: apparent age 0.
    let f = facts(200, &[("date", DATE)]);
    assert_eq!(initial_age(&f, ms(T - 100), ms(T - 100)), 0);
    let f = facts(200, &[("age", "junk")]);
    assert_eq!(initial_age(&f, ms(T), ms(T)), 0);
}

fn meta(lifetime: u64) -> Meta {
    Meta {
        lifetime,
        has_validator: true,
        ..Meta::default()
    }
}

#[test]
fn reuse_of_fresh_and_stale_entries() {
    let none = CacheControl::default();
    assert_eq!(reuse(&meta(60), 30, &none), Reuse::Fresh);
    assert_eq!(reuse(&meta(60), 60, &none), Reuse::Revalidate(false));
    assert_eq!(
        reuse(
            &Meta {
                no_cache: true,
                ..meta(60)
            },
            0,
            &none
        ),
        Reuse::Revalidate(false)
    );
    let req = |s: &str| CacheControl::parse(s);
    assert_eq!(
        reuse(&meta(60), 30, &req("no-cache")),
        Reuse::Revalidate(true)
    );
    assert_eq!(
        reuse(&meta(60), 30, &req("max-age=10")),
        Reuse::Revalidate(true)
    );
    assert_eq!(reuse(&meta(60), 30, &req("max-age=30")), Reuse::Fresh);
    assert_eq!(
        reuse(&meta(60), 30, &req("min-fresh=40")),
        Reuse::Revalidate(true)
    );
    assert_eq!(reuse(&meta(60), 30, &req("min-fresh=20")), Reuse::Fresh);
    // max-stale accepts staleness, unless the response must be revalidated.
    assert_eq!(reuse(&meta(60), 70, &req("max-stale")), Reuse::Fresh);
    assert_eq!(
        reuse(&meta(60), 70, &req("max-stale=5")),
        Reuse::Revalidate(false)
    );
    assert_eq!(reuse(&meta(60), 70, &req("max-stale=15")), Reuse::Fresh);
    let strict = Meta {
        must_revalidate: true,
        ..meta(60)
    };
    assert_eq!(
        reuse(&strict, 70, &req("max-stale")),
        Reuse::Revalidate(false)
    );
}

#[test]
fn stale_while_revalidate_and_stale_if_error_windows() {
    let none = CacheControl::default();
    let m = Meta {
        swr: 30,
        sie: 300,
        ..meta(60)
    };
    assert_eq!(reuse(&m, 80, &none), Reuse::StaleWhileRevalidate);
    assert_eq!(reuse(&m, 91, &none), Reuse::Revalidate(false));
    assert!(stale_if_error(&m, 300));
    assert!(stale_if_error(&m, 360));
    assert!(!stale_if_error(&m, 361));
    let strict = Meta {
        must_revalidate: true,
        ..m
    };
    assert_eq!(reuse(&strict, 80, &none), Reuse::Revalidate(false));
    assert!(!stale_if_error(&strict, 70));
}

#[test]
fn meta_and_keep() {
    let c = cfg();
    let f = facts(
        200,
        &[
            (
                "cache-control",
                "max-age=100, stale-while-revalidate=20, s-maxage=50",
            ),
            ("date", DATE),
        ],
    );
    let m = Meta::new(&f, &c, T * 1000, T * 1000 + 2000);
    assert_eq!((m.lifetime, m.initial_age, m.swr), (50, 2, 20));
    assert!(
        m.must_revalidate,
        "s-maxage implies proxy-revalidate in a shared cache"
    );
    assert_eq!(
        m.keep(&c),
        48,
        "no stale window after must-revalidate, no validator"
    );
    let f = facts(
        200,
        &[
            ("cache-control", "max-age=100, stale-if-error=600"),
            ("etag", "\"x\""),
        ],
    );
    let m = Meta::new(&f, &c, 0, 0);
    assert_eq!(
        m.keep(&c),
        100 + 3600,
        "stale keep for revalidation wins over sie"
    );
    let f = facts(200, &[("cache-control", "max-age=0")]);
    assert_eq!(
        Meta::new(&f, &c, 0, 0).keep(&c),
        0,
        "nothing to keep: no freshness, no validator"
    );
}
