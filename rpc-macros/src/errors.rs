//! Collecting several compile errors so that one expansion reports them all.

use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::{ToTokens, TokenStreamExt};

/// Errors found so far, combined into one [`syn::Error`].
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Moves the errors of `other` into `self`.
    pub(crate) fn extend(&mut self, other: Errors) {
        if let Some(e) = other.0 {
            self.push(e);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl ToTokens for Errors {
    /// One `compile_error!` per error.
    fn to_tokens(&self, tokens: &mut TokenStream) {
        if let Some(e) = &self.0 {
            tokens.append_all(e.to_compile_error());
        }
    }
}
