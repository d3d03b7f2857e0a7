//! Reading the XML answers of the node's own S3 and CloudFormation APIs: elements found by
//! name, their text unescaped. Enough for documents whose shape is known; not a parser for
//! XML in general.

/// The inner XML of every `<tag>…</tag>` in `xml`, in order; an element of the same name
/// inside one ends the outer one at its own closing tag, so a tag must not nest in itself
/// where this is used (`within` narrows the search first).
pub fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The inner XML of the first `<tag>…</tag>`, with whatever it holds (elements of the same
/// name included: their tags are counted).
pub fn within<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let mut depth = 1usize;
    let mut at = start;
    loop {
        let next_open = xml[at..].find(&open).map(|i| i + at);
        let next_close = xml[at..].find(&close).map(|i| i + at)?;
        match next_open {
            Some(o) if o < next_close => {
                depth += 1;
                at = o + open.len();
            }
            _ => {
                depth -= 1;
                if depth == 0 {
                    return Some(&xml[start..next_close]);
                }
                at = next_close + close.len();
            }
        }
    }
}

/// The unescaped text of the first `<tag>…</tag>`.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    blocks(xml, tag).first().map(|s| unescape(s))
}

/// XML's five entities and numeric character references.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';').filter(|&i| i <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_found_and_unescaped() {
        let doc = "<R><Contents><Key>a&amp;b&#x3C;</Key><Size>3</Size></Contents>\
                   <Contents><Key>c</Key></Contents><Outputs><member><K>1</K></member></Outputs></R>";
        let keys: Vec<String> = blocks(doc, "Contents")
            .iter()
            .filter_map(|c| text(c, "Key"))
            .collect();
        assert_eq!(keys, ["a&b<", "c"]);
        assert_eq!(text(doc, "Size").as_deref(), Some("3"));
        assert_eq!(text(doc, "Missing"), None);
        assert_eq!(
            within(doc, "Outputs").map(|o| blocks(o, "member").len()),
            Some(1)
        );
        assert_eq!(unescape("x & y &bogus; &#65;"), "x & y &bogus; A");
        assert_eq!(within("<a><a>1</a></a><a>2</a>", "a"), Some("<a>1</a>"));
        assert_eq!(within("<a>unclosed", "a"), None);
    }
}
