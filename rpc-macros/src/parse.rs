//! From the annotated trait to a checked model of the service.
//!
//! Every rule violation is recorded with the span of the offending tokens, and parsing carries
//! on so that one expansion reports all of them. What could still be understood is kept, so the
//! expansion can include it and one mistake does not turn into a cascade of unrelated errors.

use std::collections::HashMap;

use proc_macro2::Ident;
use quote::quote;
use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{
    Attribute, FnArg, GenericArgument, ItemTrait, LitStr, Pat, PathArguments, Receiver, ReturnType,
    Signature, TraitItem, TraitItemFn, Type, TypeImplTrait, TypePath, parse_quote,
};

use crate::attrs::{MethodOptions, ServiceArgs};
use crate::errors::Errors;

/// Method names the generated client defines itself.
const RESERVED: &[&str] = &[
    "new",
    "with_options",
    "with_timeout",
    "with_metadata",
    "caller",
    "from_arc",
    "SERVICE",
    "VERSION",
];

/// Serde implements its traits for tuples of up to 16 elements.
const MAX_WIRE_ARGS: usize = 16;

/// A service trait, checked.
pub(crate) struct ServiceDef {
    /// The trait as written, without its items (they are in `entries`).
    pub(crate) item: ItemTrait,
    /// The service's name on the wire.
    pub(crate) name: String,
    /// The service's version; empty for none.
    pub(crate) version: String,
    /// The trait's items, in order.
    pub(crate) entries: Vec<Entry>,
    /// Whether the server and client can be generated at all (not for a generic trait).
    pub(crate) adapters: bool,
}

impl ServiceDef {
    /// The methods the server and client serve and call: those without errors.
    pub(crate) fn methods(&self) -> impl Iterator<Item = &Method> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Method(m) if m.valid => Some(m),
            _ => None,
        })
    }
}

/// An item of the service trait.
pub(crate) enum Entry {
    /// A method whose signature could be understood; it is rewritten in the trait.
    Method(Method),
    /// Anything else, emitted in the trait as written (it has already caused an error).
    Verbatim(TraitItem),
}

/// A service method.
pub(crate) struct Method {
    /// Its attributes other than `#[rpc]`.
    pub(crate) attrs: Vec<Attribute>,
    /// Its signature as written.
    pub(crate) sig: Signature,
    /// Its name on the wire.
    pub(crate) wire_name: String,
    /// Whether its first argument is the call's `CallContext`.
    pub(crate) context: bool,
    /// The arguments that travel, in order.
    pub(crate) args: Vec<(Ident, Type)>,
    pub(crate) output: Output,
    pub(crate) one_way: bool,
    pub(crate) idempotent: bool,
    /// The `#[rpc(name = "...")]` literal, if any, to point at.
    pub(crate) name_literal: Option<LitStr>,
    /// Whether it breaks no rule; only such methods are served and called.
    pub(crate) valid: bool,
}

/// What a method returns.
pub(crate) enum Output {
    /// Nothing.
    Unit,
    /// A value.
    Value(Type),
    /// `Result<T, E>`: `E` travels as an application error.
    Result { ok: Box<Type>, err: Box<Type> },
    /// `ServerStream<T>`.
    Stream(Type),
}

impl Method {
    /// The type the method's future resolves to.
    pub(crate) fn output_type(&self) -> Type {
        match &self.sig.output {
            ReturnType::Default => parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        }
    }
}

/// Checks the trait; errors go to `errors`.
pub(crate) fn service(args: ServiceArgs, mut item: ItemTrait, errors: &mut Errors) -> ServiceDef {
    let mut adapters = true;
    if let Some(unsafety) = &item.unsafety {
        errors.spanned(unsafety, "a service trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.spanned(auto, "a service trait cannot be an auto trait");
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics,
            "a service trait cannot be generic: the generated server and client name its \
             methods' types",
        );
        adapters = false;
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.spanned(where_clause, "a service trait cannot have a `where` clause");
        adapters = false;
    }
    if !item.supertraits.is_empty() {
        errors.spanned(
            &item.supertraits,
            "a service trait cannot have supertraits: the server can only call the service's \
             own methods (`Send + Sync + 'static` are added for you)",
        );
    }

    let mut entries = Vec::new();
    for trait_item in std::mem::take(&mut item.items) {
        match trait_item {
            TraitItem::Fn(f) => entries.push(method(f, errors)),
            other => {
                errors.spanned(
                    &other,
                    "a service trait can only contain `async fn` methods: no associated types, \
                     constants or macros",
                );
                entries.push(Entry::Verbatim(other));
            }
        }
    }
    check_wire_names(&mut entries, errors);

    ServiceDef {
        name: args
            .name
            .map_or_else(|| item.ident.unraw().to_string(), |n| n.value()),
        version: args.version.map(|v| v.value()).unwrap_or_default(),
        item,
        entries,
        adapters,
    }
}

fn method(mut f: TraitItemFn, errors: &mut Errors) -> Entry {
    // Errors in `shape` leave a signature that cannot be rewritten; those in `rules` do not.
    let mut shape = Errors::default();
    let mut rules = Errors::default();
    let options = MethodOptions::take(&mut f.attrs, &mut rules);
    let sig = &f.sig;
    let (fn_token, ident) = (&sig.fn_token, &sig.ident);

    if let Some(body) = &f.default {
        shape.spanned(
            body,
            "a service method cannot have a default body: write it in the implementation",
        );
    }
    if let Some(constness) = &sig.constness {
        shape.spanned(constness, "a service method cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        shape.spanned(unsafety, "a service method cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        shape.spanned(abi, "a service method cannot have an ABI");
    }
    if sig.asyncness.is_none() {
        shape.spanned(
            quote!(#fn_token #ident),
            "a service method must be an `async fn`",
        );
    }
    if !sig.generics.params.is_empty() {
        shape.spanned(
            &sig.generics,
            "a service method cannot be generic: its arguments and result cross the wire as \
             concrete types",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        shape.spanned(
            where_clause,
            "a service method cannot have a `where` clause",
        );
    }
    if let Some(variadic) = &sig.variadic {
        shape.spanned(variadic, "a service method cannot be variadic");
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if is_ref_self(r) => {}
        Some(FnArg::Receiver(r)) => shape.spanned(
            r,
            "the receiver of a service method must be `&self`: the server shares one \
             implementation between concurrent calls",
        ),
        _ => shape.spanned(
            quote!(#fn_token #ident),
            "a service method must take `&self` as its first argument",
        ),
    }

    let mut context = false;
    let mut args = Vec::new();
    let mut wire_args = Vec::new();
    let typed = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(t) => Some(t),
        FnArg::Receiver(_) => None,
    });
    for (i, arg) in typed.enumerate() {
        let name = match plain_name(&arg.pat) {
            Some(name) => Some(name.clone()),
            None => {
                let pat = &arg.pat;
                shape.spanned(
                    pat,
                    "an argument of a service method must be a plain name: patterns, `mut` and \
                     `_` are not supported here (an implementation may still declare it `mut`)",
                );
                None
            }
        };
        check_type(&arg.ty, &mut shape);
        if is_call_context(&arg.ty) {
            if i == 0 {
                context = true;
                continue;
            }
            rules.spanned(
                &arg.ty,
                "`CallContext` must be the first argument after `&self`: it does not travel, \
                 the server supplies it",
            );
        }
        if let Some(name) = name {
            args.push((name, (*arg.ty).clone()));
        }
        wire_args.push(arg);
    }
    if wire_args.len() > MAX_WIRE_ARGS {
        // Point at the arguments beyond the limit.
        let extra = &wire_args[MAX_WIRE_ARGS..];
        rules.spanned(
            quote!(#(#extra),*),
            format!(
                "a service method can have at most {MAX_WIRE_ARGS} arguments: they travel as a \
                 tuple; group them in a struct"
            ),
        );
    }

    let output = match &sig.output {
        ReturnType::Default => Output::Unit,
        ReturnType::Type(_, ty) => {
            check_type(ty, &mut shape);
            output(ty)
        }
    };
    match &output {
        Output::Value(t) | Output::Stream(t) => check_owned(t, &mut shape),
        Output::Result { ok, err } => {
            check_owned(ok, &mut shape);
            check_owned(err, &mut shape);
        }
        Output::Unit => {}
    }
    if let (Some(one_way), ReturnType::Type(_, ty)) = (options.one_way, &sig.output) {
        let message = match output {
            Output::Stream(_) => {
                "a one-way method cannot stream: the caller never receives an answer; drop \
                 `#[rpc(oneway)]` or return `()`"
            }
            Output::Unit => "",
            _ => {
                "a one-way method must return `()`: the caller never receives an answer; drop \
                 `#[rpc(oneway)]` or the return type"
            }
        };
        if !message.is_empty() {
            rules.spanned(ty, message);
            // Also point at the option, so both ends of the conflict are shown.
            rules.push(syn::Error::new(one_way, "`oneway` declared here"));
        }
    }

    let rust_name = ident.unraw().to_string();
    if RESERVED.contains(&rust_name.as_str()) {
        rules.spanned(
            ident,
            format!(
                "`{rust_name}` is reserved: the generated client has a method or constant of \
                 that name; rename the method and keep the wire name with \
                 `#[rpc(name = \"{rust_name}\")]`"
            ),
        );
    } else if rust_name.starts_with("__") {
        rules.spanned(
            ident,
            "method names starting with `__` are reserved for generated code",
        );
    }

    if !shape.is_empty() {
        errors.extend(shape);
        errors.extend(rules);
        return Entry::Verbatim(TraitItem::Fn(sanitize(f)));
    }
    let valid = rules.is_empty();
    errors.extend(rules);
    Entry::Method(Method {
        attrs: f.attrs,
        wire_name: options
            .name
            .as_ref()
            .map_or_else(|| rust_name.clone(), LitStr::value),
        sig: f.sig,
        context,
        args,
        output,
        one_way: options.one_way.is_some(),
        idempotent: options.idempotent,
        name_literal: options.name,
        valid,
    })
}

/// Reports methods that share a wire name, pointing at the later ones.
fn check_wire_names(entries: &mut [Entry], errors: &mut Errors) {
    let mut seen: HashMap<String, Ident> = HashMap::new();
    for entry in entries {
        let Entry::Method(m) = entry else { continue };
        match seen.get(&m.wire_name) {
            Some(first) => {
                let message = format!(
                    "duplicate wire name `{}`: method `{first}` already uses it; rename one or \
                     set `#[rpc(name = \"...\")]`",
                    m.wire_name
                );
                match &m.name_literal {
                    Some(lit) => errors.spanned(lit, message),
                    None => errors.spanned(&m.sig.ident, message),
                }
                m.valid = false;
            }
            None => {
                seen.insert(m.wire_name.clone(), m.sig.ident.clone());
            }
        }
    }
}

/// `&self`, without an explicit lifetime or type.
fn is_ref_self(r: &Receiver) -> bool {
    matches!(&r.reference, Some((_, None))) && r.mutability.is_none() && r.colon_token.is_none()
}

/// Rejects `impl Trait` anywhere in `ty`.
fn check_type(ty: &Type, errors: &mut Errors) {
    struct FindImpl<'a>(&'a mut Errors);
    impl<'ast> Visit<'ast> for FindImpl<'_> {
        fn visit_type_impl_trait(&mut self, ty: &'ast TypeImplTrait) {
            self.0.spanned(
                ty,
                "`impl Trait` is not allowed in a service method: arguments and results cross \
                 the wire as concrete types",
            );
        }
    }
    FindImpl(errors).visit_type(ty);
    check_owned(ty, errors);
}

/// Rejects a reference: what crosses the wire is decoded into owned values.
fn check_owned(ty: &Type, errors: &mut Errors) {
    if let Type::Reference(r) = ty {
        errors.spanned(
            r,
            "a service method's arguments and results must be owned types (use `String` rather \
             than `&str`): they are decoded from the wire",
        );
    }
}

/// Classifies a return type by its last path segment.
fn output(ty: &Type) -> Output {
    if matches!(ty, Type::Tuple(t) if t.elems.is_empty()) {
        return Output::Unit;
    }
    let Some((name, types)) = last_segment(ty) else {
        return Output::Value(ty.clone());
    };
    match (name.to_string().as_str(), types.as_slice()) {
        ("Result", [ok, err]) => Output::Result {
            ok: Box::new(ok.clone()),
            err: Box::new(err.clone()),
        },
        ("ServerStream", [item]) => Output::Stream(item.clone()),
        _ => Output::Value(ty.clone()),
    }
}

/// Whether `ty` is written as `Bytes`, `bytes::Bytes` or `::bytes::Bytes`: such arguments and
/// results decode as slices of the frame (`rpc_core::SharedBytes`), without a copy. (A type of
/// another crate named `Bytes` must be written with its path, as `other::Bytes`.)
pub(crate) fn is_bytes(ty: &Type) -> bool {
    let ty = match ty {
        Type::Group(g) => &*g.elem,
        Type::Paren(p) => &*p.elem,
        ty => ty,
    };
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return false;
    };
    let names: Vec<String> = path
        .segments
        .iter()
        .map(|segment| match segment.arguments {
            PathArguments::None => segment.ident.to_string(),
            _ => String::new(),
        })
        .collect();
    match names.as_slice() {
        [only] => only == "Bytes" && path.leading_colon.is_none(),
        [krate, name] => krate == "bytes" && name == "Bytes",
        _ => false,
    }
}

fn is_call_context(ty: &Type) -> bool {
    matches!(last_segment(ty), Some((name, types)) if name == "CallContext" && types.is_empty())
}

/// The last segment of a path type: its name and its type arguments.
fn last_segment(ty: &Type) -> Option<(&Ident, Vec<Type>)> {
    let ty = match ty {
        Type::Group(g) => &*g.elem,
        Type::Paren(p) => &*p.elem,
        ty => ty,
    };
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let segment = path.segments.last()?;
    let types = match &segment.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((&segment.ident, types))
}

/// Makes a rejected bodiless method acceptable in a trait, so that the only error about it is
/// ours: patterns other than plain names are not allowed in functions without a body.
fn sanitize(mut f: TraitItemFn) -> TraitItemFn {
    if f.default.is_none() {
        for arg in &mut f.sig.inputs {
            if let FnArg::Typed(t) = arg
                && plain_name(&t.pat).is_none()
            {
                *t.pat = parse_quote!(_);
            }
        }
    }
    f
}

/// The name an argument pattern binds, when it is nothing but a name.
fn plain_name(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {
            Some(&p.ident)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(item: ItemTrait) -> (ServiceDef, Option<String>) {
        let mut errors = Errors::default();
        let def = service(ServiceArgs::default(), item, &mut errors);
        let message = (!errors.is_empty()).then(|| quote!(#errors).to_string());
        (def, message)
    }

    fn kinds(def: &ServiceDef) -> Vec<(&str, &'static str)> {
        def.methods()
            .map(|m| {
                let kind = match (&m.output, m.one_way) {
                    (_, true) => "oneway",
                    (Output::Unit, _) => "unit",
                    (Output::Value(_), _) => "value",
                    (Output::Result { .. }, _) => "result",
                    (Output::Stream(_), _) => "stream",
                };
                (m.wire_name.as_str(), kind)
            })
            .collect()
    }

    #[test]
    fn classifies_methods_by_their_signature() {
        let (def, errors) = check(parse_quote! {
            trait Svc {
                async fn a(&self);
                async fn b(&self) -> ();
                async fn c(&self) -> Option<u8>;
                async fn d(&self) -> std::result::Result<u8, String>;
                async fn e(&self) -> io::Result<u8>;
                async fn f(&self, ctx: rpc_core::CallContext, x: u8) -> rpc_core::ServerStream<u8>;
                #[rpc(oneway, name = "g2")]
                async fn g(&self, x: u8, y: u8);
                async fn r#type(&self);
            }
        });
        assert_eq!(errors, None);
        assert_eq!(def.name, "Svc");
        assert_eq!(
            kinds(&def),
            [
                ("a", "unit"),
                ("b", "unit"),
                ("c", "value"),
                ("d", "result"),
                ("e", "value"),
                ("f", "stream"),
                ("g2", "oneway"),
                ("type", "unit"),
            ]
        );
        let f = def.methods().nth(5).unwrap();
        assert!(f.context);
        assert_eq!(f.args.len(), 1);
    }

    #[test]
    fn a_method_breaking_a_rule_is_kept_in_the_trait_only() {
        let (def, errors) = check(parse_quote! {
            trait Svc {
                async fn ok(&self) -> u8;
                #[rpc(oneway)]
                async fn bad(&self) -> u8;
                fn not_async(&self) -> u8;
                async fn ok2(&self) -> u8;
                #[rpc(name = "ok2")]
                async fn dup(&self) -> u8;
            }
        });
        let errors = errors.expect("errors");
        assert!(errors.contains("must return `()`"), "{errors}");
        assert!(errors.contains("must be an `async fn`"), "{errors}");
        assert!(errors.contains("duplicate wire name `ok2`"), "{errors}");
        assert_eq!(kinds(&def), [("ok", "value"), ("ok2", "value")]);
        assert_eq!(def.entries.len(), 5);
        assert!(matches!(def.entries[2], Entry::Verbatim(_)));
    }
}
