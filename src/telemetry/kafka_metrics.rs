//! The Kafka families of the registry: AWS's `OffsetLag` per mapping (the max and the sum over its
//! partitions, in records) and, beyond AWS, the age of the oldest record not yet processed, in
//! milliseconds (users alarm on time, not offsets). [`KafkaFamilies`] registers them once in
//! [`super::Metrics::new`]; [`super::Metrics::kafka`] resolves one mapping's [`KafkaMetrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::MappingLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatLabels {
    mapping: String,
    stat: String,
}

#[derive(Default)]
pub(super) struct KafkaFamilies {
    lag: Family<StatLabels, Gauge>,
    oldest: Family<MappingLabel, Gauge>,
}

impl KafkaFamilies {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_kafka_offset_lag",
            "AWS's OffsetLag: records written to the mapping's partitions (this consumer's) and not yet committed; stat=max or sum over the partitions",
            self.lag.clone(),
        );
        registry.register(
            "sluice_kafka_oldest_unprocessed_age_ms",
            "Age of the oldest record read and not yet committed (0 when caught up), in milliseconds",
            self.oldest.clone(),
        );
    }

    pub(super) fn mapping(&self, mapping: &str) -> KafkaMetrics {
        let stat = |s: &str| {
            self.lag
                .get_or_create(&StatLabels {
                    mapping: mapping.to_string(),
                    stat: s.to_string(),
                })
                .clone()
        };
        KafkaMetrics {
            lag_max: stat("max"),
            lag_sum: stat("sum"),
            oldest: self
                .oldest
                .get_or_create(&MappingLabel {
                    mapping: mapping.to_string(),
                })
                .clone(),
        }
    }
}

impl KafkaFamilies {
    /// Removes every series of `mapping` (a mapping a reload stopped).
    pub(super) fn forget(&self, mapping: &str) {
        for stat in ["max", "sum"] {
            self.lag.remove(&StatLabels {
                mapping: mapping.to_string(),
                stat: stat.to_string(),
            });
        }
        self.oldest.remove(&MappingLabel {
            mapping: mapping.to_string(),
        });
    }
}

/// One Kafka mapping's series.
#[derive(Clone)]
pub struct KafkaMetrics {
    lag_max: Gauge,
    lag_sum: Gauge,
    oldest: Gauge,
}

impl KafkaMetrics {
    /// The lag of each assigned partition (records), and the age of the oldest record not yet
    /// processed (milliseconds, 0 when there is none).
    pub fn observed(&self, lags: &[i64], oldest_age_ms: i64) {
        self.lag_max
            .set(lags.iter().copied().max().unwrap_or(0).max(0));
        self.lag_sum.set(lags.iter().map(|l| l.max(&0)).sum());
        self.oldest.set(oldest_age_ms.max(0));
    }
}

#[cfg(test)]
mod tests {
    use crate::telemetry::Metrics;

    #[test]
    fn offset_lag_is_the_max_and_the_sum_over_partitions() {
        let metrics = Metrics::new();
        let k = metrics.kafka("orders");
        k.observed(&[3, 10, 0], 1500);
        let text = metrics.encode();
        assert!(
            text.contains(r#"sluice_kafka_offset_lag{mapping="orders",stat="max"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_kafka_offset_lag{mapping="orders",stat="sum"} 13"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_kafka_oldest_unprocessed_age_ms{mapping="orders"} 1500"#),
            "{text}"
        );
        k.observed(&[], 0);
        let text = metrics.encode();
        assert!(
            text.contains(r#"sluice_kafka_offset_lag{mapping="orders",stat="max"} 0"#),
            "{text}"
        );
    }
}
