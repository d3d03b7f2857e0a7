//! Splits an expression into tokens. Every character ends up in some token, so that a syntax
//! error can always name the token it stopped at and the text around it.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A letter followed by letters, digits and underscores: an attribute name, a function
    /// name or a keyword.
    Ident,
    /// `#` followed by letters, digits and underscores: an expression attribute name.
    Name,
    /// `:` followed by letters, digits and underscores: an expression attribute value.
    Value,
    /// Decimal digits, as in a list index.
    Number,
    /// One of `( ) [ ] , . = <> < <= > >= + -`.
    Punct,
    /// A character no token starts with.
    Unknown,
    /// The end of the text.
    Eof,
}

/// A token and where it lies in the text (byte offsets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'t> {
    pub kind: Kind,
    pub text: &'t str,
    pub start: usize,
    pub end: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The tokens of `text`, always ending with one `Eof` token.
pub(crate) fn lex(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let word_end = |mut j: usize| {
        while j < bytes.len() && is_word_byte(bytes[j]) {
            j += 1;
        }
        j
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (kind, end) = match c {
            b'a'..=b'z' | b'A'..=b'Z' => (Kind::Ident, word_end(i + 1)),
            b'0'..=b'9' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                (Kind::Number, j)
            }
            b'#' | b':' => {
                let j = word_end(i + 1);
                if j == i + 1 {
                    (Kind::Unknown, j)
                } else if c == b'#' {
                    (Kind::Name, j)
                } else {
                    (Kind::Value, j)
                }
            }
            b'<' if matches!(next, Some(b'=' | b'>')) => (Kind::Punct, i + 2),
            b'>' if next == Some(b'=') => (Kind::Punct, i + 2),
            b'(' | b')' | b'[' | b']' | b',' | b'.' | b'=' | b'<' | b'>' | b'+' | b'-' => {
                (Kind::Punct, i + 1)
            }
            _ => {
                let width = text[i..].chars().next().map_or(1, char::len_utf8);
                (Kind::Unknown, i + width)
            }
        };
        out.push(Token {
            kind,
            text: &text[i..end],
            start: i,
            end,
        });
        i = end;
    }
    out.push(Token {
        kind: Kind::Eof,
        text: "",
        start: text.len(),
        end: text.len(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        lex(text).into_iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn splits_names_placeholders_and_operators() {
        assert_eq!(
            kinds("a.#b[12] <= :v_1"),
            vec![
                (Kind::Ident, "a"),
                (Kind::Punct, "."),
                (Kind::Name, "#b"),
                (Kind::Punct, "["),
                (Kind::Number, "12"),
                (Kind::Punct, "]"),
                (Kind::Punct, "<="),
                (Kind::Value, ":v_1"),
                (Kind::Eof, ""),
            ]
        );
        assert_eq!(
            kinds("a<>b>=c<d>e"),
            vec![
                (Kind::Ident, "a"),
                (Kind::Punct, "<>"),
                (Kind::Ident, "b"),
                (Kind::Punct, ">="),
                (Kind::Ident, "c"),
                (Kind::Punct, "<"),
                (Kind::Ident, "d"),
                (Kind::Punct, ">"),
                (Kind::Ident, "e"),
                (Kind::Eof, ""),
            ]
        );
    }

    #[test]
    fn unknown_characters_become_single_tokens() {
        assert_eq!(
            kinds("_x !é #"),
            vec![
                (Kind::Unknown, "_"),
                (Kind::Ident, "x"),
                (Kind::Unknown, "!"),
                (Kind::Unknown, "é"),
                (Kind::Unknown, "#"),
                (Kind::Eof, ""),
            ]
        );
    }
}
