//! `rpcctl ls`: a server's services as its reflection service describes them.

use clap::Args;
use rpc_core::{Client, Format, MethodDescriptor, ReflectionClient, RpcError, ServiceDescriptor};

use crate::connect;
use crate::fail::Failure;
use crate::output;

/// Lists services, methods, kinds and signatures.
#[derive(Args, Debug)]
#[command(after_help = "\
Each method shows its kind (unary, one-way, stream), `idempotent` when a client may retry it
elsewhere after a connection error, and its signature as the service's source declares it:
`(a: i64, b: i64) -> Result<i64, MathError>` answers an i64 or fails with a MathError,
`-> stream u32` answers a stream of u32 items.")]
pub(crate) struct LsArgs {
    /// The server, e.g. tcp://127.0.0.1:7000.
    endpoint: String,
    /// Only this service.
    service: Option<String>,
    /// Prints the reflection service's answer as JSON: a list of
    /// {name, version, methods: [{name, kind, idempotent, signature: {args: [{name, ty}],
    /// result, error}}]}.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: LsArgs) -> Result<(), Failure> {
    let endpoint = connect::endpoint(&args.endpoint)?;
    let client = connect::client(&endpoint, Format::Json).await?;
    let Some(mut services) = listing(&client).await? else {
        return Err(Failure::failed(format!(
            "{endpoint} does not serve the reflection service (rpc.Reflection): it was turned \
             off with ServerBuilder::reflection(false)"
        )));
    };
    if let Some(name) = &args.service {
        services.retain(|s| &s.name == name);
        if services.is_empty() {
            return Err(Failure::failed(format!(
                "unknown service {name:?}; {endpoint} serves {}",
                names(&listing(&client).await?.unwrap_or_default())
            )));
        }
    }
    if args.json {
        let text = serde_json::to_string_pretty(&services)
            .map_err(|e| Failure::failed(format!("cannot write JSON: {e}")))?;
        return output::line(&text);
    }
    output::line(&render(&services))
}

/// The server's services, or `None` when it does not serve reflection.
pub(crate) async fn listing(client: &Client) -> Result<Option<Vec<ServiceDescriptor>>, Failure> {
    match ReflectionClient::new(client.clone()).services().await {
        Ok(services) => Ok(Some(services)),
        Err(RpcError::ServiceNotFound(_)) => Ok(None),
        Err(e) => Err(Failure::rpc("reflection failed", &e)),
    }
}

/// `a 1, b` for the services' names and versions.
pub(crate) fn names(services: &[ServiceDescriptor]) -> String {
    let names: Vec<String> = services.iter().map(identity).collect();
    if names.is_empty() {
        "no service".to_owned()
    } else {
        names.join(", ")
    }
}

fn identity(s: &ServiceDescriptor) -> String {
    if s.version.is_empty() {
        s.name.clone()
    } else {
        format!("{} version {}", s.name, s.version)
    }
}

/// The listing in aligned columns: one line per service, then one per method.
pub(crate) fn render(services: &[ServiceDescriptor]) -> String {
    let methods = services.iter().flat_map(|s| &s.methods);
    let name_width = methods.clone().map(|m| m.name.len()).max().unwrap_or(0);
    let kind_width = methods.map(|m| m.kind.len()).max().unwrap_or(0);
    let any_idempotent = services
        .iter()
        .flat_map(|s| &s.methods)
        .any(|m| m.idempotent);
    let mut out = Vec::new();
    for service in services {
        out.push(if service.version.is_empty() {
            format!("{} (unversioned)", service.name)
        } else {
            identity(service)
        });
        for m in &service.methods {
            let flag = match (any_idempotent, m.idempotent) {
                (false, _) => "",
                (true, true) => "idempotent  ",
                (true, false) => "            ",
            };
            out.push(format!(
                "  {:name_width$}  {:kind_width$}  {flag}{}",
                m.name,
                m.kind,
                signature(m)
            ));
        }
    }
    out.iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(a: i64, b: i64) -> Result<i64, MathError>`, as the method is declared.
pub(crate) fn signature(m: &MethodDescriptor) -> String {
    let Some(sig) = &m.signature else {
        return "(signature not described)".to_owned();
    };
    let args: Vec<String> = sig
        .args
        .iter()
        .map(|a| format!("{}: {}", a.name, a.ty))
        .collect();
    let args = format!("({})", args.join(", "));
    let result = match (&sig.error, m.kind.as_str()) {
        (_, "one-way") => return args,
        (_, "stream") => format!("stream {}", sig.result),
        (Some(error), _) => format!("Result<{}, {error}>", sig.result),
        (None, _) => sig.result.clone(),
    };
    format!("{args} -> {result}")
}

#[cfg(test)]
mod tests {
    use rpc_core::{ArgDescriptor, SignatureDescriptor};

    use super::*;

    fn method(name: &str, kind: &str, idempotent: bool, error: Option<&str>) -> MethodDescriptor {
        MethodDescriptor {
            name: name.to_owned(),
            kind: kind.to_owned(),
            idempotent,
            signature: Some(SignatureDescriptor {
                args: vec![ArgDescriptor {
                    name: "x".to_owned(),
                    ty: "u32".to_owned(),
                }],
                result: "u64".to_owned(),
                error: error.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn aligns_methods_and_writes_signatures() {
        let services = [
            ServiceDescriptor {
                name: "a.B".to_owned(),
                version: "1".to_owned(),
                methods: vec![
                    method("add", "unary", true, Some("E")),
                    method("countdown", "stream", false, None),
                ],
            },
            ServiceDescriptor {
                name: "c.D".to_owned(),
                version: String::new(),
                methods: vec![
                    method("note", "one-way", false, None),
                    MethodDescriptor {
                        signature: None,
                        ..method("raw", "unary", false, None)
                    },
                ],
            },
        ];
        assert_eq!(
            render(&services),
            "a.B version 1\n\
             \x20 add        unary    idempotent  (x: u32) -> Result<u64, E>\n\
             \x20 countdown  stream               (x: u32) -> stream u64\n\
             c.D (unversioned)\n\
             \x20 note       one-way              (x: u32)\n\
             \x20 raw        unary                (signature not described)"
        );
    }
}
