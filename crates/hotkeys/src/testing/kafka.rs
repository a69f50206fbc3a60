//! Access events produced for a test, and where the test's topic ends.

use crate::Topology;

/// One access event for [`produce`]: the message key, its value, and an optional timestamp.
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// An OpenResty-format event for product `key`.
    pub fn openresty(key: &str) -> Record {
        Record::openresty_from(key, "10.0.0.1")
    }

    /// A plain-key event: the product id as the message key, an empty value.
    pub fn plain(key: &str) -> Record {
        Record {
            key: Some(key.to_string()),
            payload: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// An OpenResty-format event for product `key` requested by caller address `ip`
    /// (`/headers/x-real-ip`).
    pub fn openresty_from(key: &str, ip: &str) -> Record {
        let payload = format!(
            r#"{{"request_module":"product_detail_info","headers":{{"host":"shop.example","user-agent":"test","x-real-ip":"{ip}"}},"uri_args":{{"productId":"{key}","shopId":"1"}},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId={key}&shopId=1 HTTP/1.1\r\n","body_data":null}}"#
        );
        Record {
            key: Some(key.to_string()),
            payload: payload.into_bytes(),
            timestamp_ms: None,
        }
    }
}

/// Creates the topology's topic if needed and publishes `records` with the project's
/// producer settings, waiting for every delivery. Panics on failure: it is test set-up.
pub async fn produce(topology: &Topology, records: impl IntoIterator<Item = Record>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    crate::kafka::ensure_topic(&topology.kafka)
        .await
        .expect("Kafka reachable (is scripts/stack.sh up?)");
    let producer: FutureProducer = crate::kafka::producer_config(&topology.kafka)
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for r in records {
        let mut fr = FutureRecord::to(&topology.kafka.topic).payload(&r.payload);
        if let Some(k) = &r.key {
            fr = fr.key(k);
        }
        if let Some(ts) = r.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        pending.push(
            producer
                .send_result(fr)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await.expect("delivery").expect("delivered");
            }
        }
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

/// The end offset (high watermark) of every partition of the topology's topic.
pub fn end_offsets(topology: &Topology) -> Vec<i64> {
    let ends = crate::kafka::end_offsets(&topology.kafka).expect("watermarks");
    assert!(!ends.is_empty(), "topic {} exists", topology.kafka.topic);
    ends
}
