//! A hand-written service (no macro) and helpers shared by the end-to-end tests.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::{
    BoxFuture, MethodInfo, MethodKind, MethodTarget, Reply, ServerCall, ServerStream, Service,
};
use serde_bytes::ByteBuf;
use tokio::sync::Notify;

/// Counters a test can watch to see what the handlers did.
#[derive(Debug, Default)]
pub struct Probe {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    /// Handlers dropped before they finished (cancelled or stopped at their deadline).
    pub dropped: AtomicUsize,
    pub dropped_signal: Notify,
    pub one_way: AtomicUsize,
    /// Items a `ticks` stream has produced, and whether its producer was dropped.
    pub produced: AtomicUsize,
    pub producer_dropped: AtomicUsize,
    pub producer_dropped_signal: Notify,
    pub one_way_signal: Notify,
}

impl Probe {
    pub async fn wait_dropped(&self, n: usize) {
        loop {
            let notified = self.dropped_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.dropped.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    pub async fn wait_producer_dropped(&self) {
        loop {
            let notified = self.producer_dropped_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.producer_dropped.load(Ordering::SeqCst) > 0 {
                return;
            }
            notified.await;
        }
    }

    pub async fn wait_one_way(&self, n: usize) {
        loop {
            let notified = self.one_way_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.one_way.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Marks a handler as dropped unless it was disarmed by finishing.
struct DropFlag {
    probe: Arc<Probe>,
    armed: bool,
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.armed {
            self.probe.dropped.fetch_add(1, Ordering::SeqCst);
            self.probe.dropped_signal.notify_waiters();
        } else {
            self.probe.finished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The test service, written by hand against the `Service` trait.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub probe: Arc<Probe>,
}

pub const ECHO: &str = "test.Echo";

pub const METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "echo",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "tagged",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "sleep",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "fail",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "panic",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "metadata",
        kind: MethodKind::Unary,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "note",
        kind: MethodKind::OneWay,
        idempotent: false,
        signature: None,
    },
    MethodInfo {
        name: "count",
        kind: MethodKind::ServerStream,
        idempotent: true,
        signature: None,
    },
    MethodInfo {
        name: "ticks",
        kind: MethodKind::ServerStream,
        idempotent: true,
        signature: None,
    },
];

/// Counts produced items and notices when the stream is dropped.
struct Producer {
    probe: Arc<Probe>,
    next: u64,
}

impl futures::Stream for Producer {
    type Item = u64;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<u64>> {
        self.probe.produced.fetch_add(1, Ordering::SeqCst);
        self.next += 1;
        std::task::Poll::Ready(Some(self.next - 1))
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.probe.producer_dropped.fetch_add(1, Ordering::SeqCst);
        self.probe.producer_dropped_signal.notify_waiters();
    }
}

pub fn target(method: &'static str) -> MethodTarget<'static> {
    MethodTarget {
        service: ECHO,
        version: "",
        method,
        idempotent: true,
    }
}

impl Service for Echo {
    fn name(&self) -> &'static str {
        ECHO
    }

    fn methods(&self) -> &'static [MethodInfo] {
        METHODS
    }

    fn call(&self, method: &str, call: ServerCall) -> Option<BoxFuture<'static, Reply>> {
        let probe = self.probe.clone();
        Some(match method {
            "echo" => Box::pin(async move {
                match call.args::<(ByteBuf,)>() {
                    Ok((bytes,)) => call.reply(&bytes),
                    Err(e) => call.reply_error(e),
                }
            }),
            // Answers (tag, tag * 2) after a delay, so concurrent callers can check they got
            // their own answer.
            "tagged" => Box::pin(async move {
                let (tag, delay_us) = match call.args::<(u64, u64)>() {
                    Ok(a) => a,
                    Err(e) => return call.reply_error(e),
                };
                if delay_us > 0 {
                    tokio::time::sleep(Duration::from_micros(delay_us)).await;
                }
                call.reply(&(tag, tag.wrapping_mul(2)))
            }),
            "sleep" => Box::pin(async move {
                let (ms,) = match call.args::<(u64,)>() {
                    Ok(a) => a,
                    Err(e) => return call.reply_error(e),
                };
                probe.started.fetch_add(1, Ordering::SeqCst);
                let mut flag = DropFlag { probe, armed: true };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                flag.armed = false;
                call.reply(&ms)
            }),
            "fail" => Box::pin(async move {
                let (msg,) = match call.args::<(String,)>() {
                    Ok(a) => a,
                    Err(e) => return call.reply_error(e),
                };
                call.reply_result::<(), _>(&Err(msg))
            }),
            "panic" => Box::pin(async move {
                if call.args::<()>().is_ok() {
                    panic!("handler panics on purpose");
                }
                call.reply(&())
            }),
            "metadata" => Box::pin(async move {
                let ctx = call.context();
                let pairs: Vec<(String, String)> = ctx
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                call.reply(&pairs)
            }),
            "note" => Box::pin(async move {
                probe.one_way.fetch_add(1, Ordering::SeqCst);
                probe.one_way_signal.notify_waiters();
                call.reply(&())
            }),
            "count" => Box::pin(async move {
                let (n,) = match call.args::<(u64,)>() {
                    Ok(a) => a,
                    Err(e) => return call.reply_error(e),
                };
                call.reply_stream(ServerStream::iter(0..n))
            }),
            // An endless stream whose production the probe counts.
            "ticks" => Box::pin(async move {
                call.reply_stream(ServerStream::new(Producer { probe, next: 0 }))
            }),
            _ => return None,
        })
    }
}

static NEXT_MEM: AtomicUsize = AtomicUsize::new(0);

/// A memory endpoint no other test uses.
pub fn mem_endpoint(prefix: &str) -> rpc_core::Endpoint {
    let n = NEXT_MEM.fetch_add(1, Ordering::Relaxed);
    format!("mem://{prefix}-{}-{n}", std::process::id())
        .parse()
        .unwrap()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
