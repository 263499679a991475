//! The options of `#[service(...)]` and of `#[rpc(...)]` on methods.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr};

use crate::errors::Errors;

/// The arguments of `#[service(name = "...", version = "...")]`.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
}

impl ServiceArgs {
    /// Parses the attribute's arguments; errors are recorded and the options parsed before the
    /// first error are kept.
    pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Self {
        let mut out = ServiceArgs::default();
        let parser = syn::meta::parser(|meta| {
            let slot = if meta.path.is_ident("name") {
                &mut out.name
            } else if meta.path.is_ident("version") {
                &mut out.version
            } else {
                return Err(meta.error(
                    "unknown `#[service]` option; expected `name = \"...\"` or `version = \"...\"`",
                ));
            };
            let lit: LitStr = meta.value()?.parse()?;
            if slot.is_some() {
                return Err(syn::Error::new_spanned(&meta.path, "duplicate option"));
            }
            *slot = Some(lit);
            Ok(())
        });
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        if let Some(name) = &out.name
            && name.value().is_empty()
        {
            errors.spanned(name, "the service name must not be empty");
        }
        out
    }
}

/// The options of `#[rpc(...)]` on a method.
#[derive(Default)]
pub(crate) struct MethodOptions {
    /// Where `oneway` was written, if it was.
    pub(crate) one_way: Option<Span>,
    pub(crate) idempotent: bool,
    /// The wire name override.
    pub(crate) name: Option<LitStr>,
}

impl MethodOptions {
    /// Takes the `#[rpc(...)]` attributes out of `attrs` and parses them.
    pub(crate) fn take(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Self {
        let mut out = MethodOptions::default();
        let (rpc, rest): (Vec<_>, Vec<_>) = attrs.drain(..).partition(|a| a.path().is_ident("rpc"));
        *attrs = rest;
        for attr in &rpc {
            let result = attr.parse_nested_meta(|meta| {
                let duplicate = || syn::Error::new_spanned(&meta.path, "duplicate `#[rpc]` option");
                if meta.path.is_ident("oneway") {
                    if out.one_way.is_some() {
                        return Err(duplicate());
                    }
                    out.one_way = Some(meta.path.span());
                } else if meta.path.is_ident("idempotent") {
                    if out.idempotent {
                        return Err(duplicate());
                    }
                    out.idempotent = true;
                } else if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if out.name.is_some() {
                        return Err(duplicate());
                    }
                    if lit.value().is_empty() {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            "the wire name must not be empty",
                        ));
                    }
                    out.name = Some(lit);
                } else {
                    return Err(meta.error(
                        "unknown `#[rpc]` option; expected `oneway`, `idempotent` or \
                         `name = \"...\"`",
                    ));
                }
                Ok(())
            });
            if let Err(e) = result {
                errors.push(e);
            }
        }
        out
    }
}
