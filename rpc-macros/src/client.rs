//! The typed client: `FooClient<C>`, one `async fn` per method over any `rpc_core::Caller`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ReturnType;
use syn::spanned::Spanned;

use crate::parse::{Method, Output, ServiceDef, is_bytes};

pub(crate) fn expand(def: &ServiceDef) -> TokenStream {
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let (name, version) = (&def.name, &def.version);

    let struct_doc = format!(
        "A client of the `{name}` service (see [`{trait_ident}`]): one `async fn` per method, \
         over a [`Client`](::rpc_core::Client) or any other [`Caller`](::rpc_core::Caller)."
    );
    let methods = def.methods().map(|m| method(def, m));

    quote! {
        #[doc = #struct_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #[allow(dead_code)]
        #vis struct #client<C = ::rpc_core::Client> {
            caller: C,
            options: ::rpc_core::CallOptions,
        }

        #[allow(dead_code)]
        impl<C: ::rpc_core::Caller> #client<C> {
            /// The service's name on the wire.
            #vis const SERVICE: &'static str = #name;
            /// The service's version; empty for none.
            #vis const VERSION: &'static str = #version;

            /// A client making its calls through `caller`, with default options.
            #vis fn new(caller: C) -> Self {
                Self { caller, options: ::rpc_core::CallOptions::default() }
            }

            /// A copy of this client whose calls use `options`.
            #vis fn with_options(&self, options: ::rpc_core::CallOptions) -> Self {
                Self { caller: ::core::clone::Clone::clone(&self.caller), options }
            }

            /// A copy of this client whose calls time out after `timeout`.
            #vis fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                let options = ::core::clone::Clone::clone(&self.options).timeout(timeout);
                Self::with_options(self, options)
            }

            /// A copy of this client whose calls carry the metadata entry `key: value`, in
            /// addition to those already set.
            ///
            /// # Errors
            ///
            /// When the key or the value is not valid metadata.
            #vis fn with_metadata(
                &self,
                key: impl ::core::convert::Into<::std::string::String>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> ::core::result::Result<Self, ::rpc_core::MetadataError> {
                let options = ::core::clone::Clone::clone(&self.options).metadata(key, value)?;
                ::core::result::Result::Ok(Self::with_options(self, options))
            }

            /// What the calls are made through.
            #vis fn caller(&self) -> &C {
                &self.caller
            }

            #(#methods)*
        }

        impl<C: ::rpc_core::Caller> ::rpc_core::NamedService for #client<C> {
            const SERVICE: &'static str = #name;
            const VERSION: &'static str = #version;
        }

        impl<C: ::rpc_core::Caller> ::rpc_core::ServiceClient for #client<C> {
            type Caller = C;

            fn from_caller(caller: C) -> Self {
                Self { caller, options: ::rpc_core::CallOptions::default() }
            }
        }
    }
}

fn method(def: &ServiceDef, m: &Method) -> TokenStream {
    let vis = &def.item.vis;
    let ident = &m.sig.ident;
    let (service, version, wire_name, idempotent) =
        (&def.name, &def.version, &m.wire_name, m.idempotent);
    let names: Vec<_> = m.args.iter().map(|(name, _)| name).collect();
    let types = m.args.iter().map(|(_, ty)| ty);
    // `Bytes` arguments lend their buffers to the request's frame instead of being copied.
    let values = m.args.iter().map(|(name, ty)| {
        if is_bytes(ty) {
            quote!(::rpc_core::Lend(&#name))
        } else {
            quote!(#name)
        }
    });

    let mut docs: Vec<_> = m
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .map(|a| quote!(#a))
        .collect();
    if docs.is_empty() {
        let doc = format!("Calls `{wire_name}`.");
        docs.push(quote!(#[doc = #doc]));
    }
    // A method's lint allowances (say `clippy::too_many_arguments`) and deprecation apply to
    // the client method with the same arguments too.
    let forwarded = m
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("deprecated") || a.path().is_ident("allow"));

    let (helper, ret) = match &m.output {
        _ if m.one_way => (quote!(one_way), quote!(::rpc_core::RpcError)),
        Output::Unit => (quote!(unary), quote!((), ::rpc_core::RpcError)),
        // A `Bytes` result decodes as a slice of the answer's frame.
        Output::Value(t) if is_bytes(t) => (quote!(unary_shared), quote!(#t, ::rpc_core::RpcError)),
        Output::Value(t) => (quote!(unary), quote!(#t, ::rpc_core::RpcError)),
        Output::Result { ok, err } if is_bytes(ok) => (
            quote!(unary_result_shared),
            quote!(#ok, ::rpc_core::RpcError<#err>),
        ),
        Output::Result { ok, err } => (
            quote!(unary_result),
            quote!(#ok, ::rpc_core::RpcError<#err>),
        ),
        // `Bytes` items decode as slices of their frames.
        Output::Stream(t) if is_bytes(t) => (
            quote!(server_stream_shared),
            quote!(::rpc_core::RpcStream<#t>, ::rpc_core::RpcError),
        ),
        Output::Stream(t) => (
            quote!(server_stream),
            quote!(::rpc_core::RpcStream<#t>, ::rpc_core::RpcError),
        ),
    };
    let ret = if m.one_way {
        quote!(::core::result::Result<(), #ret>)
    } else {
        quote!(::core::result::Result<#ret>)
    };
    // Types that do not (de)serialize are reported in the method's signature rather than at
    // the attribute: at the arguments, at the result, or else at the method's name.
    let ret_span = match &m.sig.output {
        ReturnType::Default => ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let args_span = m
        .args
        .first()
        .map_or_else(|| ident.span(), |(_, ty)| ty.span());
    let helper = quote_spanned!(ret_span=> ::rpc_core::__private::#helper);
    let args = quote_spanned!(args_span=> &(#(#values,)*));
    let target = quote! {
        &::rpc_core::MethodTarget {
            service: #service,
            version: #version,
            method: #wire_name,
            idempotent: #idempotent,
        }
    };
    let (caller, options) = (quote!(&self.caller), quote!(&self.options));
    let call = quote_spanned! {ident.span()=>
        #helper(#caller, #options, #target, #args).await
    };
    quote! {
        #(#docs)*
        #(#forwarded)*
        #vis async fn #ident(&self, #(#names: #types),*) -> #ret {
            #call
        }
    }
}
