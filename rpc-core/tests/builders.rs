//! Builders: every setter chains by value, no setter's effect depends on the order of calls,
//! anything that takes an address takes text or an `Endpoint`, and invalid settings are
//! reported where the chain ends (`connect`, `start`), not in its middle.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use rpc_core::{
    Client, ClientBuilder, Endpoint, Format, RpcError, Server, StartError, TransportError,
};

#[rpc_core::service(name = "test.Builders")]
trait Nothing {
    async fn ping(&self) -> u8;
}

struct Impl;

impl Nothing for Impl {
    async fn ping(&self) -> u8 {
        1
    }
}

#[test]
fn heartbeat_and_idle_timeout_do_not_depend_on_order() {
    let a = ClientBuilder::new()
        .heartbeat_interval(Duration::from_secs(2))
        .idle_timeout(Duration::from_secs(7));
    let b = ClientBuilder::new()
        .idle_timeout(Duration::from_secs(7))
        .heartbeat_interval(Duration::from_secs(2));
    for builder in [a, b] {
        let settings = builder.settings();
        assert_eq!(settings.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(settings.effective_idle_timeout(), Duration::from_secs(7));
    }
    // Without an idle timeout of its own, it follows the heartbeat.
    let c = ClientBuilder::new().heartbeat_interval(Duration::from_secs(2));
    assert_eq!(
        c.settings().effective_idle_timeout(),
        Duration::from_secs(6)
    );
}

#[tokio::test]
async fn text_and_endpoints_are_both_addresses() {
    let server = Server::builder()
        .service(NothingServer::new(Impl))
        .listen("mem://builders-text")
        .listen(Endpoint::Memory("builders-endpoint".into()))
        .start()
        .await
        .unwrap();
    let by_text = NothingClient::new(Client::connect("mem://builders-text").await.unwrap());
    let endpoint: Endpoint = "mem://builders-endpoint".parse().unwrap();
    let by_endpoint = NothingClient::new(Client::builder().connect(&endpoint).await.unwrap());
    assert_eq!(by_text.ping().await.unwrap(), 1);
    assert_eq!(by_endpoint.ping().await.unwrap(), 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_bad_endpoint_or_setting_fails_where_the_chain_ends() {
    let err = Client::connect("http://nowhere").await.unwrap_err();
    assert!(matches!(err, RpcError::BadEndpoint(_)), "{err}");
    let err = Client::builder()
        .heartbeat_interval(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(1))
        .connect_lazy("mem://builders-never")
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::InvalidConfig(m) if m.contains("idle_timeout")),
        "{err}"
    );

    let err = Server::builder()
        .service(NothingServer::new(Impl))
        .listen("http://nowhere")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Transport(TransportError::InvalidEndpoint { .. })
        ),
        "{err}"
    );
    let err = Server::builder()
        .max_concurrent_per_connection(0)
        .listen("mem://builders-zero")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InvalidConfig(_)), "{err}");
    // A user format whose id a built-in format has is refused at start, not mid-chain.
    let err = Server::builder()
        .format(Format::Json)
        .listen("mem://builders-format")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Format { .. }), "{err}");
    // Nothing was bound by a start that failed.
    Server::builder()
        .listen("mem://builders-format")
        .start()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connect_error_keeps_its_cause_as_its_source() {
    use std::error::Error;

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("could not connect to tcp://127.0.0.1:{port}")
    );
    let cause = err.source().expect("the transport error is the source");
    assert!(cause.to_string().contains(&port.to_string()), "{cause}");
    let report = err.report().to_string();
    assert!(report.to_lowercase().contains("refused"), "{report}");
}

#[test]
fn application_errors_convert_for_question_marks() {
    #[derive(Debug, PartialEq)]
    struct Mine(String);
    impl From<String> for Mine {
        fn from(s: String) -> Self {
            Mine(s)
        }
    }
    fn mine() -> Result<(), RpcError<Mine>> {
        let theirs: Result<(), RpcError<String>> = Err(RpcError::Application("no".into()));
        theirs.map_err(RpcError::convert)?;
        Ok(())
    }
    assert_eq!(mine(), Err(RpcError::Application(Mine("no".into()))));
}
