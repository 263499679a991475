//! Short excerpts of what users typed, for error messages: an error that quotes its input must
//! not grow with it (a rejected 20 MB message is not echoed back whole).

use std::borrow::Cow;

/// How many characters of a user's input an error message quotes.
pub const EXCERPT_CHARS: usize = 40;

/// `text` if it has at most [`EXCERPT_CHARS`] characters, else its first [`EXCERPT_CHARS`]
/// followed by `…`.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_quoted_whole_and_long_input_cut_at_a_character() {
        assert_eq!(excerpt("bob"), "bob");
        let exact = "é".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact.as_str());
        let long = format!("{exact}and more");
        assert_eq!(excerpt(&long), format!("{exact}…"));
        assert_eq!(
            excerpt(&"x".repeat(20 << 20)).chars().count(),
            EXCERPT_CHARS + 1
        );
    }
}
