use std::collections::HashMap;

use serde_json::{Value as Json, json};

use super::*;
use crate::value::{Item, Number, item_from_json};

fn item(wire: Json) -> Item {
    item_from_json(&wire).unwrap()
}

fn values(wire: Json) -> HashMap<String, Value> {
    wire.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), Value::from_json(v).unwrap()))
        .collect()
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn n(text: &str) -> Value {
    Value::N(Number::parse(text).unwrap())
}

fn s(text: &str) -> Value {
    Value::S(text.to_owned())
}

fn path(text: &str) -> Path {
    let cx = Context::new(None, None);
    parse_projection(text, &cx).unwrap().remove(0)
}

/// Parses `text` as a ConditionExpression with the given placeholders.
fn condition(
    text: &str,
    names: &HashMap<String, String>,
    vals: &Json,
) -> Result<Condition, ExprError> {
    let vals = values(vals.clone());
    let cx = Context::new(Some(names), Some(&vals));
    parse_condition(text, &cx, "ConditionExpression")
}

/// Whether `text` holds for `target`, with `:one`, `:two`, … and any extra values.
fn holds(text: &str, target: &Item, extra: Json) -> bool {
    let mut vals = json!({":one": {"N": "1"}, ":two": {"N": "2"}, ":zero": {"N": "0"}});
    if let (Some(all), Some(extra)) = (vals.as_object_mut(), extra.as_object()) {
        all.extend(extra.clone());
    }
    condition(text, &HashMap::new(), &vals)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .eval(target)
}

fn condition_error(text: &str, names: &[(&str, &str)], vals: Json) -> String {
    condition(text, &self::names(names), &vals).unwrap_err().0
}

#[test]
fn and_binds_tighter_than_or_and_not_tighter_than_and() {
    let it = item(json!({"a": {"N": "1"}, "b": {"N": "0"}, "c": {"N": "0"}}));
    assert!(holds("a = :one OR b = :one AND c = :one", &it, json!({})));
    assert!(!holds(
        "(a = :one OR b = :one) AND c = :one",
        &it,
        json!({})
    ));
    assert!(holds("b = :one AND c = :one OR a = :one", &it, json!({})));
    assert!(!holds("NOT a = :one AND b = :zero", &it, json!({})));
    assert!(holds("NOT (a = :one AND b = :one)", &it, json!({})));
    assert!(holds("NOT NOT a = :one", &it, json!({})));
    assert!(holds(
        "a = :one and not b = :one or c = :two",
        &it,
        json!({})
    ));
}

#[test]
fn comparisons_order_numbers_strings_and_binaries() {
    let it = item(json!({
        "n": {"N": "10"}, "s": {"S": "b"}, "b": {"B": "Ag=="}, "big": {"B": "gA=="}
    }));
    let extra = json!({":nine": {"N": "9.5"}, ":a": {"S": "a"}, ":c": {"S": "c"},
        ":b1": {"B": "AQ=="}, ":b127": {"B": "fw=="}});
    for (text, expected) in [
        ("n > :nine", true),
        ("n >= :nine", true),
        ("n < :nine", false),
        ("n <= :nine", false),
        ("n <> :nine", true),
        ("s > :a AND s < :c", true),
        ("s BETWEEN :a AND :c", true),
        ("n BETWEEN :one AND :nine", false),
        ("b > :b1", true),
        // Binaries compare as unsigned bytes: 0x80 sorts after 0x7f.
        ("big > :b127", true),
    ] {
        assert_eq!(holds(text, &it, extra.clone()), expected, "{text}");
    }
}

#[test]
fn different_types_and_missing_attributes_compare_false_except_not_equal() {
    let it = item(json!({"n": {"N": "1"}, "l": {"L": [{"N": "1"}]}}));
    let extra = json!({":s1": {"S": "1"}});
    for (text, expected) in [
        ("n = :s1", false),
        ("n <> :s1", true),
        ("n < :s1", false),
        ("n >= :s1", false),
        ("absent = :one", false),
        ("absent <> :one", true),
        ("absent <> gone", true),
        ("absent < gone", false),
        ("absent BETWEEN :zero AND :two", false),
        ("l < :one", false),
        ("absent IN (:one, :two)", false),
    ] {
        assert_eq!(holds(text, &it, extra.clone()), expected, "{text}");
    }
}

#[test]
fn equality_is_deep() {
    let it = item(json!({
        "m": {"M": {"x": {"L": [{"N": "1.0"}, {"SS": ["b", "a"]}]}, "y": {"NULL": true}}},
        "ss": {"SS": ["x", "y"]}
    }));
    let extra = json!({
        ":m": {"M": {"y": {"NULL": true}, "x": {"L": [{"N": "1"}, {"SS": ["a", "b"]}]}}},
        ":other": {"M": {"y": {"NULL": true}}},
        ":ss": {"SS": ["y", "x"]}
    });
    assert!(holds("m = :m", &it, extra.clone()));
    assert!(!holds("m = :other", &it, extra.clone()));
    assert!(holds("ss = :ss AND m <> :other", &it, extra));
}

#[test]
fn between_and_in() {
    let it = item(json!({"a": {"N": "2"}, "s": {"S": "kiwi"}}));
    let extra = json!({":apple": {"S": "apple"}, ":kiwi": {"S": "kiwi"}, ":three": {"N": "3"}});
    assert!(holds("a BETWEEN :one AND :two", &it, extra.clone()));
    assert!(holds("a BETWEEN :two AND :three", &it, extra.clone()));
    assert!(!holds("a BETWEEN :zero AND :one", &it, extra.clone()));
    assert!(holds("s between :apple and :kiwi", &it, extra.clone()));
    assert!(holds("a IN (:one, :two)", &it, extra.clone()));
    assert!(!holds("a IN (:one, :three, :kiwi)", &it, extra.clone()));
    assert!(holds("s IN (:apple, :kiwi)", &it, extra));
}

#[test]
fn nested_paths_with_names_and_indexes() {
    let it = item(json!({
        "m": {"M": {"l": {"L": [{"N": "0"}, {"M": {"x": {"S": "deep"}}}]}, "a.b": {"N": "1"}}},
        "#odd": {"N": "1"}
    }));
    let nm = names(&[("#m", "m"), ("#dotted", "a.b"), ("#odd", "#odd")]);
    let vals = json!({":deep": {"S": "deep"}, ":one": {"N": "1"}});
    let check = |text: &str| condition(text, &nm, &vals).unwrap().eval(&it);
    assert!(check("m.l[1].x = :deep"));
    assert!(check("#m.l[1].x = :deep AND #m.#dotted = :one"));
    assert!(check("#odd = :one"));
    assert!(!check("m.l[2].x = :deep"));
    assert!(!check("m.l.x = :deep"));
    assert!(!check("m[0] = :deep"));
    // A name holding a dot is one name, not a path.
    assert!(!check("m.a.b = :one"));
    assert!(check("attribute_exists(m . l [ 1 ] . x)"));
}

#[test]
fn attribute_functions() {
    let it = item(json!({
        "s": {"S": "hello"}, "n": {"N": "5"}, "b": {"B": "AQID"}, "t": {"BOOL": false},
        "z": {"NULL": true}, "m": {"M": {"k": {"S": "v"}}}, "l": {"L": [{"S": "x"}, {"N": "7"}]},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AQ=="]}
    }));
    for (attr, t) in [
        ("s", "S"),
        ("n", "N"),
        ("b", "B"),
        ("t", "BOOL"),
        ("z", "NULL"),
        ("m", "M"),
        ("l", "L"),
        ("ss", "SS"),
        ("ns", "NS"),
        ("bs", "BS"),
    ] {
        let extra = json!({":t": {"S": t}, ":other": {"S": if t == "S" { "N" } else { "S" }}});
        assert!(
            holds(&format!("attribute_type({attr}, :t)"), &it, extra.clone()),
            "{attr}"
        );
        assert!(
            !holds(&format!("attribute_type({attr}, :other)"), &it, extra),
            "{attr}"
        );
    }
    let extra = json!({
        ":he": {"S": "he"}, ":ell": {"S": "ell"}, ":x": {"S": "x"}, ":a": {"S": "a"},
        ":seven": {"N": "7"}, ":b01": {"B": "AQ=="}, ":b02": {"B": "Ag=="}, ":b0203": {"B": "AgM="},
        ":q": {"S": "q"}
    });
    for (text, expected) in [
        ("attribute_exists(s)", true),
        ("attribute_exists(m.k)", true),
        ("attribute_exists(m.nope)", false),
        ("attribute_not_exists(nope)", true),
        ("attribute_not_exists(l[1])", false),
        ("attribute_not_exists(l[2])", true),
        ("begins_with(s, :he)", true),
        ("begins_with(s, :ell)", false),
        ("begins_with(b, :b01)", true),
        ("begins_with(b, :b02)", false),
        ("begins_with(n, :he)", false),
        ("begins_with(absent, :he)", false),
        ("contains(s, :ell)", true),
        ("contains(s, :q)", false),
        ("contains(ss, :a)", true),
        ("contains(ss, :q)", false),
        ("contains(ns, :two)", true),
        ("contains(ns, :seven)", false),
        ("contains(bs, :b01)", true),
        ("contains(l, :x)", true),
        ("contains(l, :seven)", true),
        ("contains(l, :a)", false),
        ("contains(b, :b0203)", true),
        ("contains(n, :seven)", false),
        ("contains(absent, :a)", false),
        ("size(s) = :five", true),
        ("size(b) = :three", true),
        ("size(m) = :one", true),
        ("size(l) = :two", true),
        ("size(ss) = :two", true),
        ("size(bs) < :two", true),
        ("size(n) >= :zero", false),
        ("size(absent) >= :zero", false),
        ("size(absent) <> :zero", true),
        ("(size(s)) > :two", true),
        ("size(l) BETWEEN :one AND :two", true),
        ("size(s) IN (:five)", true),
    ] {
        let mut all = extra.clone();
        all.as_object_mut().unwrap().extend([
            (":five".to_owned(), json!({"N": "5"})),
            (":three".to_owned(), json!({"N": "3"})),
        ]);
        assert_eq!(holds(text, &it, all), expected, "{text}");
    }
}

#[test]
fn size_counts_utf16_code_units_of_strings() {
    let it = item(json!({"s": {"S": "é𝄞"}}));
    assert!(holds(
        "size(s) = :three",
        &it,
        json!({":three": {"N": "3"}})
    ));
}

#[test]
fn keywords_are_case_insensitive_but_functions_are_not() {
    let it = item(json!({"a": {"N": "1"}}));
    assert!(holds(
        "a bEtWeEn :zero AnD :two oR NoT a In (:one)",
        &it,
        json!({})
    ));
    assert_eq!(
        condition_error("BEGINS_WITH(a, :one)", &[], json!({":one": {"N": "1"}})),
        "Invalid ConditionExpression: Invalid function name; function: BEGINS_WITH"
    );
}

#[test]
fn reserved_words_need_placeholders() {
    assert_eq!(
        condition_error("status = :v", &[], json!({":v": {"S": "x"}})),
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"
    );
    assert_eq!(
        condition_error("a.Name = :v", &[], json!({":v": {"S": "x"}})),
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: Name"
    );
    let vals = values(json!({":v": {"S": "x"}}));
    let nm = names(&[("#s", "status")]);
    let cx = Context::new(Some(&nm), Some(&vals));
    let err = parse_condition("size = :v", &cx, "FilterExpression").unwrap_err();
    assert_eq!(
        err.0,
        "Invalid FilterExpression: Attribute name is a reserved keyword; reserved keyword: size"
    );
    assert!(parse_condition("#s = :v", &cx, "FilterExpression").is_ok());
}

#[test]
fn placeholders_must_be_defined() {
    assert_eq!(
        condition_error("a = :v", &[], json!({":w": {"S": "x"}})),
        "Invalid ConditionExpression: An expression attribute value used in expression is not defined; attribute value: :v"
    );
    assert_eq!(
        condition_error("#n = :w", &[], json!({":w": {"S": "x"}})),
        "Invalid ConditionExpression: An expression attribute name used in the document path is not defined; attribute name: #n"
    );
    let cx = Context::new(None, None);
    assert_eq!(
        parse_condition("a = :v", &cx, "ConditionExpression")
            .unwrap_err()
            .0,
        "Invalid ConditionExpression: An expression attribute value used in expression is not defined; attribute value: :v"
    );
}

#[test]
fn unused_placeholders_are_reported_names_first() {
    let vals = values(json!({":a": {"S": "x"}, ":b": {"S": "y"}, ":c": {"S": "z"}}));
    let nm = names(&[("#a", "a"), ("#b", "b"), ("#c", "c")]);
    let cx = Context::new(Some(&nm), Some(&vals));
    parse_condition("#a = :a", &cx, "ConditionExpression").unwrap();
    assert_eq!(
        cx.finish().unwrap_err().0,
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#b, #c}"
    );
    parse_projection("#b, #c", &cx).unwrap();
    assert_eq!(
        cx.finish().unwrap_err().0,
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:b, :c}"
    );
    parse_update("SET x = :b, y = :c", &cx).unwrap();
    assert_eq!(cx.finish(), Ok(()));
    assert_eq!(Context::new(None, None).finish(), Ok(()));
}

#[test]
fn empty_and_oversized_expressions() {
    let cx = Context::new(None, None);
    assert_eq!(
        parse_condition("", &cx, "ConditionExpression")
            .unwrap_err()
            .0,
        "Invalid ConditionExpression: The expression can not be empty;"
    );
    assert_eq!(
        parse_update("  ", &cx).unwrap_err().0,
        "Invalid UpdateExpression: The expression can not be empty;"
    );
    assert_eq!(
        parse_projection("", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: The expression can not be empty;"
    );
    assert_eq!(
        parse_key_condition("", &cx).unwrap_err().0,
        "Invalid KeyConditionExpression: The expression can not be empty;"
    );
    let long = vec!["a"; 2049].join(",");
    assert_eq!(
        parse_projection(&long, &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Expression size has exceeded the maximum allowed size; expression size: 4097"
    );
}

#[test]
fn syntax_errors() {
    let v = json!({":v": {"S": "x"}});
    assert_eq!(
        condition_error("a = = :v", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: "=", near: "= = :v""#
    );
    assert_eq!(
        condition_error("a = :v AND", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "AND""#
    );
    assert_eq!(
        condition_error("a", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "a""#
    );
    assert_eq!(
        condition_error("a == :v", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: "=", near: "== :v""#
    );
    assert_eq!(
        condition_error("a = 5", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: "5", near: "= 5""#
    );
    assert_eq!(
        condition_error("a IN ()", &[], v.clone()),
        r#"Invalid ConditionExpression: Syntax error; token: ")", near: "()""#
    );
    assert!(condition_error("a BETWEEN :v", &[], v.clone()).contains("Syntax error"));
    assert!(condition_error("a = :v OR OR b = :v", &[], v).contains(r#"token: "OR""#));
}

#[test]
fn redundant_parentheses_are_rejected() {
    let v = json!({":v": {"S": "x"}});
    assert_eq!(
        condition_error("((a = :v))", &[], v.clone()),
        "Invalid ConditionExpression: The expression has redundant parentheses;"
    );
    assert!(condition("(a = :v) AND ((b = :v) OR (c = :v))", &HashMap::new(), &v).is_ok());
}

#[test]
fn functions_used_in_the_wrong_place() {
    let v = json!({":v": {"S": "x"}, ":t": {"BOOL": true}, ":l": {"L": []}});
    for (text, message) in [
        (
            "begins_with(a, :v) = :t",
            "The function is not allowed to be used this way in an expression; function: begins_with",
        ),
        (
            "size(a)",
            "The function is not allowed to be used this way in an expression; function: size",
        ),
        (
            "size(attribute_exists(a)) > :v",
            "The function is not allowed to be used this way in an expression; function: attribute_exists",
        ),
        (
            "if_not_exists(a, :v) = :v",
            "The function is not allowed in a condition expression; function: if_not_exists",
        ),
        (
            "list_append(a, :l) = :l",
            "The function is not allowed in a condition expression; function: list_append",
        ),
        ("dog(a) = :v", "Invalid function name; function: dog"),
        ("dog(a)", "Invalid function name; function: dog"),
        (
            "attribute_exists(a, b)",
            "Incorrect number of operands for operator or function; operator or function: attribute_exists, number of operands: 2",
        ),
        (
            "contains(a)",
            "Incorrect number of operands for operator or function; operator or function: contains, number of operands: 1",
        ),
        (
            "attribute_exists(:v)",
            "Operator or function requires a document path; operator or function: attribute_exists",
        ),
        (
            "size(:v) > :v",
            "Operator or function requires a document path; operator or function: size",
        ),
    ] {
        assert_eq!(
            condition_error(text, &[], v.clone()),
            format!("Invalid ConditionExpression: {message}"),
            "{text}"
        );
    }
}

#[test]
fn constants_of_the_wrong_type_are_rejected() {
    let v = json!({
        ":l": {"L": [{"N": "1"}]}, ":n": {"N": "1"}, ":ten": {"N": "10"}, ":s": {"S": "a"},
        ":bad": {"S": "Q"}, ":m": {"M": {}}
    });
    for (text, message) in [
        (
            "a < :l",
            "Incorrect operand type for operator or function; operator or function: <, operand type: L",
        ),
        (
            ":m >= a",
            "Incorrect operand type for operator or function; operator or function: >=, operand type: M",
        ),
        (
            "a BETWEEN :n AND :l",
            "Incorrect operand type for operator or function; operator or function: BETWEEN, operand type: L",
        ),
        (
            "a BETWEEN :ten AND :n",
            "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {N:10}, upper bound operand: AttributeValue: {N:1}",
        ),
        (
            "a BETWEEN :n AND :s",
            "The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {N:1}, upper bound operand: AttributeValue: {S:a}",
        ),
        (
            "begins_with(a, :n)",
            "Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
        ),
        (
            "attribute_type(a, :bad)",
            "Invalid attribute type name found; type: Q, valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}",
        ),
        (
            "attribute_type(a, :n)",
            "Incorrect operand type for operator or function; operator or function: attribute_type, operand type: N",
        ),
        (
            "a = a",
            "The first operand must be distinct from the remaining operands for this operator or function; operator: =, first operand: [a]",
        ),
        (
            "contains(a.b[1], a.b[1])",
            "The first operand must be distinct from the remaining operands for this operator or function; operator: contains, first operand: [a, b, [1]]",
        ),
    ] {
        assert_eq!(
            condition_error(text, &[], v.clone()),
            format!("Invalid ConditionExpression: {message}"),
            "{text}"
        );
    }
    // Equality accepts any type.
    assert!(condition("a = :l AND b <> :m", &HashMap::new(), &v).is_ok());
}

#[test]
fn in_takes_at_most_one_hundred_values() {
    let list = |count: usize| (0..count).map(|i| format!(":v{i}")).collect::<Vec<_>>();
    let vals: serde_json::Map<String, Json> = list(101)
        .into_iter()
        .map(|k| (k, json!({"N": "1"})))
        .collect();
    let vals = Json::Object(vals);
    let text = |count| format!("a IN ({})", list(count).join(", "));
    assert!(condition(&text(100), &HashMap::new(), &vals).is_ok());
    assert_eq!(
        condition(&text(101), &HashMap::new(), &vals).unwrap_err().0,
        "Invalid ConditionExpression: The IN operator is provided with too many operands; number of operands: 101"
    );
}

#[test]
fn paths_nest_at_most_32_levels() {
    let cx = Context::new(None, None);
    let deep = |levels: usize| vec!["a"; levels].join(".");
    assert!(parse_projection(&deep(32), &cx).is_ok());
    assert_eq!(
        parse_projection(&deep(33), &cx).unwrap_err().0,
        "Invalid ProjectionExpression: The document path has too many nesting levels; nesting levels: 33"
    );
}

#[test]
fn errors_are_reported_by_kind_not_position() {
    // A reserved word outranks an undefined value that comes first.
    assert_eq!(
        condition_error("a = :nope AND status = :v", &[], json!({":v": {"S": "x"}})),
        "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"
    );
    // An unknown function outranks a reserved word.
    assert_eq!(
        condition_error("status = :v AND dog(a)", &[], json!({":v": {"S": "x"}})),
        "Invalid ConditionExpression: Invalid function name; function: dog"
    );
}

#[test]
fn projections_keep_selected_parts() {
    let it = item(json!({
        "a": {"S": "x"},
        "l": {"L": [{"N": "0"}, {"M": {"x": {"N": "1"}, "y": {"N": "2"}}}, {"N": "2"}, {"N": "3"}]},
        "m": {"M": {"k": {"S": "v"}, "j": {"L": [{"S": "j0"}]}, "e": {"M": {}}}},
        "s": {"SS": ["p"]}
    }));
    let nm = names(&[("#m", "m")]);
    let cx = Context::new(Some(&nm), None);
    let project_with = |text: &str| project(&it, &parse_projection(text, &cx).unwrap());
    assert_eq!(
        project_with("a, s"),
        item(json!({"a": {"S": "x"}, "s": {"SS": ["p"]}}))
    );
    // List elements come back in index order, compacted.
    assert_eq!(
        project_with("l[3], l[0], l[9]"),
        item(json!({"l": {"L": [{"N": "0"}, {"N": "3"}]}}))
    );
    assert_eq!(
        project_with("l[1].y, l[2]"),
        item(json!({"l": {"L": [{"M": {"y": {"N": "2"}}}, {"N": "2"}]}}))
    );
    assert_eq!(
        project_with("#m.k, m.j[0], m.e"),
        item(json!({"m": {"M": {"k": {"S": "v"}, "j": {"L": [{"S": "j0"}]}, "e": {"M": {}}}}}))
    );
    // Paths that select nothing add nothing, not even their parents.
    assert_eq!(project_with("m.nope, l[7], a.b, s[0], nope"), Item::new());
    assert_eq!(project(&Item::new(), &[path("a")]), Item::new());
}

#[test]
fn projection_paths_may_not_overlap() {
    let cx = Context::new(None, None);
    assert_eq!(
        parse_projection("a, a.b", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a, b]"
    );
    assert_eq!(
        parse_projection("x, a[1].c, a[1]", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a, [1], c], path two: [a, [1]]"
    );
    assert_eq!(
        parse_projection("a.b, a[1]", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a, [1]]"
    );
    assert_eq!(
        parse_projection("a, a", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]"
    );
    assert!(parse_projection("a.b, a.c, a.d[0], a.d[1]", &cx).is_ok());
    assert_eq!(
        parse_projection("Data", &cx).unwrap_err().0,
        "Invalid ProjectionExpression: Attribute name is a reserved keyword; reserved keyword: Data"
    );
}

#[test]
fn paths_display_as_written() {
    assert_eq!(path("a.b[2][0].c").to_string(), "a.b[2][0].c");
    assert_eq!(path("a.b[2]").top(), Some("a"));
}

/// Applies `text` to `before`, with the given values.
fn updated(text: &str, before: Json, vals: Json) -> Result<Item, ExprError> {
    let vals = values(vals);
    let cx = Context::new(None, Some(&vals));
    let update = parse_update(text, &cx)?;
    let mut target = item(before);
    update.apply(&mut target)?;
    Ok(target)
}

#[test]
fn set_values_paths_and_arithmetic() {
    let after = updated(
        "SET a = :s, m.k = :n, l[1] = :s, c = c + :n, d = :n - c, e = if_not_exists(e, :n), f = if_not_exists(a, :n)",
        json!({"a": {"S": "old"}, "m": {"M": {}}, "l": {"L": [{"N": "0"}, {"N": "1"}]}, "c": {"N": "0.1"}}),
        json!({":s": {"S": "new"}, ":n": {"N": "0.2"}}),
    )
    .unwrap();
    assert_eq!(
        after,
        item(json!({
            "a": {"S": "new"}, "m": {"M": {"k": {"N": "0.2"}}},
            "l": {"L": [{"N": "0"}, {"S": "new"}]},
            "c": {"N": "0.3"}, "d": {"N": "0.1"}, "e": {"N": "0.2"},
            // Every value is computed from the item before the update.
            "f": {"S": "old"}
        }))
    );
}

#[test]
fn set_past_the_end_of_a_list_appends() {
    let after = updated(
        "SET l[10] = :v",
        json!({"l": {"L": [{"N": "0"}]}}),
        json!({":v": {"N": "9"}}),
    )
    .unwrap();
    assert_eq!(after, item(json!({"l": {"L": [{"N": "0"}, {"N": "9"}]}})));
}

#[test]
fn list_append_joins_lists_in_order() {
    let after = updated(
        "SET l = list_append(:front, l), k = list_append(if_not_exists(k, :empty), :front)",
        json!({"l": {"L": [{"N": "1"}]}}),
        json!({":front": {"L": [{"N": "0"}]}, ":empty": {"L": []}}),
    )
    .unwrap();
    assert_eq!(
        after,
        item(json!({"l": {"L": [{"N": "0"}, {"N": "1"}]}, "k": {"L": [{"N": "0"}]}}))
    );
}

#[test]
fn remove_attributes_and_list_elements() {
    let after = updated(
        "REMOVE a, l[0], l[2], m.k, absent, m.nope, l[9]",
        json!({
            "a": {"S": "x"}, "b": {"S": "y"},
            "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]},
            "m": {"M": {"k": {"S": "v"}, "j": {"S": "w"}}}
        }),
        json!({}),
    )
    .unwrap();
    // Indexes refer to the list as it was; the rest shift down.
    assert_eq!(
        after,
        item(json!({
            "b": {"S": "y"}, "l": {"L": [{"N": "1"}, {"N": "3"}]}, "m": {"M": {"j": {"S": "w"}}}
        }))
    );
}

#[test]
fn add_numbers_and_sets() {
    let after = updated(
        "ADD n :n, fresh :n, ss :ss, newset :ss, m.tally :n",
        json!({"n": {"N": "99999999999999999999999999999999999998"}, "ss": {"SS": ["a", "c"]}, "m": {"M": {}}}),
        json!({":n": {"N": "1"}, ":ss": {"SS": ["b", "c"]}}),
    )
    .unwrap();
    assert_eq!(
        after,
        item(json!({
            "n": {"N": "99999999999999999999999999999999999999"}, "fresh": {"N": "1"},
            "ss": {"SS": ["a", "b", "c"]}, "newset": {"SS": ["b", "c"]},
            "m": {"M": {"tally": {"N": "1"}}}
        }))
    );
}

#[test]
fn delete_from_sets_removes_emptied_attributes() {
    let after = updated(
        "DELETE ss :ab, ns :one, absent :ab, m.bs :b",
        json!({"ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}, "m": {"M": {"bs": {"BS": ["AQ=="]}}}}),
        json!({":ab": {"SS": ["a", "b", "z"]}, ":one": {"NS": ["1"]}, ":b": {"BS": ["AQ=="]}}),
    )
    .unwrap();
    assert_eq!(after, item(json!({"ns": {"NS": ["2"]}, "m": {"M": {}}})));
}

#[test]
fn clauses_combine_in_any_order() {
    let after = updated(
        "remove gone delete ss :s add n :n set a = :n",
        json!({"gone": {"S": "x"}, "ss": {"SS": ["a", "b"]}, "n": {"N": "1"}}),
        json!({":s": {"SS": ["a"]}, ":n": {"N": "5"}}),
    )
    .unwrap();
    assert_eq!(
        after,
        item(json!({"ss": {"SS": ["b"]}, "n": {"N": "6"}, "a": {"N": "5"}}))
    );
}

#[test]
fn update_errors_at_apply_time() {
    let before = json!({"s": {"S": "x"}, "n": {"N": "1"}, "l": {"L": []}, "m": {"M": {}}, "ss": {"SS": ["a"]}});
    let vals =
        json!({":n": {"N": "1"}, ":ns": {"NS": ["1"]}, ":ss": {"SS": ["a"]}, ":l": {"L": []}});
    let invalid = "The document path provided in the update expression is invalid for update";
    let data_type = "An operand in the update expression has an incorrect data type";
    let absent = "The provided expression refers to an attribute that does not exist in the item";
    for (text, message) in [
        ("SET x = absent", absent),
        ("SET x = absent + :n", absent),
        ("SET x = list_append(absent, :l)", absent),
        ("SET x = s + :n", data_type),
        ("SET x = :n - s", data_type),
        ("SET x = list_append(l, s)", data_type),
        ("ADD s :n", data_type),
        ("ADD ss :ns", data_type),
        ("DELETE ss :ns", data_type),
        ("DELETE n :ss", data_type),
        ("SET nope.a = :n", invalid),
        ("SET nope[0] = :n", invalid),
        ("SET s.a = :n", invalid),
        ("SET m[0] = :n", invalid),
        ("SET l.a = :n", invalid),
        ("REMOVE nope.a", invalid),
        ("REMOVE m[0]", invalid),
        ("REMOVE s.a", invalid),
        ("ADD nope.a :n", invalid),
        ("ADD m[0] :n", invalid),
        ("DELETE nope.a :ss", invalid),
        ("DELETE l.a :ss", invalid),
    ] {
        assert_eq!(
            updated(text, before.clone(), vals.clone()).unwrap_err().0,
            message,
            "{text}"
        );
    }
    let overflow = updated(
        "SET n = n + :big",
        json!({"n": {"N": "9.9e125"}}),
        json!({":big": {"N": "9e125"}}),
    );
    assert!(overflow.unwrap_err().0.starts_with("Number overflow"));
}

#[test]
fn a_failed_update_leaves_the_item_alone() {
    let vals = values(json!({":n": {"N": "1"}}));
    let cx = Context::new(None, Some(&vals));
    let update = parse_update("SET a = :n, b = s + :n", &cx).unwrap();
    let mut target = item(json!({"s": {"S": "x"}}));
    assert!(update.apply(&mut target).is_err());
    assert_eq!(target, item(json!({"s": {"S": "x"}})));
}

#[test]
fn update_parse_errors() {
    let vals = values(json!({
        ":s": {"S": "a"}, ":n": {"N": "1"}, ":b": {"B": "YQ=="}, ":t": {"BOOL": true},
        ":z": {"NULL": true}, ":l": {"L": []}, ":m": {"M": {}}, ":ss": {"SS": ["a"]}
    }));
    let nm = names(&[("#c", "c"), ("#d", "[3]")]);
    let cx = Context::new(Some(&nm), Some(&vals));
    let err = |text: &str| parse_update(text, &cx).unwrap_err().0;
    for (text, message) in [
        (
            "SET a = :n SET b = :n",
            r#"The "SET" section can only be used once in an update expression;"#,
        ),
        (
            "remove a set b = :n remove c",
            r#"The "REMOVE" section can only be used once in an update expression;"#,
        ),
        (
            "SET a = :n, a = :s",
            "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
        ),
        (
            "SET a = :n REMOVE a.b",
            "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a, b]",
        ),
        (
            "set d[1] = :n, d.b = :n, c[1].a = :n, #c = :n",
            "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [c, [1], a], path two: [c]",
        ),
        (
            "set #c[3].#d = :n, #c.#d[3] = :n",
            "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [c, [3], [3]], path two: [c, [3], [3]]",
        ),
        (
            "remove a.#c set a[1] = :n",
            "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, c], path two: [a, [1]]",
        ),
        (
            "SET a = :n REMOVE status",
            "Attribute name is a reserved keyword; reserved keyword: status",
        ),
        (
            "SET a = #x",
            "An expression attribute name used in the document path is not defined; attribute name: #x",
        ),
        (
            "SET a = :x",
            "An expression attribute value used in expression is not defined; attribute value: :x",
        ),
        (
            "ADD a :s",
            "Incorrect operand type for operator or function; operator: ADD, operand type: STRING, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "ADD a :l",
            "Incorrect operand type for operator or function; operator: ADD, operand type: LIST, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "ADD a :m",
            "Incorrect operand type for operator or function; operator: ADD, operand type: MAP, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "ADD a :t",
            "Incorrect operand type for operator or function; operator: ADD, operand type: BOOLEAN, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "DELETE a :n",
            "Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND",
        ),
        (
            "DELETE a :b",
            "Incorrect operand type for operator or function; operator: DELETE, operand type: BINARY, typeSet: ALLOWED_FOR_DELETE_OPERAND",
        ),
        (
            "SET a = a + :s",
            "Incorrect operand type for operator or function; operator or function: +, operand type: S",
        ),
        (
            "SET a = :ss - a",
            "Incorrect operand type for operator or function; operator or function: -, operand type: SS",
        ),
        (
            "SET a = list_append(:s, a)",
            "Incorrect operand type for operator or function; operator or function: list_append, operand type: S",
        ),
        (
            "SET a = list_append(a)",
            "Incorrect number of operands for operator or function; operator or function: list_append, number of operands: 1",
        ),
        (
            "SET a = if_not_exists(:n, a)",
            "Operator or function requires a document path; operator or function: if_not_exists",
        ),
        (
            "SET a = if_not_exist(a, :n)",
            "Invalid function name; function: if_not_exist",
        ),
        (
            "SET a = size(b)",
            "The function is not allowed in an update expression; function: size",
        ),
        (
            "SET a = attribute_exists(b)",
            "The function is not allowed in an update expression; function: attribute_exists",
        ),
        // A reserved word outranks a repeated section.
        (
            " set #c = :n set abOrt = :n ",
            "Attribute name is a reserved keyword; reserved keyword: abOrt",
        ),
    ] {
        assert_eq!(
            err(text),
            format!("Invalid UpdateExpression: {message}"),
            "{text}"
        );
    }
    assert_eq!(
        err("SET a = b + c + d"),
        r#"Invalid UpdateExpression: Syntax error; token: "+", near: "c + d""#
    );
    assert_eq!(
        err("SET a"),
        r#"Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "a""#
    );
}

#[test]
fn touched_lists_top_level_attributes_once() {
    let vals = values(json!({":n": {"N": "1"}, ":s": {"SS": ["a"]}}));
    let cx = Context::new(None, Some(&vals));
    let update = parse_update(
        "SET a.b = :n, c = :n REMOVE a.d, e[1] ADD f :n DELETE g :s",
        &cx,
    )
    .unwrap();
    assert_eq!(update.touched(), ["a", "c", "e", "f", "g"]);
}

fn key_condition(text: &str, vals: Json) -> Result<KeyCondition, ExprError> {
    let vals = values(vals);
    let nm = names(&[("#p", "p"), ("#c", "c")]);
    let cx = Context::new(Some(&nm), Some(&vals));
    parse_key_condition(text, &cx)
}

#[test]
fn key_conditions_name_the_partition_and_sort_keys() {
    let vals = json!({":p": {"S": "pk"}, ":c": {"N": "3"}, ":d": {"N": "7"}, ":s": {"S": "pre"}});
    let hash = ("p".to_owned(), s("pk"));
    for (text, range) in [
        ("p = :p", None),
        ("#p = :p", None),
        (":p = p", None),
        ("p = :p AND c < :c", Some(RangeCondition::Lt(n("3")))),
        ("p = :p AND :c < c", Some(RangeCondition::Gt(n("3")))),
        ("p = :p AND :c >= #c", Some(RangeCondition::Le(n("3")))),
        ("c >= :c AND p = :p", Some(RangeCondition::Ge(n("3")))),
        (
            "p = :p and c between :c and :d",
            Some(RangeCondition::Between(n("3"), n("7"))),
        ),
        (
            "p = :p AND begins_with(c, :s)",
            Some(RangeCondition::BeginsWith(s("pre"))),
        ),
        ("((c <= :c) AND (p = :p))", Some(RangeCondition::Le(n("3")))),
    ] {
        let got = key_condition(text, vals.clone()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got.hash, hash, "{text}");
        assert_eq!(got.range, range.map(|r| ("c".to_owned(), r)), "{text}");
    }
}

#[test]
fn with_hash_key_settles_two_equalities() {
    let vals = json!({":p": {"S": "pk"}, ":c": {"N": "3"}});
    let both = key_condition("c = :c AND p = :p", vals).unwrap();
    assert_eq!(both.hash.0, "c");
    let fixed = both.clone().with_hash_key("p");
    assert_eq!(fixed.hash, ("p".to_owned(), s("pk")));
    assert_eq!(
        fixed.range,
        Some(("c".to_owned(), RangeCondition::Eq(n("3"))))
    );
    assert_eq!(fixed.clone().with_hash_key("p"), fixed);
    assert_eq!(both.clone().with_hash_key("c"), both);
}

#[test]
fn key_condition_errors() {
    let vals = json!({":p": {"S": "pk"}, ":c": {"N": "3"}, ":l": {"L": []}});
    for (text, message) in [
        (
            "c = :c OR p = :p",
            "Invalid operator used in KeyConditionExpression: OR",
        ),
        (
            "NOT c = :c AND p = :p",
            "Invalid operator used in KeyConditionExpression: NOT",
        ),
        (
            "p = :p AND c IN (:c)",
            "Invalid operator used in KeyConditionExpression: IN",
        ),
        (
            "p = :p AND c <> :c",
            "Invalid operator used in KeyConditionExpression: <>",
        ),
        (
            "p = :p AND attribute_exists(c)",
            "Invalid operator used in KeyConditionExpression: attribute_exists",
        ),
        (
            "p = :p AND contains(c, :c)",
            "Invalid operator used in KeyConditionExpression: contains",
        ),
        (
            "p = :p AND a.b < :c",
            "KeyConditionExpressions cannot have conditions on nested attributes",
        ),
        (
            "p = :p AND c[0] < :c",
            "KeyConditionExpressions cannot have conditions on nested attributes",
        ),
        (
            "p = :p AND size(c) < :c",
            "KeyConditionExpressions cannot contain nested operations",
        ),
        (
            "p = c",
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        ),
        (
            ":p = :c",
            "Invalid condition in KeyConditionExpression: No key attribute specified",
        ),
        (
            "p = :p AND :c BETWEEN c AND :c",
            "Invalid condition in KeyConditionExpression: BETWEEN operator must have the key attribute as its first operand",
        ),
        (
            "p = :p AND begins_with(:p, c)",
            "Invalid condition in KeyConditionExpression: begins_with operator must have the key attribute as its first operand",
        ),
        (
            "p = :p AND p = :p",
            "KeyConditionExpressions must only contain one condition per key",
        ),
        (
            "p = :p AND c >= :c AND c <= :c",
            "KeyConditionExpressions must only contain one condition per key",
        ),
        (
            "p = :p AND c < :c AND a < :c",
            "Conditions can be of length 1 or 2 only",
        ),
        ("p < :p", "Query key condition not supported"),
        ("p < :p AND c > :c", "Query key condition not supported"),
        (
            "p = :p AND begins_with(c, :c)",
            "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
        ),
        (
            "p = :p AND dog(c, :c)",
            "Invalid KeyConditionExpression: Invalid function name; function: dog",
        ),
        (
            "p = :p AND BEGINS_WITH(c, :c)",
            "Invalid KeyConditionExpression: Invalid function name; function: BEGINS_WITH",
        ),
        (
            "p = :p AND c != :c",
            r#"Invalid KeyConditionExpression: Syntax error; token: "!", near: "c !=""#,
        ),
        (
            "p",
            r#"Invalid KeyConditionExpression: Syntax error; token: "<EOF>", near: "p""#,
        ),
        (
            "((c = :c) AND ((p = :p)))",
            "Invalid KeyConditionExpression: The expression has redundant parentheses;",
        ),
        (
            "p = :q",
            "Invalid KeyConditionExpression: An expression attribute value used in expression is not defined; attribute value: :q",
        ),
    ] {
        assert_eq!(
            key_condition(text, vals.clone()).unwrap_err().0,
            message,
            "{text}"
        );
    }
}

#[test]
fn range_conditions_match_sort_keys() {
    let cases = [
        (RangeCondition::Eq(n("3")), n("3.0"), true),
        (RangeCondition::Eq(n("3")), s("3"), false),
        (RangeCondition::Lt(n("3")), n("2"), true),
        (RangeCondition::Lt(n("3")), n("3"), false),
        (RangeCondition::Le(n("3")), n("3"), true),
        (RangeCondition::Gt(s("b")), s("ba"), true),
        (RangeCondition::Ge(s("b")), s("a"), false),
        (RangeCondition::Between(n("1"), n("2")), n("2"), true),
        (RangeCondition::Between(n("1"), n("2")), n("2.5"), false),
        (RangeCondition::BeginsWith(s("pre")), s("prefix"), true),
        (RangeCondition::BeginsWith(s("pre")), s("pr"), false),
        (
            RangeCondition::BeginsWith(Value::B(vec![1])),
            Value::B(vec![1, 2]),
            true,
        ),
        (RangeCondition::Gt(n("1")), s("2"), false),
    ];
    for (condition, key, expected) in cases {
        assert_eq!(condition.matches(&key), expected, "{condition:?} {key:?}");
    }
}
