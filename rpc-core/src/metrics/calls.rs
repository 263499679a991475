//! The families of calls both sides keep: calls by service, method and status, and their
//! duration by service and method.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// `service`, `method` and `status` label values.
pub(crate) type CallLabels = [(&'static str, String); 3];
/// `service` and `method` label values.
pub(crate) type MethodLabels = [(&'static str, String); 2];

/// Builds the duration histograms.
pub(crate) type MakeHistogram = fn() -> Histogram;

/// The duration buckets, in seconds: 50 µs to 10 s, each about twice the last (1, 2.5, 5).
const BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Calls and their durations.
#[derive(Debug, Clone)]
pub(crate) struct CallFamilies {
    pub(crate) calls: Family<CallLabels, Counter>,
    pub(crate) duration: Family<MethodLabels, Histogram, MakeHistogram>,
}

impl CallFamilies {
    pub(crate) fn new() -> Self {
        CallFamilies {
            calls: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }

    /// The series of one method, made once and kept, so that a successful call updates them
    /// without looking labels up.
    pub(crate) fn method(&self, service: &str, method: &str) -> MethodStats {
        let ok = self
            .calls
            .get_or_create_owned(&labels(service, method, "ok"));
        let duration = self.duration.get_or_create_owned(&[
            ("service", service.to_owned()),
            ("method", method.to_owned()),
        ]);
        MethodStats {
            service: service.to_owned(),
            method: method.to_owned(),
            ok,
            duration,
        }
    }

    /// Counts a call of `stats`'s method that ended with `status`.
    pub(crate) fn count(&self, stats: &MethodStats, status: &str) {
        if status == "ok" {
            stats.ok.inc();
        } else {
            self.calls
                .get_or_create(&labels(&stats.service, &stats.method, status))
                .inc();
        }
    }
}

fn labels(service: &str, method: &str, status: &str) -> CallLabels {
    [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
    ]
}

/// One method's series.
#[derive(Debug)]
pub(crate) struct MethodStats {
    service: String,
    method: String,
    ok: Counter,
    duration: Histogram,
}

impl MethodStats {
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }
}
