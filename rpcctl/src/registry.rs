//! `rpcctl registry`: a registry server's instances of a service, once or as they change.

use clap::{Args, Subcommand};
use futures::StreamExt;
use rpc_core::Format;
use rpc_registry::{Change, Instance, Registry, RemoteRegistry, ServiceKey, WatchEvent};

use crate::connect;
use crate::fail::Failure;
use crate::output;

/// Reads a registry server.
#[derive(Subcommand, Debug)]
pub(crate) enum RegistryCommand {
    /// Lists the instances of a service.
    Ls(KeyArgs),
    /// Prints the instances of a service, then every change as it happens, until interrupted.
    Watch(KeyArgs),
}

/// A registry and the key of a service in it.
#[derive(Args, Debug)]
#[command(after_help = "\
A registry keys instances by service name, version and group; the version and the group are
part of the key, so a service registered with version 1 is found only with --version 1.")]
pub(crate) struct KeyArgs {
    /// The registry server, e.g. tcp://127.0.0.1:7100.
    endpoint: String,
    /// The service's name, e.g. hello.Greeter.
    service: String,
    /// The service's version.
    #[arg(long = "version", value_name = "V", default_value = "")]
    service_version: String,
    /// The instances' group.
    #[arg(long, default_value = "")]
    group: String,
    /// Prints JSON: `ls` the snapshot {revision, instances}, `watch` one event per line, as
    /// {"Snapshot": {...}} or {"Change": {"revision": …, "change": {"Insert"|"Update"|"Remove": instance}}}.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: RegistryCommand) -> Result<(), Failure> {
    match command {
        RegistryCommand::Ls(args) => ls(args).await,
        RegistryCommand::Watch(args) => watch(args).await,
    }
}

async fn registry(args: &KeyArgs) -> Result<(RemoteRegistry, ServiceKey), Failure> {
    let endpoint = connect::endpoint(&args.endpoint)?;
    let client = connect::client(&endpoint, Format::MessagePack).await?;
    let key = ServiceKey::new(args.service.clone())
        .with_version(args.service_version.clone())
        .with_group(args.group.clone());
    Ok((RemoteRegistry::new(client), key))
}

async fn ls(args: KeyArgs) -> Result<(), Failure> {
    let (registry, key) = registry(&args).await?;
    let snapshot = registry
        .discover(&key)
        .await
        .map_err(|e| Failure::failed(format!("registry: {e}")))?;
    if args.json {
        return output::line(&json(&snapshot)?);
    }
    output::line(&format!(
        "{} at revision {}: {} instance{}",
        describe(&key),
        snapshot.revision,
        snapshot.instances.len(),
        if snapshot.instances.len() == 1 {
            ""
        } else {
            "s"
        }
    ))?;
    if !snapshot.instances.is_empty() {
        output::line(&table(&snapshot.instances))?;
    }
    Ok(())
}

async fn watch(args: KeyArgs) -> Result<(), Failure> {
    let (registry, key) = registry(&args).await?;
    let mut events = registry
        .watch(&key, None)
        .await
        .map_err(|e| Failure::failed(format!("registry: {e}")))?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = &mut interrupted => return Ok(()),
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(Failure::failed(format!("registry: watch: {e}"))),
            None => return Err(Failure::failed("registry: the watch ended")),
        };
        if args.json {
            output::line(&serde_json::to_string(&event).map_err(json_failure)?)?;
            continue;
        }
        match event {
            WatchEvent::Snapshot(snapshot) => {
                output::line(&format!(
                    "snapshot at revision {}: {} instance{}",
                    snapshot.revision,
                    snapshot.instances.len(),
                    if snapshot.instances.len() == 1 {
                        ""
                    } else {
                        "s"
                    }
                ))?;
                if !snapshot.instances.is_empty() {
                    output::line(&table(&snapshot.instances))?;
                }
            }
            WatchEvent::Change { revision, change } => {
                let (what, instance) = match &change {
                    Change::Insert(i) => ("insert", i),
                    Change::Update(i) => ("update", i),
                    Change::Remove(i) => ("remove", i),
                };
                output::line(&format!(
                    "revision {revision}: {what} {} {} weight {}{}",
                    instance.id,
                    instance.endpoint,
                    instance.weight,
                    if instance.healthy { "" } else { " unhealthy" }
                ))?;
            }
        }
    }
}

fn describe(key: &ServiceKey) -> String {
    let mut text = key.service.clone();
    if !key.version.is_empty() {
        text.push_str(&format!(" version {}", key.version));
    }
    if !key.group.is_empty() {
        text.push_str(&format!(" group {}", key.group));
    }
    text
}

/// Instances in aligned columns under a heading.
fn table(instances: &[Instance]) -> String {
    let rows: Vec<[String; 5]> = instances
        .iter()
        .map(|i| {
            [
                i.id.clone(),
                i.endpoint.clone(),
                i.weight.to_string(),
                if i.healthy { "yes" } else { "no" }.to_owned(),
                i.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let heading = ["ID", "ENDPOINT", "WEIGHT", "HEALTHY", "METADATA"].map(str::to_owned);
    let mut widths = heading.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    std::iter::once(&heading)
        .chain(&rows)
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(json_failure)
}

fn json_failure(e: serde_json::Error) -> Failure {
    Failure::failed(format!("cannot write JSON: {e}"))
}
