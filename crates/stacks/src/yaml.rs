//! Template text (YAML or JSON) to one JSON value. CloudFormation's YAML short forms
//! (`!Ref Name`, `!GetAtt Res.Attr`, `!Sub …`) become the long forms (`{"Ref": …}`,
//! `{"Fn::GetAtt": [Res, Attr]}`, `{"Fn::Sub": …}`), so the rest of the crate sees one shape.

use serde_json::{Map, Value};

use crate::StackError;

/// The largest template text accepted.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Functions with a `!Name` short form that becomes `Fn::Name`.
const SHORT_FUNCTIONS: &[&str] = &[
    "Sub",
    "Join",
    "Select",
    "Split",
    "If",
    "Equals",
    "FindInMap",
    "ImportValue",
    "Not",
    "And",
    "Or",
    "Base64",
    "GetAZs",
    "Cidr",
    "Length",
    "ToJsonString",
];

/// Parses a template's text, JSON or YAML.
pub fn parse(text: &str) -> Result<Value, StackError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(StackError::validation(format!(
            "Template is {} bytes; the most accepted is {MAX_TEMPLATE_BYTES}.",
            text.len()
        )));
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| {
            StackError::validation(format!(
                "Template format error: JSON not well-formed. ({e})"
            ))
        });
    }
    if let Some(line) = alias_line(text) {
        // As CloudFormation: no anchors or aliases (which also keeps a small text from
        // expanding into a huge value).
        return Err(StackError::validation(format!(
            "Template format error: YAML anchors and aliases are not supported (line {line})."
        )));
    }
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        StackError::validation(format!(
            "Template format error: YAML not well-formed. ({e})"
        ))
    })?;
    convert(yaml, &mut Vec::new())
}

/// The first line (from 1) holding a YAML anchor (`&name`) or alias (`*name`) where a node
/// starts, outside quotes, comments and block scalars.
fn alias_line(text: &str) -> Option<usize> {
    let mut block: Option<usize> = None; // indentation a block scalar's lines exceed
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if let Some(min) = block {
            if line.trim().is_empty() || indent > min {
                continue;
            }
            block = None;
        }
        let bytes = line.as_bytes();
        let mut quote: Option<u8> = None;
        let mut previous = b' ';
        let mut last_significant = b'\n'; // the line's start
        for (i, &b) in bytes.iter().enumerate() {
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'\'' | b'"' if matches!(previous, b' ' | b':' | b'-' | b'[' | b',' | b'{') => {
                        quote = Some(b)
                    }
                    b'#' if previous == b' ' || i == 0 => break,
                    b'&' | b'*'
                        if matches!(
                            last_significant,
                            b'\n' | b':' | b'-' | b'[' | b',' | b'{' | b'?'
                        ) && (previous == b' '
                            || matches!(previous, b'[' | b',' | b'{')
                            || i == indent)
                            && bytes
                                .get(i + 1)
                                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
                    {
                        return Some(n + 1);
                    }
                    _ => {}
                },
            }
            if !b.is_ascii_whitespace() {
                last_significant = b;
            }
            previous = b;
        }
        // A block scalar starts after `|` or `>` (with its modifiers) at the end of a line.
        let trimmed = line.trim_end();
        let tail = trimmed.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
        if quote.is_none() && (tail.ends_with('|') || tail.ends_with('>')) {
            block = Some(indent);
        }
    }
    None
}

fn where_(path: &[String]) -> String {
    if path.is_empty() {
        "the template's root".to_owned()
    } else {
        path.join(".")
    }
}

fn convert(value: serde_yaml::Value, path: &mut Vec<String>) -> Result<Value, StackError> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                // Floats stay as the template wrote them, as far as f64 can.
                serde_json::Number::from_f64(n.as_f64().unwrap_or_default())
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                path.push(i.to_string());
                out.push(convert(item, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        return Err(StackError::validation(format!(
                            "Template format error: a key under {} is not a string.",
                            where_(path)
                        )));
                    }
                };
                path.push(key.clone());
                let v = convert(v, path)?;
                path.pop();
                if out.insert(key.clone(), v).is_some() {
                    return Err(StackError::validation(format!(
                        "Template format error: {key} appears twice under {}.",
                        where_(path)
                    )));
                }
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = convert(tagged.value, path)?;
            let mut out = Map::new();
            match name.as_str() {
                "Ref" => {
                    out.insert("Ref".into(), inner);
                }
                "Condition" => {
                    out.insert("Condition".into(), inner);
                }
                "GetAtt" => {
                    let args = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((res, attr)) => Value::Array(vec![res.into(), attr.into()]),
                            None => {
                                return Err(StackError::validation(format!(
                                    "Template error: !GetAtt {s} at {} must be RESOURCE.ATTRIBUTE.",
                                    where_(path)
                                )));
                            }
                        },
                        other => other,
                    };
                    out.insert("Fn::GetAtt".into(), args);
                }
                n if SHORT_FUNCTIONS.contains(&n) => {
                    out.insert(format!("Fn::{n}"), inner);
                }
                _ => {
                    return Err(StackError::validation(format!(
                        "Template format error: unsupported tag {tag} at {}.",
                        where_(path)
                    )));
                }
            }
            Value::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_forms_become_long_forms() {
        let v = parse(
            "A: !Ref B\nC: !GetAtt D.Arn\nE: !Sub '${X}-y'\nF: !Join [',', [a, !Ref G]]\n\
             H: !If [Cond, 1, !Ref AWS::NoValue]\nI: !GetAtt [J, StreamArn]\nK: !Condition L\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "A": {"Ref": "B"},
                "C": {"Fn::GetAtt": ["D", "Arn"]},
                "E": {"Fn::Sub": "${X}-y"},
                "F": {"Fn::Join": [",", ["a", {"Ref": "G"}]]},
                "H": {"Fn::If": ["Cond", 1, {"Ref": "AWS::NoValue"}]},
                "I": {"Fn::GetAtt": ["J", "StreamArn"]},
                "K": {"Condition": "L"},
            })
        );
    }

    #[test]
    fn anchors_and_aliases_are_refused_but_lookalikes_are_not() {
        assert!(
            parse("A: &x {B: 1}\nC: *x\n")
                .unwrap_err()
                .message
                .contains("line 1")
        );
        assert!(
            parse("A:\n  - 1\nB:\n  - *x\n")
                .unwrap_err()
                .message
                .contains("anchors")
        );
        // Stars and ampersands that are text.
        let ok = "Code: |\n  *emphasis* & more\n  x = a * b\nName: 'a *b'\nSub: !Sub '${A}&${B}'\nGlob: 'src/*'\n";
        assert!(parse(ok).is_ok(), "{:?}", parse(ok).err());
        assert!(parse("Pattern: \"*.py\"\nText: rock & roll\n").is_ok());
    }

    #[test]
    fn bad_text_is_refused_with_where() {
        let e = parse("A: [1, 2\n").unwrap_err();
        assert!(e.message.contains("YAML not well-formed"), "{}", e.message);
        let e = parse("Resources:\n  R:\n    P: !Bogus x\n").unwrap_err();
        assert!(e.message.contains("!Bogus") && e.message.contains("Resources.R.P"));
        let e = parse("A: !GetAtt nodot\n").unwrap_err();
        assert!(e.message.contains("RESOURCE.ATTRIBUTE"));
        let e = parse("A: 1\nA: 2\n").unwrap_err();
        assert!(e.message.contains("not well-formed") || e.message.contains("twice"));
        // Version strings and dates stay strings.
        let v = parse("Version: 2012-10-17\nOn: on\n").unwrap();
        assert_eq!(v, json!({"Version": "2012-10-17", "On": "on"}));
    }
}
