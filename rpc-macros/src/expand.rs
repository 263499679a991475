//! The expansion: the rewritten trait, then the server adapter and the client.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{ItemTrait, ReturnType};

use crate::attrs::ServiceArgs;
use crate::errors::Errors;
use crate::parse::{self, Entry, Method, ServiceDef};
use crate::{client, server};

/// Expands `#[service(args)] item`.
///
/// On errors the output is the `compile_error!`s beside as much of the expansion as could be
/// built, so that uses of the trait and of the generated types do not add errors of their own.
pub(crate) fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = ServiceArgs::parse(args, &mut errors);
    let item: ItemTrait = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            errors.push(syn::Error::new(
                Span::call_site(),
                "`#[service]` applies to a trait of `async fn` methods",
            ));
            return quote!(#errors #item);
        }
    };
    let def = parse::service(args, item, &mut errors);
    let service_trait = service_trait(&def);
    let adapters = if def.adapters {
        let server = server::expand(&def);
        let client = client::expand(&def);
        quote!(#server #client)
    } else {
        TokenStream::new()
    };
    quote! {
        #errors
        #service_trait
        #adapters
    }
}

/// The trait, with `Send + Sync + 'static` added and each `async fn` turned into a function
/// returning a `Send` future, so that the server can spawn the calls.
fn service_trait(def: &ServiceDef) -> TokenStream {
    let ItemTrait {
        attrs,
        vis,
        unsafety,
        trait_token,
        ident,
        generics,
        supertraits,
        ..
    } = &def.item;
    let where_clause = &generics.where_clause;
    let supertraits = supertraits.iter();
    let items = def.entries.iter().map(|entry| match entry {
        Entry::Method(m) => trait_method(m),
        Entry::Verbatim(item) => quote!(#item),
    });
    quote! {
        #(#attrs)*
        #vis #unsafety #trait_token #ident #generics:
            ::core::marker::Send + ::core::marker::Sync + 'static #(+ #supertraits)*
        #where_clause
        {
            #(#items)*
        }
    }
}

fn trait_method(m: &Method) -> TokenStream {
    let attrs = &m.attrs;
    let mut sig = m.sig.clone();
    sig.asyncness = None;
    let output = m.output_type();
    let span = match &m.sig.output {
        ReturnType::Default => m.sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    sig.output = syn::parse_quote_spanned! {span=>
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    quote! {
        #(#attrs)*
        #sig;
    }
}
