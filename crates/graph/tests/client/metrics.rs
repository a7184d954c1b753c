//! Throttling and retries are counted through the `metrics` facade.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use graph_emulator::{EmulatorConfig, Fault};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::helpers::{client_for, start_emulator};

/// Keeps every counter by `name{label=value,...}`.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let counter = self.0.lock().unwrap().entry(name).or_default().clone();
        Counter::from_arc(counter)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn throttles_and_retries_are_counted_by_status_and_reason() {
    let counters = Counters::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&counters, || {
        runtime.block_on(async {
            let emulator = start_emulator(EmulatorConfig::synthetic(3)).await;
            let client = client_for(&emulator);
            emulator.inject(Fault::throttle("/v1.0/users", Some(0.05), 1));
            emulator.inject(Fault::status("/v1.0/users", 500, 1));
            let id = emulator.users()[0].id.clone();
            assert!(client.get_user(&id).await.unwrap().is_some());
        });
    });

    assert_eq!(counters.get("graph_throttled_total{status=429}"), 1);
    assert_eq!(counters.get("graph_retries_total{reason=throttled}"), 1);
    assert_eq!(counters.get("graph_retries_total{reason=server_error}"), 1);
    assert_eq!(counters.get("graph_requests_total{status=429}"), 1);
    assert_eq!(counters.get("graph_requests_total{status=500}"), 1);
    assert_eq!(counters.get("graph_requests_total{status=200}"), 1);
    assert_eq!(counters.get("graph_resource_units_total{}"), 3);
    assert_eq!(
        counters.get("graph_token_requests_total{outcome=issued}"),
        1
    );
}
