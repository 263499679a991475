//! `rpcctl call`: any method, JSON arguments in, JSON answer out.

use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use rpc_core::codec::ErrorBody;
use rpc_core::{
    CallOptions, Caller, Client, Endpoint, Format, MethodKind, MethodTarget, ServiceDescriptor,
    Status,
};
use rpc_registry::{Instance, Registry, RemoteRegistry, ServiceKey};
use serde_json::value::RawValue;

use crate::connect;
use crate::fail::{Failure, one_line};
use crate::list;
use crate::output;

/// Calls a method.
#[derive(Args, Debug)]
#[command(
    override_usage = "rpcctl call [OPTIONS] <ENDPOINT> <SERVICE/METHOD> [ARGS]\n       \
                      rpcctl call [OPTIONS] --registry <REGISTRY> <SERVICE/METHOD> [ARGS]",
    after_help = "\
ENDPOINT is the server (tcp://127.0.0.1:7000; host:port alone means tcp://host:port); with
--registry it is left out. SERVICE/METHOD names the method, e.g. hello.Greeter/add.

ARGS is the argument list as a JSON array, one element per argument in order: '[2, 40]' calls
add(2, 40). A value that is not an array is taken as the only argument: '\"world\"' is the same as
'[\"world\"]'. So a single argument that is itself an array must be wrapped: '[[1, 2]]'. No ARGS,
or '[]', calls a method without arguments.

The answer is printed as indented JSON; the items of a streaming method as JSON lines, one per
item, as they arrive; a one-way call prints nothing. An error status or an application error
(with its detail as JSON) is printed on standard error and the exit status is 1.

Through the server's reflection service (rpc.Reflection) rpcctl learns the method's kind, checks
the service, the method and the number of arguments before calling, and picks the service's
version when it serves only one. A server without reflection gets a unary call unless --stream
or --one-way says otherwise.

Examples:
  rpcctl call tcp://127.0.0.1:7000 hello.Greeter/hello '\"world\"'
  rpcctl call tcp://127.0.0.1:7000 hello.Greeter/add '[2, 40]'
  rpcctl call tcp://127.0.0.1:7000 hello.Greeter/countdown 3
  rpcctl call --registry tcp://127.0.0.1:7100 --version 1 hello.Greeter/hello '\"world\"'"
)]
pub(crate) struct CallArgs {
    /// ENDPOINT (left out with --registry), SERVICE/METHOD, then ARGS, the JSON arguments.
    #[arg(
        value_name = "OPERANDS",
        num_args = 1..=3,
        required = true,
        allow_hyphen_values = true,
        hide = true
    )]
    operands: Vec<String>,
    /// Finds the service in this registry server (rpc.Registry) and calls one of its healthy
    /// instances, trying the next when one cannot be reached.
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    /// The service's version. Default: the only version the server serves, or none.
    #[arg(long = "version", value_name = "V")]
    service_version: Option<String>,
    /// The registry group of the instances (with --registry).
    #[arg(long, default_value = "", requires = "registry")]
    group: String,
    /// How long the call may take: 500ms, 5s, 1m… Default: 10s for a unary call, none for a
    /// stream.
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Metadata sent with the call, KEY=VALUE; repeat for several.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Calls a server-streaming method (for servers without reflection).
    #[arg(long, conflicts_with = "one_way")]
    stream: bool,
    /// Sends a one-way call (for servers without reflection).
    #[arg(long)]
    one_way: bool,
}

/// Where the call goes.
enum Place<'a> {
    /// A server's endpoint.
    Endpoint(&'a str),
    /// An instance found in the registry at this endpoint.
    Registry(&'a str),
}

/// A call, checked: what to call and with what.
struct Plan {
    service: String,
    method: String,
    args: Box<RawValue>,
    arg_count: usize,
    options: CallOptions,
}

pub(crate) async fn run(args: CallArgs) -> Result<(), Failure> {
    let (place, target, json) = match (&args.registry, args.operands.as_slice()) {
        (Some(registry), [target]) => (Place::Registry(registry), target, None),
        (Some(registry), [target, json]) => (Place::Registry(registry), target, Some(json)),
        (None, [endpoint, target]) => (Place::Endpoint(endpoint), target, None),
        (None, [endpoint, target, json]) => (Place::Endpoint(endpoint), target, Some(json)),
        (Some(_), _) => {
            return Err(Failure::usage(
                "with --registry give <SERVICE/METHOD> [ARGS], without an endpoint",
            ));
        }
        (None, _) => {
            return Err(Failure::usage(
                "give <ENDPOINT> <SERVICE/METHOD> [ARGS], or --registry <REGISTRY> \
                 <SERVICE/METHOD> [ARGS]",
            ));
        }
    };
    let (service, method) = target
        .split_once('/')
        .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{target:?} is not SERVICE/METHOD, e.g. hello.Greeter/hello"
            ))
        })?;
    let (args_json, arg_count) = arguments(json.map_or("[]", String::as_str))?;
    let mut options = CallOptions::new();
    if let Some(deadline) = args.deadline {
        options = options.timeout(deadline);
    }
    for entry in &args.metadata {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("metadata {entry:?} is not KEY=VALUE")))?;
        options = options
            .metadata(key, value)
            .map_err(|e| Failure::usage(format!("metadata {entry:?}: {e}")))?;
    }
    let plan = Plan {
        service: service.to_owned(),
        method: method.to_owned(),
        args: args_json,
        arg_count,
        options,
    };
    let client = match place {
        Place::Endpoint(endpoint) => {
            let endpoint = connect::endpoint(endpoint)?;
            connect::client(&endpoint, Format::Json).await?
        }
        Place::Registry(registry) => {
            let version = args.service_version.clone().unwrap_or_default();
            discover(registry, &plan.service, &version, &args.group).await?
        }
    };
    let listing = list::listing(&client).await?;
    let (version, kind) = match &listing {
        Some(services) => resolve(services, &plan, args.service_version.as_deref())?,
        None => (
            args.service_version.clone().unwrap_or_default(),
            if args.stream {
                MethodKind::ServerStream
            } else if args.one_way {
                MethodKind::OneWay
            } else {
                MethodKind::Unary
            },
        ),
    };
    let target = MethodTarget {
        service: &plan.service,
        version: &version,
        method: &plan.method,
        idempotent: false,
    };
    let name = format!("{}/{}", plan.service, plan.method);
    match kind {
        MethodKind::ServerStream => stream(&client, &target, &plan, &name).await,
        MethodKind::OneWay => one_way(&client, &target, &plan, &name).await,
        _ => unary(&client, &target, &plan, &name).await,
    }
}

/// The argument list to send, and how many arguments it holds. `[]` becomes `null`, the unit
/// value a method without arguments decodes; a value that is not an array becomes `[value]`.
fn arguments(text: &str) -> Result<(Box<RawValue>, usize), Failure> {
    let bad = |e: serde_json::Error| Failure::usage(format!("invalid JSON arguments: {e}"));
    let value: Box<RawValue> = serde_json::from_str(text).map_err(bad)?;
    if value.get().starts_with('[') {
        let elements: Vec<Box<RawValue>> = serde_json::from_str(value.get()).map_err(bad)?;
        if elements.is_empty() {
            return Ok((RawValue::from_string("null".to_owned()).map_err(bad)?, 0));
        }
        return Ok((value, elements.len()));
    }
    let wrapped = RawValue::from_string(format!("[{}]", value.get())).map_err(bad)?;
    Ok((wrapped, 1))
}

/// The version to call and the method's kind, from the server's listing; an unknown service or
/// method, or a wrong number of arguments, fails before calling.
fn resolve(
    services: &[ServiceDescriptor],
    plan: &Plan,
    version: Option<&str>,
) -> Result<(String, MethodKind), Failure> {
    let versions: Vec<&ServiceDescriptor> =
        services.iter().filter(|s| s.name == plan.service).collect();
    let service = match (version, versions.as_slice()) {
        (_, []) => {
            return Err(Failure::failed(format!(
                "unknown service {:?}; the server serves {}",
                plan.service,
                list::names(services)
            )));
        }
        (Some(v), found) => found.iter().find(|s| s.version == v).ok_or_else(|| {
            Failure::failed(format!(
                "unknown service {:?} version {v:?}; the server serves {}",
                plan.service,
                list::names(&found.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
            ))
        })?,
        (None, [only]) => only,
        (None, found) => found.iter().find(|s| s.version.is_empty()).ok_or_else(|| {
            Failure::usage(format!(
                "the server serves several versions of {:?} ({}); pick one with --version",
                plan.service,
                found
                    .iter()
                    .map(|s| s.version.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
    };
    let method = service.method(&plan.method).ok_or_else(|| {
        Failure::failed(format!(
            "unknown method {:?}: {} has {}",
            plan.method,
            service.name,
            service
                .methods
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if let Some(signature) = &method.signature
        && signature.args.len() != plan.arg_count
    {
        return Err(Failure::usage(format!(
            "{}/{} takes {} argument{} {}, got {}{}",
            service.name,
            method.name,
            signature.args.len(),
            if signature.args.len() == 1 { "" } else { "s" },
            list::signature(method),
            plan.arg_count,
            if signature.args.len() == 1 {
                " (an array is the argument list: wrap an array argument, [[1, 2]])"
            } else {
                ""
            }
        )));
    }
    let kind = method.method_kind().ok_or_else(|| {
        Failure::failed(format!(
            "{}/{} is a {:?} method, which this rpcctl cannot call",
            service.name, method.name, method.kind
        ))
    })?;
    Ok((service.version.clone(), kind))
}

async fn unary(
    client: &Client,
    target: &MethodTarget<'_>,
    plan: &Plan,
    name: &str,
) -> Result<(), Failure> {
    let response = client
        .call_unary(target, &plan.options, &*plan.args)
        .await
        .map_err(|e| Failure::rpc(name, &e))?;
    if !response.status().is_ok() {
        return Err(error_status(name, response.status(), response.body()));
    }
    let text = output::pretty(response.body())
        .map_err(|e| Failure::failed(format!("{name}: the answer is not valid JSON: {e}")))?;
    output::line(&text)
}

async fn stream(
    client: &Client,
    target: &MethodTarget<'_>,
    plan: &Plan,
    name: &str,
) -> Result<(), Failure> {
    let mut items = client
        .call_stream(target, &plan.options, &*plan.args)
        .await
        .map_err(|e| Failure::rpc(name, &e))?;
    while let Some(item) = items.next().await {
        let item = item.map_err(|e| Failure::rpc(name, &e))?;
        let text = output::compact(&item)
            .map_err(|e| Failure::failed(format!("{name}: an item is not valid JSON: {e}")))?;
        output::line(&text)?;
    }
    Ok(())
}

async fn one_way(
    client: &Client,
    target: &MethodTarget<'_>,
    plan: &Plan,
    name: &str,
) -> Result<(), Failure> {
    client
        .call_one_way(target, &plan.options, &*plan.args)
        .await
        .map_err(|e| Failure::rpc(name, &e))?;
    // Sending only queues the request. Frames go out in order on one connection, so the
    // answer to a call made after it, even an error answer, means the server has read it.
    let probe = MethodTarget {
        service: "rpc.Reflection",
        version: "1",
        method: "rpcctl.flush",
        idempotent: true,
    };
    client
        .call_unary(&probe, &CallOptions::new(), &())
        .await
        .map(drop)
        .map_err(|e| Failure::rpc(&format!("{name} (one-way, may not have been sent)"), &e))
}

/// An error answer: its status, message and, for an application error, its detail.
fn error_status(name: &str, status: Status, body: &bytes::Bytes) -> Failure {
    let status = format!("{status} (status {})", status.as_u8());
    match ErrorBody::parse(body) {
        Ok(error) if error.detail.is_empty() => {
            Failure::failed(format!("{name}: {status}: {}", one_line(&error.message)))
        }
        Ok(error) => {
            let detail = output::compact(&error.detail)
                .unwrap_or_else(|_| one_line(&String::from_utf8_lossy(&error.detail)));
            Failure::failed(format!(
                "{name}: {status}: {} (detail: {detail})",
                one_line(&error.message)
            ))
        }
        Err(e) => Failure::failed(format!(
            "{name}: {status}, with an unreadable error body: {e}"
        )),
    }
}

/// A client of one instance of the service, found in the registry at `registry`: healthy
/// instances that take traffic, in random order weighted by their weights, the first that
/// answers.
async fn discover(
    registry: &str,
    service: &str,
    version: &str,
    group: &str,
) -> Result<Client, Failure> {
    let registry_endpoint = connect::endpoint(registry)?;
    let registry_client = connect::client(&registry_endpoint, Format::MessagePack).await?;
    let key = ServiceKey::new(service)
        .with_version(version)
        .with_group(group);
    let snapshot = RemoteRegistry::new(registry_client)
        .discover(&key)
        .await
        .map_err(|e| Failure::failed(format!("registry {registry_endpoint}: {e}")))?;
    let mut instances: Vec<Instance> = snapshot
        .instances
        .into_iter()
        .filter(|i| i.healthy && i.weight > 0)
        .collect();
    if instances.is_empty() {
        return Err(Failure::failed(format!(
            "the registry {registry_endpoint} has no healthy instance of {service:?} version \
             {version:?} group {group:?} (a service registered with a version needs --version)"
        )));
    }
    let mut last = None;
    while !instances.is_empty() {
        let instance = instances.swap_remove(weighted_pick(&instances));
        let endpoint: Endpoint = match instance.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(e) => {
                last = Some(Failure::failed(format!(
                    "instance {:?} has an invalid endpoint {:?}: {e}",
                    instance.id, instance.endpoint
                )));
                continue;
            }
        };
        match connect::client(&endpoint, Format::Json).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Failure::failed("no instance could be reached")))
}

/// An index picked at random, each instance as likely as its weight.
fn weighted_pick(instances: &[Instance]) -> usize {
    let total: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
    let mut ticket = fastrand::u64(0..total.max(1));
    for (index, instance) in instances.iter().enumerate() {
        let weight = u64::from(instance.weight);
        if ticket < weight {
            return index;
        }
        ticket -= weight;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_a_list_or_one_value() {
        let (json, n) = arguments("[2, 40]").unwrap();
        assert_eq!((json.get(), n), ("[2, 40]", 2));
        let (json, n) = arguments(" \"world\" ").unwrap();
        assert_eq!((json.get(), n), ("[\"world\"]", 1));
        let (json, n) = arguments("[]").unwrap();
        assert_eq!((json.get(), n), ("null", 0));
        let (json, n) = arguments("[[1, 2]]").unwrap();
        assert_eq!((json.get(), n), ("[[1, 2]]", 1));
        match arguments("[1,\n 2,]") {
            Err(Failure::Usage(m)) => assert!(m.contains("line 2 column"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn picks_only_instances_with_weight() {
        let key = ServiceKey::new("s");
        let instances = [
            Instance::new(key.clone(), "tcp://a:1").with_weight(0),
            Instance::new(key, "tcp://b:1").with_weight(5),
        ];
        for _ in 0..100 {
            assert_eq!(weighted_pick(&instances), 1);
        }
    }
}
