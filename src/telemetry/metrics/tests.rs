use super::*;

#[test]
fn iterator_age_is_the_max_over_shards() {
    let m = Metrics::new();
    let (orders, payments) = (m.mapping("orders"), m.mapping("payments"));
    orders.iterator_age("s0", 500);
    orders.iterator_age("s1", 1500);
    orders.iterator_age("s1", 100);
    orders.polled(3);
    orders.invoked(3, "success", Duration::from_millis(20));
    let text = m.encode();
    assert!(
        text.contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 500"),
        "{text}"
    );
    // The shard holding the max ends: the next one shows; the last one gone shows 0.
    orders.iterator_age("s1", 900);
    payments.iterator_age("s0", 7000);
    orders.forget_partition("s1");
    assert!(m
        .encode()
        .contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 500"));
    orders.forget_partition("s0");
    let text = m.encode();
    assert!(
        text.contains("sluice_iterator_age_milliseconds{mapping=\"orders\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("sluice_iterator_age_milliseconds{mapping=\"payments\"} 7000"),
        "{text}"
    );
    assert!(
        text.contains("sluice_polled_events_total{mapping=\"orders\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("sluice_batches_total{mapping=\"orders\",outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_dispatch_duration_seconds_count{mapping=\"orders\"} 1"),
        "{text}"
    );
}

#[test]
fn a_mappings_series_are_resolved_once_and_labelled_values_appear_on_first_use() {
    let m = Metrics::new();
    let a = m.mapping("orders");
    assert!(Arc::ptr_eq(&a, &m.mapping("orders")));
    a.source_error("throttled");
    a.source_error("throttled");
    a.shard_state(None, Some("reading"));
    a.shard_state(Some("reading"), Some("dispatching"));
    let text = m.encode();
    assert!(
        text.contains("sluice_source_errors_total{mapping=\"orders\",error=\"throttled\"} 2"),
        "{text}"
    );
    assert!(!text.contains("error=\"trimmed\""), "{text}");
    assert!(
        text.contains("sluice_shards{mapping=\"orders\",state=\"reading\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("sluice_shards{mapping=\"orders\",state=\"dispatching\"} 1"),
        "{text}"
    );
}
