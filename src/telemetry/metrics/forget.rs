//! Forgetting a mapping: when a reload stops a mapping for good, every series it had leaves the
//! exposition (its gauges would otherwise show their last values for ever, and alerts on them would
//! fire for a mapping that no longer runs). A mapping that only restarts keeps its series.

use super::*;

impl Metrics {
    /// Removes every series of `mapping`, its lease and Kafka series included. A mapping of that
    /// name started later gets fresh series.
    pub fn forget_mapping(&self, mapping: &str) {
        self.mappings.lock().expect("metrics lock").remove(mapping);
        let label = Self::label(mapping);
        for family in [
            &self.polled,
            &self.filtered_out,
            &self.invoked,
            &self.failed_invoke,
            &self.dropped,
            &self.destination_delivered,
            &self.destination_failures,
            &self.checkpoints,
            &self.sqs_received,
            &self.sqs_deleted,
            &self.sqs_returned,
            &self.sqs_extensions,
            &self.worker_panics,
        ] {
            family.remove(&label);
        }
        for family in [&self.iterator_age, &self.sqs_in_flight, &self.concurrency] {
            family.remove(&label);
        }
        self.dispatch_duration.remove(&label);
        let with = |v: &str| (mapping.to_string(), v.to_string());
        for outcome in OUTCOMES {
            let (mapping, outcome) = with(outcome);
            self.batches.remove(&OutcomeLabels { mapping, outcome });
        }
        for error in SOURCE_ERRORS {
            let (mapping, error) = with(error);
            self.source_errors.remove(&ErrorLabels { mapping, error });
        }
        for state in STATES {
            let (mapping, state) = with(state);
            self.shards.remove(&StateLabels { mapping, state });
        }
        self.leases.forget(mapping);
        self.kafka.forget(mapping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_mapping_leaves_the_exposition_and_the_others_stay() {
        let m = Metrics::new();
        let (orders, payments) = (m.mapping("orders"), m.mapping("payments"));
        orders.polled(3);
        orders.iterator_age("s0", 900);
        orders.invoked(3, "success", Duration::from_millis(5));
        orders.source_error("throttled");
        orders.shard_state(None, Some("reading"));
        m.kafka("orders").observed(&[4], 10);
        let _ = m.leases("orders");
        payments.polled(1);
        m.forget_mapping("orders");
        let text = m.encode();
        assert!(!text.contains("mapping=\"orders\""), "{text}");
        assert!(
            text.contains("sluice_polled_events_total{mapping=\"payments\"} 1"),
            "{text}"
        );
        // Started again: fresh series.
        let again = m.mapping("orders");
        assert!(!Arc::ptr_eq(&again, &orders));
        again.polled(2);
        assert!(m
            .encode()
            .contains("sluice_polled_events_total{mapping=\"orders\"} 2"));
    }
}
