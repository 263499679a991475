//! Client filters see every kind of call, before, around and after. Memory transport.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{
    CallFuture, CallOptions, Caller, Client, ClientFilter, MethodKind, MethodTarget, RpcError,
    RpcStream, Server, ServerHandle, Status,
};
use support::{Echo, target};
use tokio::sync::Semaphore;

/// Records what it sees of each call: the kind from `around`, the outcome from `after`.
#[derive(Debug, Clone, Default)]
struct Record {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Record {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl ClientFilter for Record {
    fn before(&self, target: &MethodTarget<'_>, _: &mut CallOptions) -> Result<(), RpcError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("before {}", target.method));
        Ok(())
    }

    fn around<'a>(
        &'a self,
        target: &'a MethodTarget<'a>,
        kind: MethodKind,
        next: CallFuture<'a>,
    ) -> CallFuture<'a> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("around {} {kind:?}", target.method));
        next
    }

    fn after(&self, target: &MethodTarget<'_>, outcome: Result<Status, &RpcError>, _: Duration) {
        let outcome = match outcome {
            Ok(status) => status.name().to_owned(),
            Err(e) => format!("error: {e}"),
        };
        self.seen
            .lock()
            .unwrap()
            .push(format!("after {} {outcome}", target.method));
    }
}

async fn serve(name: &str) -> (ServerHandle, rpc_core::Endpoint, Echo) {
    let endpoint = support::mem_endpoint(name);
    let echo = Echo::default();
    let server = Server::builder()
        .service(echo.clone())
        .listen(endpoint.clone())
        .start()
        .await
        .unwrap();
    (server, endpoint, echo)
}

#[tokio::test]
async fn filters_see_unary_one_way_and_stream_calls() {
    let (server, endpoint, echo) = serve("filters-kinds").await;
    let record = Record::default();
    let client = Client::builder()
        .filter(record.clone())
        .connect(&endpoint)
        .await
        .unwrap();
    let none = CallOptions::default();

    let failed = client
        .call_unary(&target("fail"), &none, &("no",))
        .await
        .unwrap();
    assert_eq!(failed.status(), Status::APPLICATION_ERROR);
    assert_eq!(
        record.take(),
        [
            "before fail",
            "around fail Unary",
            "after fail application error"
        ]
    );

    client
        .call_one_way(&target("note"), &none, &())
        .await
        .unwrap();
    echo.probe.wait_one_way(1).await;
    assert_eq!(
        record.take(),
        ["before note", "around note OneWay", "after note ok"]
    );

    let stream = client
        .call_stream(&target("count"), &none, &(3u64,))
        .await
        .unwrap();
    // `after` runs once the stream is set up, before its items are read.
    assert_eq!(
        record.take(),
        [
            "before count",
            "around count ServerStream",
            "after count ok"
        ]
    );
    let items: Vec<u64> = RpcStream::<u64>::new(stream)
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2]);
    assert!(record.take().is_empty());
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_stream_that_cannot_be_set_up_reaches_after_with_its_error() {
    let record = Record::default();
    let client = Client::builder()
        .filter(record.clone())
        .wait_for_reconnect(false)
        .connect_lazy(support::mem_endpoint("filters-nobody"))
        .unwrap();
    let err = client
        .call_stream(&target("count"), &CallOptions::default(), &(3u64,))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    let seen = record.take();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[2].starts_with("after count error: could not connect"),
        "{seen:?}"
    );
}

/// Lets one call at a time be under way, and refuses one-way calls without sending them.
#[derive(Debug)]
struct OneAtATime(Arc<Semaphore>);

impl ClientFilter for OneAtATime {
    fn around<'a>(
        &'a self,
        _: &'a MethodTarget<'a>,
        kind: MethodKind,
        next: CallFuture<'a>,
    ) -> CallFuture<'a> {
        if kind == MethodKind::OneWay {
            return Box::pin(async { Err(RpcError::Rejected("no one-way calls".into())) });
        }
        Box::pin(async move {
            let _turn = self
                .0
                .acquire()
                .await
                .map_err(|_| RpcError::Rejected("the filter is closed".into()))?;
            next.await
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_around_filter_can_hold_calls_back_and_refuse_them() {
    let (server, endpoint, echo) = serve("filters-around").await;
    let record = Record::default();
    let client = Client::builder()
        .filter(record.clone())
        .filter(OneAtATime(Arc::new(Semaphore::new(1))))
        .connect(&endpoint)
        .await
        .unwrap();

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call::<_, u64>(&target("sleep"), &(100u64,))
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 2);
    for call in calls {
        assert_eq!(call.await.unwrap(), 100);
    }
    assert_eq!(echo.probe.started.load(Ordering::SeqCst), 3);

    // Refused inside `around`: never sent, and the filters added before it see the error.
    record.take();
    let err = client
        .call_one_way(&target("note"), &CallOptions::default(), &())
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::Rejected("no one-way calls".into()));
    assert_eq!(
        record.take().last().map(String::as_str),
        Some("after note error: call rejected: no one-way calls")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(echo.probe.one_way.load(Ordering::SeqCst), 0);
    server.shutdown(Duration::from_secs(1)).await;
}
