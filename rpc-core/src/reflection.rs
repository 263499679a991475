//! The reflection service, `rpc.Reflection` version `1`: what a server serves, for tools that
//! know nothing of it in advance (`rpcctl ls`, a generic caller, a dashboard).
//!
//! Every server routes it unless [`ServerBuilder::reflection`](crate::ServerBuilder::reflection)
//! turns it off. It lists every service the server routes, itself included, so a client can
//! tell from the listing alone that reflection is there and at which version.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::service::{MethodInfo, MethodKind, Service};

/// Lists what a server serves. The server implements it; callers use [`ReflectionClient`].
#[crate::service(name = "rpc.Reflection", version = "1")]
pub trait Reflection {
    /// Every service the server routes, this one included, ordered by name then version; each
    /// service's methods in the order the service declares them.
    #[rpc(idempotent)]
    async fn services(&self) -> Vec<ServiceDescriptor>;
}

/// A service as the reflection service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDescriptor {
    /// The service's name on the wire.
    pub name: String,
    /// Its version; empty for none.
    pub version: String,
    /// Its methods, in the order the service declares them.
    pub methods: Vec<MethodDescriptor>,
}

impl ServiceDescriptor {
    /// Describes a service from its name, version and [`MethodInfo`]s.
    pub fn of(service: &dyn Service) -> Self {
        ServiceDescriptor {
            name: service.name().to_owned(),
            version: service.version().to_owned(),
            methods: service.methods().iter().map(MethodDescriptor::of).collect(),
        }
    }

    /// The method called `name`, if the service has one.
    pub fn method(&self, name: &str) -> Option<&MethodDescriptor> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// A method as the reflection service describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodDescriptor {
    /// The method's name on the wire.
    pub name: String,
    /// How it answers: `"unary"`, `"one-way"` or `"stream"` (a server stream). Text rather than
    /// an enum, so that a client reads the listing of a server that knows more kinds than it.
    pub kind: String,
    /// Whether a client may retry it elsewhere after a connection error.
    pub idempotent: bool,
    /// Its arguments and result; `None` when the service does not describe them (a
    /// hand-written [`Service`] may not).
    pub signature: Option<SignatureDescriptor>,
}

impl MethodDescriptor {
    /// Describes a method.
    pub fn of(info: &MethodInfo) -> Self {
        MethodDescriptor {
            name: info.name.to_owned(),
            kind: kind_name(info.kind).to_owned(),
            idempotent: info.idempotent,
            signature: info.signature.map(|s| SignatureDescriptor {
                args: s
                    .args
                    .iter()
                    .map(|a| ArgDescriptor {
                        name: a.name.to_owned(),
                        ty: a.ty.to_owned(),
                    })
                    .collect(),
                result: s.result.to_owned(),
                error: s.error.map(str::to_owned),
            }),
        }
    }

    /// The kind as a [`MethodKind`]; `None` for a kind this build does not know.
    pub fn method_kind(&self) -> Option<MethodKind> {
        match self.kind.as_str() {
            "unary" => Some(MethodKind::Unary),
            "one-way" => Some(MethodKind::OneWay),
            "stream" => Some(MethodKind::ServerStream),
            _ => None,
        }
    }
}

/// What a method takes and returns, as the service's source declares it (see
/// [`MethodSignature`](crate::MethodSignature)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureDescriptor {
    /// The arguments that travel, in order: the tuple a call sends.
    pub args: Vec<ArgDescriptor>,
    /// The result of a unary method (`T` of `Result<T, E>`), the item of a streaming one, `()`
    /// for one that returns nothing.
    pub result: String,
    /// The application error `E` of a method returning `Result<T, E>`.
    pub error: Option<String>,
}

/// An argument: its name and its type as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgDescriptor {
    /// The argument's name.
    pub name: String,
    /// Its type, as written in the service's source.
    pub ty: String,
}

/// The name of a kind on the wire.
fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::OneWay => "one-way",
        MethodKind::ServerStream => "stream",
    }
}

/// Whether a service is the reflection service, which the server adds itself.
pub(crate) fn is_reflection(service: &dyn Service) -> bool {
    (service.name(), service.version())
        == (
            <ReflectionClient as crate::NamedService>::SERVICE,
            <ReflectionClient as crate::NamedService>::VERSION,
        )
}

/// The server's own implementation: a listing made once, when the server starts (a server's
/// services do not change while it runs).
#[derive(Debug, Default)]
struct Listing {
    services: Arc<[ServiceDescriptor]>,
}

impl Reflection for Listing {
    async fn services(&self) -> Vec<ServiceDescriptor> {
        self.services.to_vec()
    }
}

/// Adds the reflection service to a server's routes, describing them and itself. A service of
/// the same name and version added by the user is kept instead.
pub(crate) fn add_to(routes: &mut Vec<Arc<dyn Service>>) {
    if routes.iter().any(|s| is_reflection(&**s)) {
        return;
    }
    let mut services: Vec<ServiceDescriptor> =
        routes.iter().map(|s| ServiceDescriptor::of(&**s)).collect();
    // The description of the reflection service comes from its generated server, which needs
    // a listing to exist: an empty one serves for reading the methods.
    services.push(ServiceDescriptor::of(&ReflectionServer::new(
        Listing::default(),
    )));
    services.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    routes.push(Arc::new(ReflectionServer::new(Listing {
        services: services.into(),
    })));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ArgInfo, MethodSignature};

    #[test]
    fn describes_kinds_and_signatures() {
        const ARGS: &[ArgInfo] = &[ArgInfo {
            name: "a",
            ty: "Vec<u8>",
        }];
        let info = MethodInfo {
            name: "m",
            kind: MethodKind::OneWay,
            idempotent: true,
            signature: Some(MethodSignature {
                args: ARGS,
                result: "()",
                error: Some("E"),
            }),
        };
        let described = MethodDescriptor::of(&info);
        assert_eq!(described.kind, "one-way");
        assert_eq!(described.method_kind(), Some(MethodKind::OneWay));
        let signature = described.signature.expect("described");
        assert_eq!(signature.args[0].ty, "Vec<u8>");
        assert_eq!(signature.error.as_deref(), Some("E"));
    }

    #[test]
    fn lists_itself_once_in_order() {
        let mut routes: Vec<Arc<dyn Service>> = Vec::new();
        add_to(&mut routes);
        add_to(&mut routes);
        assert_eq!(routes.len(), 1);
        assert!(is_reflection(&*routes[0]));
        let method = MethodDescriptor::of(&routes[0].methods()[0]);
        assert_eq!(method.name, "services");
        assert_eq!(method.kind, "unary");
        let signature = method.signature.expect("generated by #[service]");
        assert!(signature.args.is_empty());
        assert_eq!(signature.result, "Vec<ServiceDescriptor>");
    }
}
