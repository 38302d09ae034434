//! Peak EWMA under real faults: a dead endpoint (its refusals are fast) is
//! not taken for a fast one.

use weir_tests::upstream::refused_addr;
use weir_tests::{TestUpstream, config_head, get};

use super::plugins::proxy_with;

#[tokio::test]
async fn peak_ewma_keeps_away_from_a_dead_endpoint() {
    let live = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    ];
    let dead = refused_addr();
    let config = format!(
        r#"{}[upstreams.u]
endpoints = ["{}", "{}", "{dead}"]
[[routes]]
upstream = "u"
plugins = [
  {{ name = "retry", config = {{ max_attempts = 3, retry_on = ["connect-failure"], backoff_base = "1ms", backoff_max = "2ms", budget_min_per_second = 1000 }} }},
  {{ name = "balancer", config = {{ algorithm = "peak_ewma" }} }},
]
"#,
        config_head(),
        live[0].addr,
        live[1].addr
    );
    let proxy = proxy_with(
        &[
            ("retry", weir_tests::plugins::RETRY),
            ("balancer", weir_tests::plugins::BALANCER),
        ],
        &config,
    );
    for i in 0..500 {
        let reply = get(&proxy.url(&format!("/item/{i}"))).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let upstreams: serde_json::Value = serde_json::from_slice(
        &get(&proxy.admin_url("/admin/upstreams"))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let endpoints = upstreams["upstreams"][0]["endpoints"].as_array().unwrap();
    let dead_endpoint = endpoints
        .iter()
        .find(|e| e["address"] == dead.to_string())
        .unwrap();
    let refused = dead_endpoint["failures"].as_u64().unwrap();
    // A refusal costs a 1 s penalty that takes ~50 s to decay below a live
    // endpoint's cost: after the first few, the dead one is not chosen.
    assert!(
        refused <= 3,
        "{refused} refused connects in 500 requests: {dead_endpoint}"
    );
    assert!(
        live.iter().all(|u| u.requests() > 100),
        "both live endpoints served"
    );
}
