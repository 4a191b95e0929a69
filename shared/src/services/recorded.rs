//! What code records through `shared::metrics`, captured on this thread for a test: each
//! counter's total by name and labels, and how many values each histogram got.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// A recorder keeping every series as `name{label=value,…}` (labels in the order given).
#[derive(Default)]
pub(crate) struct Recorded {
    series: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

/// A histogram that counts its values.
struct Values(Arc<AtomicU64>);

impl HistogramFn for Values {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorded {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.series.lock().unwrap().entry(name).or_default().clone()
    }

    /// The series recorded, each with its total (a histogram's: how many values).
    pub(crate) fn series(&self) -> BTreeMap<String, u64> {
        self.series
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// The total of one series (0 when never recorded).
    pub(crate) fn get(&self, series: &str) -> u64 {
        self.series().get(series).copied().unwrap_or(0)
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Values(self.cell(key))))
    }
}
