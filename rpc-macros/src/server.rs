//! The server adapter: `FooServer<T>`, an `rpc_core::Service` that decodes each call's
//! arguments, calls the implementation and encodes its answer.

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use crate::parse::{Method, Output, ServiceDef, is_bytes};

pub(crate) fn expand(def: &ServiceDef) -> TokenStream {
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let server = format_ident!("{}Server", trait_ident);
    let (name, version) = (&def.name, &def.version);

    let struct_doc = format!(
        "Serves an implementation of [`{trait_ident}`] as the `{name}` service: give it to \
         `rpc_core::ServerBuilder::service`."
    );
    let infos = def.methods().map(method_info);
    let arms: Vec<_> = def.methods().map(|m| arm(trait_ident, m)).collect();
    // Without methods, `method` and `call` would be unused.
    let dispatch = if arms.is_empty() {
        quote! {
            let _ = (method, call);
            ::core::option::Option::None
        }
    } else {
        quote! {
            match method {
                #(#arms)*
                _ => ::core::option::Option::None,
            }
        }
    };

    quote! {
        #[doc = #struct_doc]
        #[allow(dead_code)]
        #vis struct #server<T> {
            inner: ::std::sync::Arc<T>,
        }

        #[allow(dead_code)]
        impl<T: #trait_ident> #server<T> {
            /// Serves `service`.
            #vis fn new(service: T) -> Self {
                Self::from_arc(::std::sync::Arc::new(service))
            }

            /// Serves a shared `service`.
            #vis fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<T> ::core::fmt::Debug for #server<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server))
                    .field("service", &#name)
                    .field("version", &#version)
                    .finish_non_exhaustive()
            }
        }

        impl<T> ::rpc_core::NamedService for #server<T> {
            const SERVICE: &'static str = #name;
            const VERSION: &'static str = #version;
        }

        impl<T: #trait_ident> ::rpc_core::Service for #server<T> {
            fn name(&self) -> &'static str {
                <Self as ::rpc_core::NamedService>::SERVICE
            }

            fn version(&self) -> &'static str {
                <Self as ::rpc_core::NamedService>::VERSION
            }

            fn methods(&self) -> &'static [::rpc_core::MethodInfo] {
                const METHODS: &[::rpc_core::MethodInfo] = &[#(#infos),*];
                METHODS
            }

            #[allow(deprecated)]
            fn call(
                &self,
                method: &str,
                call: ::rpc_core::ServerCall,
            ) -> ::core::option::Option<
                ::rpc_core::BoxFuture<'static, ::rpc_core::Reply>,
            > {
                #dispatch
            }
        }
    }
}

fn method_info(m: &Method) -> TokenStream {
    let name = &m.wire_name;
    let idempotent = m.idempotent;
    let kind = if m.one_way {
        quote!(OneWay)
    } else if matches!(m.output, Output::Stream(_)) {
        quote!(ServerStream)
    } else {
        quote!(Unary)
    };
    let args = m.args.iter().map(|(name, ty)| {
        let name = name.unraw().to_string();
        let ty = type_text(ty);
        quote!(::rpc_core::ArgInfo { name: #name, ty: #ty })
    });
    let (result, error) = match &m.output {
        _ if m.one_way => ("()".to_owned(), None),
        Output::Unit => ("()".to_owned(), None),
        Output::Value(ty) | Output::Stream(ty) => (type_text(ty), None),
        Output::Result { ok, err } => (type_text(ok), Some(type_text(err))),
    };
    let error = match error {
        Some(e) => quote!(::core::option::Option::Some(#e)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::rpc_core::MethodInfo {
            name: #name,
            kind: ::rpc_core::MethodKind::#kind,
            idempotent: #idempotent,
            signature: ::core::option::Option::Some(::rpc_core::MethodSignature {
                args: &[#(#args),*],
                result: #result,
                error: #error,
            }),
        }
    }
}

/// A type as written, with the spacing a person would use: `Vec<(u8, String)>`, whether the
/// compiler's token printer would write `Vec < (u8 , String) >` or `Vec<(u8,String)>`.
fn type_text(ty: &Type) -> String {
    tokens_text(quote!(#ty))
}

fn tokens_text(tokens: TokenStream) -> String {
    // Operators made of several characters (`::`, `->`, `>>`) come as joint punctuation and a
    // lifetime as an apostrophe before a name: glue them into words first, then space the words.
    let mut words: Vec<String> = Vec::new();
    let mut operator = String::new();
    for tree in tokens {
        let text = match tree {
            TokenTree::Punct(p) => {
                operator.push(p.as_char());
                if p.spacing() == Spacing::Alone && p.as_char() != '\'' {
                    words.push(std::mem::take(&mut operator));
                }
                continue;
            }
            TokenTree::Ident(i) => i.to_string(),
            TokenTree::Literal(l) => l.to_string(),
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                format!("{open}{}{close}", tokens_text(g.stream()))
            }
        };
        if operator.ends_with('\'') {
            operator.push_str(&text);
            words.push(std::mem::take(&mut operator));
        } else {
            if !operator.is_empty() {
                words.push(std::mem::take(&mut operator));
            }
            words.push(text);
        }
    }
    if !operator.is_empty() {
        words.push(operator);
    }
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 && spaced(&words[i - 1], word) {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether two adjacent tokens of a type keep a space between them: between words (`dyn
/// Error`, `&'a mut T`), after a comma or semicolon, and around `->`, `+` and `=`.
fn spaced(before: &str, after: &str) -> bool {
    let word_end = before
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"');
    let word_start = after
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '\'' || c == '"');
    (word_end && word_start)
        || matches!(before, "," | ";" | "->" | "+" | "=")
        || matches!(after, "->" | "+" | "=")
}

/// The match arm that starts a call of `m`.
fn arm(trait_ident: &syn::Ident, m: &Method) -> TokenStream {
    let wire_name = &m.wire_name;
    let ident = &m.sig.ident;
    // Generated names, so that the user's argument names cannot shadow `call` or `inner`.
    let names: Vec<_> = (0..m.args.len())
        .map(|i| format_ident!("arg{}", i))
        .collect();
    // `Bytes` arguments decode as slices of the request's frame, then convert.
    let shared = m.args.iter().any(|(_, ty)| is_bytes(ty));
    let types = m.args.iter().map(|(_, ty)| {
        if is_bytes(ty) {
            quote!(::rpc_core::SharedBytes)
        } else {
            quote!(#ty)
        }
    });
    let converts = m
        .args
        .iter()
        .zip(&names)
        .filter(|((_, ty), _)| is_bytes(ty))
        .map(|((_, ty), name)| quote!(let #name: #ty = ::core::convert::From::from(#name);));
    // A type that does not decode is reported at the first argument's type (a span cannot
    // cover the whole list on stable).
    let args_span = m
        .args
        .first()
        .map_or_else(Span::call_site, |(_, ty)| ty.span());
    // Spanned like the arguments, so that a type that does not decode is reported there.
    let args_fn = if shared {
        format_ident!("args_shared", span = args_span)
    } else {
        format_ident!("args", span = args_span)
    };
    let decode = if m.args.is_empty() {
        quote! {
            if let ::core::result::Result::Err(e) = call.args::<()>() {
                return call.reply_error(e);
            }
        }
    } else {
        quote_spanned! {args_span=>
            let (#(#names,)*) = match call.#args_fn::<(#(#types,)*)>() {
                ::core::result::Result::Ok(args) => args,
                ::core::result::Result::Err(e) => return call.reply_error(e),
            };
            #(#converts)*
        }
    };
    let context = m.context.then(|| quote!(call.context(),));
    let invoke = quote! {
        <T as #trait_ident>::#ident(&*inner, #context #(#names),*).await
    };
    let output_span = match &m.sig.output {
        ReturnType::Default => m.sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let answer = match &m.output {
        Output::Unit => quote! {
            #invoke;
            call.reply(&())
        },
        // A `Bytes` result lends its buffer to the answer's frame instead of being copied.
        Output::Value(t) if is_bytes(t) => quote_spanned! {output_span=>
            let out = #invoke;
            call.reply(&::rpc_core::Lend(&out))
        },
        Output::Value(_) => quote_spanned! {output_span=>
            let out = #invoke;
            call.reply(&out)
        },
        Output::Result { ok, .. } if is_bytes(ok) => quote_spanned! {output_span=>
            let out = #invoke;
            call.reply_result(&out.as_ref().map(::rpc_core::Lend))
        },
        Output::Result { .. } => quote_spanned! {output_span=>
            let out = #invoke;
            call.reply_result(&out)
        },
        Output::Stream(_) => quote_spanned! {output_span=>
            let out = #invoke;
            call.reply_stream(out)
        },
    };
    quote! {
        #wire_name => {
            let inner = ::std::sync::Arc::clone(&self.inner);
            ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                #decode
                #answer
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    #[test]
    fn bytes_types_are_recognised_by_their_written_path() {
        let bytes: [Type; 4] = [
            parse_quote!(Bytes),
            parse_quote!(bytes::Bytes),
            parse_quote!(::bytes::Bytes),
            parse_quote!((Bytes)),
        ];
        for ty in bytes {
            assert!(is_bytes(&ty), "{}", type_text(&ty));
        }
        let others: [Type; 6] = [
            parse_quote!(other::Bytes),
            parse_quote!(::Bytes),
            parse_quote!(Bytes<u8>),
            parse_quote!(Vec<u8>),
            parse_quote!(serde_bytes::ByteBuf),
            parse_quote!(Option<Bytes>),
        ];
        for ty in others {
            assert!(!is_bytes(&ty), "{}", type_text(&ty));
        }
    }

    #[test]
    fn types_read_as_written() {
        let cases: [(Type, &str); 8] = [
            (parse_quote!(String), "String"),
            (parse_quote!(Vec<u8>), "Vec<u8>"),
            (
                parse_quote!(std::collections::BTreeMap<String, Vec<(u8, bool)>>),
                "std::collections::BTreeMap<String, Vec<(u8, bool)>>",
            ),
            (parse_quote!([u8; 32]), "[u8; 32]"),
            (
                parse_quote!(Option<Box<dyn Error + Send>>),
                "Option<Box<dyn Error + Send>>",
            ),
            (parse_quote!(Box<dyn Fn(u8) -> u8>), "Box<dyn Fn(u8) -> u8>"),
            (parse_quote!(Cow<'static, str>), "Cow<'static, str>"),
            (parse_quote!(()), "()"),
        ];
        for (ty, text) in cases {
            assert_eq!(type_text(&ty), text);
        }
    }
}
