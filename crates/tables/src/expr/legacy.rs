//! The legacy request parameters, turned into the trees the expressions produce: `Expected`
//! (with `ConditionalOperator`), `QueryFilter` and `ScanFilter` into a [`Condition`],
//! `KeyConditions` into a [`KeyCondition`], `AttributeUpdates` into an [`Update`] and
//! `AttributesToGet` into projection paths.
//!
//! Each function takes the request member as JSON and checks it as DynamoDB does, with its
//! messages. Whether a request mixes legacy and expression parameters is the caller's check.

use serde_json::{Map, Value as Json};

use super::check::key_parts;
use super::update::{Action, SetValue, UpdateOperand};
use super::{
    Comparator, Condition, ExprError, KeyCondition, Operand, Path, PathElem, RangeCondition,
    Update, eval,
};
use crate::value::Value;

const COMPARISON_OPERATORS: [&str; 13] = [
    "IN",
    "NULL",
    "BETWEEN",
    "LT",
    "NOT_CONTAINS",
    "EQ",
    "GT",
    "NOT_NULL",
    "NE",
    "LE",
    "BEGINS_WITH",
    "GE",
    "CONTAINS",
];

/// Operators a key condition cannot use.
const NOT_INDEXABLE: [&str; 6] = ["NULL", "NOT_NULL", "CONTAINS", "NOT_CONTAINS", "IN", "NE"];

fn invalid(message: impl std::fmt::Display) -> ExprError {
    ExprError(format!(
        "One or more parameter values were invalid: {message}"
    ))
}

/// DynamoDB's name for a request member inside messages: `Expected` becomes `expected`.
fn member_path(member: &str) -> String {
    let mut chars = member.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn object<'j>(json: &'j Json, at: &str) -> Result<&'j Map<String, Json>, ExprError> {
    json.as_object()
        .ok_or_else(|| ExprError(format!("Expected a map at '{at}'")))
}

/// A field of an object, treating JSON null as absent, as DynamoDB does.
fn field<'j>(entry: &'j Map<String, Json>, name: &str) -> Option<&'j Json> {
    entry.get(name).filter(|v| !v.is_null())
}

fn attribute_value(json: &Json) -> Result<Value, ExprError> {
    Value::from_json(json).map_err(|e| ExprError(e.0))
}

fn value_list(entry: &Map<String, Json>, at: &str) -> Result<Option<Vec<Value>>, ExprError> {
    let Some(list) = field(entry, "AttributeValueList") else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| ExprError(format!("Expected a list at '{at}.attributeValueList'")))?;
    list.iter()
        .map(attribute_value)
        .collect::<Result<_, _>>()
        .map(Some)
}

fn comparison_operator<'j>(
    entry: &'j Map<String, Json>,
    at: &str,
) -> Result<Option<&'j str>, ExprError> {
    let Some(op) = field(entry, "ComparisonOperator") else {
        return Ok(None);
    };
    let op = op
        .as_str()
        .ok_or_else(|| ExprError(format!("Expected a string at '{at}.comparisonOperator'")))?;
    if !COMPARISON_OPERATORS.contains(&op) {
        return Err(ExprError(format!(
            "1 validation error detected: Value '{op}' at '{at}.comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            COMPARISON_OPERATORS.join(", ")
        )));
    }
    Ok(Some(op))
}

fn required_operator<'j>(entry: &'j Map<String, Json>, at: &str) -> Result<&'j str, ExprError> {
    comparison_operator(entry, at)?.ok_or_else(|| {
        ExprError(format!(
            "1 validation error detected: Value null at '{at}.comparisonOperator' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// `AND` (the default) or `OR`: whether the conditions are joined with OR.
fn joined_with_or(conditional_operator: Option<&Json>) -> Result<bool, ExprError> {
    match conditional_operator.filter(|v| !v.is_null()) {
        None => Ok(false),
        Some(json) => match json.as_str() {
            Some("AND") => Ok(false),
            Some("OR") => Ok(true),
            _ => Err(ExprError(format!(
                "1 validation error detected: Value '{}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]",
                json.as_str()
                    .map_or_else(|| json.to_string(), str::to_owned)
            ))),
        },
    }
}

fn join(conditions: Vec<Condition>, or: bool) -> Option<Condition> {
    conditions.into_iter().reduce(|a, b| {
        if or {
            Condition::Or(Box::new(a), Box::new(b))
        } else {
            Condition::And(Box::new(a), Box::new(b))
        }
    })
}

/// Checks an operator's values: how many, of one type, of a type it accepts, bounds in order.
/// Key conditions accept only the key types (S, N, B) whatever the operator.
fn check_values(op: &str, values: &[Value], key: bool) -> Result<(), ExprError> {
    let count_ok = match op {
        "NULL" | "NOT_NULL" => values.is_empty(),
        "IN" => !values.is_empty(),
        "BETWEEN" => values.len() == 2,
        _ => values.len() == 1,
    };
    if !count_ok {
        return Err(invalid(format!(
            "Invalid number of argument(s) for the {op} ComparisonOperator"
        )));
    }
    if let Some(first) = values.first()
        && values.iter().any(|v| v.type_name() != first.type_name())
    {
        return Err(invalid(
            "AttributeValues inside AttributeValueList must be of same type",
        ));
    }
    let scalar = |v: &Value| matches!(v, Value::S(_) | Value::N(_) | Value::B(_));
    for v in values {
        let accepted = match op {
            "BEGINS_WITH" => matches!(v, Value::S(_) | Value::B(_)),
            "EQ" | "NE" if !key => true,
            _ => scalar(v),
        };
        if !accepted {
            return Err(invalid(format!(
                "ComparisonOperator {op} is not valid for {} AttributeValue type",
                v.type_name()
            )));
        }
    }
    if let [low, high] = values
        && op == "BETWEEN"
        && eval::order(low, high) == Some(std::cmp::Ordering::Greater)
    {
        return Err(ExprError(
            "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound".into(),
        ));
    }
    Ok(())
}

/// The condition `op` (already checked with `check_values`) states about attribute `name`.
fn comparison(name: &str, op: &str, values: Vec<Value>) -> Condition {
    let path = Path(vec![PathElem::Attr(name.to_owned())]);
    let attr = || Operand::Path(path.clone());
    let mut values = values.into_iter().map(Operand::Value);
    let mut one = || values.next().unwrap_or(Operand::Value(Value::Null));
    let compare = |c: Comparator, v: Operand| Condition::Compare(attr(), c, v);
    match op {
        "EQ" => compare(Comparator::Eq, one()),
        "NE" => compare(Comparator::Ne, one()),
        "LT" => compare(Comparator::Lt, one()),
        "LE" => compare(Comparator::Le, one()),
        "GT" => compare(Comparator::Gt, one()),
        "GE" => compare(Comparator::Ge, one()),
        "NULL" => Condition::AttributeNotExists(path),
        "NOT_NULL" => Condition::AttributeExists(path),
        "CONTAINS" => Condition::Contains(attr(), one()),
        // Unlike NE, NOT_CONTAINS is false for a missing attribute.
        "NOT_CONTAINS" => Condition::And(
            Box::new(Condition::AttributeExists(path.clone())),
            Box::new(Condition::Not(Box::new(Condition::Contains(attr(), one())))),
        ),
        "BEGINS_WITH" => Condition::BeginsWith(attr(), one()),
        "BETWEEN" => {
            let low = one();
            Condition::Between(attr(), low, one())
        }
        _ => Condition::In(attr(), values.collect()),
    }
}

/// `Expected` and `ConditionalOperator`, as a condition on the item being written; `None`
/// when `Expected` is empty.
pub fn expected(
    expected: &Json,
    conditional_operator: Option<&Json>,
) -> Result<Option<Condition>, ExprError> {
    let or = joined_with_or(conditional_operator)?;
    let mut conditions = Vec::new();
    for (name, entry) in object(expected, "expected")? {
        let at = format!("expected.{name}.member");
        let entry = object(entry, &at)?;
        let list = value_list(entry, &at)?;
        let value = field(entry, "Value").map(attribute_value).transpose()?;
        let exists = field(entry, "Exists");
        if list.is_some() && value.is_some() {
            return Err(invalid(format!(
                "Value and AttributeValueList cannot be used together for Attribute: {name}"
            )));
        }
        if let Some(op) = comparison_operator(entry, &at)? {
            if exists.is_some() {
                return Err(invalid(format!(
                    "Exists and ComparisonOperator cannot be used together for Attribute: {name}"
                )));
            }
            if op != "NULL" && op != "NOT_NULL" && list.is_none() && value.is_none() {
                return Err(invalid(format!(
                    "Value or AttributeValueList must be used with ComparisonOperator: {op} for Attribute: {name}"
                )));
            }
            let values = list.or(value.map(|v| vec![v])).unwrap_or_default();
            check_values(op, &values, false)?;
            conditions.push(comparison(name, op, values));
            continue;
        }
        if list.is_some() {
            return Err(invalid(format!(
                "AttributeValueList can only be used with a ComparisonOperator for Attribute: {name}"
            )));
        }
        let exists = exists
            .map(|e| {
                e.as_bool()
                    .ok_or_else(|| ExprError(format!("Expected a boolean at '{at}.exists'")))
            })
            .transpose()?;
        let path = Path(vec![PathElem::Attr(name.clone())]);
        conditions.push(match (exists, value) {
            (Some(false), None) => Condition::AttributeNotExists(path),
            (Some(false), Some(_)) => {
                return Err(invalid(format!(
                    "Value cannot be used when Exists is false for Attribute: {name}"
                )));
            }
            (exists, None) => {
                return Err(invalid(format!(
                    "Value must be provided when Exists is {} for Attribute: {name}",
                    if exists.is_some() { "true" } else { "null" }
                )));
            }
            (_, Some(v)) => {
                Condition::Compare(Operand::Path(path), Comparator::Eq, Operand::Value(v))
            }
        });
    }
    Ok(join(conditions, or))
}

/// `QueryFilter` or `ScanFilter` (named by `member`, for messages) and `ConditionalOperator`,
/// as a condition on the items read; `None` when the filter is empty.
pub fn filter(
    conditions: &Json,
    conditional_operator: Option<&Json>,
    member: &str,
) -> Result<Option<Condition>, ExprError> {
    let or = joined_with_or(conditional_operator)?;
    let member = member_path(member);
    let mut out = Vec::new();
    for (name, entry) in object(conditions, &member)? {
        let at = format!("{member}.{name}.member");
        let entry = object(entry, &at)?;
        let op = required_operator(entry, &at)?;
        let values = value_list(entry, &at)?.unwrap_or_default();
        check_values(op, &values, false)?;
        out.push(comparison(name, op, values));
    }
    Ok(join(out, or))
}

/// `KeyConditions`, as the key condition of a Query. As with a KeyConditionExpression, when
/// both conditions are equalities the caller picks the partition key with
/// [`KeyCondition::with_hash_key`].
pub fn key_conditions(conditions: &Json) -> Result<KeyCondition, ExprError> {
    let mut parts = Vec::new();
    for (name, entry) in object(conditions, "keyConditions")? {
        let at = format!("keyConditions.{name}.member");
        let entry = object(entry, &at)?;
        let op = required_operator(entry, &at)?;
        let values = value_list(entry, &at)?.unwrap_or_default();
        check_values(op, &values, true)?;
        parts.push((name.clone(), op, values));
    }
    if parts.iter().any(|(_, op, _)| NOT_INDEXABLE.contains(op)) {
        return Err(ExprError(
            "Attempted conditional constraint is not an indexable operation".into(),
        ));
    }
    let parts = parts
        .into_iter()
        .map(|(name, op, values)| {
            let mut values = values.into_iter();
            let mut one = || values.next().unwrap_or(Value::Null);
            let range = match op {
                "EQ" => RangeCondition::Eq(one()),
                "LT" => RangeCondition::Lt(one()),
                "LE" => RangeCondition::Le(one()),
                "GT" => RangeCondition::Gt(one()),
                "GE" => RangeCondition::Ge(one()),
                "BEGINS_WITH" => RangeCondition::BeginsWith(one()),
                _ => {
                    let low = one();
                    RangeCondition::Between(low, one())
                }
            };
            (name, range)
        })
        .collect();
    key_parts(parts)
}

/// `AttributeUpdates`, as an update: PUT sets a value, DELETE without a value removes the
/// attribute, DELETE with a set removes its elements, ADD adds to a number, a set or a list.
pub fn attribute_updates(updates: &Json) -> Result<Update, ExprError> {
    let mut actions = Vec::new();
    for (name, entry) in object(updates, "attributeUpdates")? {
        let at = format!("attributeUpdates.{name}.member");
        let entry = object(entry, &at)?;
        let action = match field(entry, "Action") {
            None => "PUT",
            Some(a) => match a.as_str() {
                Some(a @ ("ADD" | "PUT" | "DELETE")) => a,
                _ => {
                    return Err(ExprError(format!(
                        "1 validation error detected: Value '{}' at '{at}.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]",
                        a.as_str().map_or_else(|| a.to_string(), str::to_owned)
                    )));
                }
            },
        };
        let value = field(entry, "Value").map(attribute_value).transpose()?;
        let path = Path(vec![PathElem::Attr(name.clone())]);
        actions.push(match (action, value) {
            ("DELETE", None) => Action::Remove(path),
            (_, None) => {
                return Err(invalid(
                    "Only DELETE action is allowed when no attribute value is specified",
                ));
            }
            ("DELETE", Some(v)) => {
                if !matches!(v, Value::Ss(_) | Value::Ns(_) | Value::Bs(_)) {
                    return Err(invalid(format!(
                        "DELETE action with value is not supported for the type {}",
                        v.type_name()
                    )));
                }
                Action::Delete(path, v)
            }
            ("ADD", Some(v)) => {
                if !matches!(
                    v,
                    Value::N(_) | Value::Ss(_) | Value::Ns(_) | Value::Bs(_) | Value::L(_)
                ) {
                    return Err(invalid(format!(
                        "ADD action is not supported for the type {}",
                        v.type_name()
                    )));
                }
                Action::Add(path, v)
            }
            (_, Some(v)) => Action::Set(path, SetValue::Operand(UpdateOperand::Value(v))),
        });
    }
    Ok(Update::new(actions, true))
}

/// `AttributesToGet`, as projection paths of top-level attributes.
pub fn attributes_to_get(names: &Json) -> Result<Vec<Path>, ExprError> {
    let names = names
        .as_array()
        .ok_or_else(|| ExprError("Expected a list at 'attributesToGet'".into()))?;
    if names.is_empty() {
        return Err(ExprError(
            "1 validation error detected: Value '[]' at 'attributesToGet' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    let mut paths: Vec<Path> = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| ExprError("Expected a string in 'attributesToGet'".into()))?;
        let path = Path(vec![PathElem::Attr(name.to_owned())]);
        if paths.contains(&path) {
            return Err(invalid(format!(
                "Duplicate value in attribute name: {name}"
            )));
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::value::{Item, Number, item_from_json};

    fn item(wire: Json) -> Item {
        item_from_json(&wire).unwrap()
    }

    fn n(text: &str) -> Value {
        Value::N(Number::parse(text).unwrap())
    }

    fn target() -> Item {
        item(json!({
            "n": {"N": "5"}, "s": {"S": "hello"}, "ss": {"SS": ["a", "b"]},
            "l": {"L": [{"N": "1"}]}, "b": {"B": "AQID"}
        }))
    }

    fn expected_holds(expected: Json, op: Option<Json>) -> bool {
        super::expected(&expected, op.as_ref())
            .unwrap_or_else(|e| panic!("{expected}: {e}"))
            .is_none_or(|c| c.eval(&target()))
    }

    fn expected_error(expected: Json) -> String {
        super::expected(&expected, None).unwrap_err().0
    }

    #[test]
    fn expected_value_and_exists() {
        assert!(expected_holds(json!({"n": {"Value": {"N": "5"}}}), None));
        assert!(expected_holds(
            json!({"n": {"Value": {"N": "5"}, "Exists": true}}),
            None
        ));
        assert!(!expected_holds(json!({"n": {"Value": {"N": "6"}}}), None));
        assert!(!expected_holds(json!({"q": {"Value": {"N": "5"}}}), None));
        assert!(expected_holds(json!({"q": {"Exists": false}}), None));
        assert!(!expected_holds(json!({"n": {"Exists": false}}), None));
        assert!(expected_holds(json!({}), None));
    }

    #[test]
    fn expected_comparison_operators() {
        for (condition, holds) in [
            (
                json!({"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "5"}]}),
                true,
            ),
            (
                json!({"ComparisonOperator": "EQ", "Value": {"N": "5"}}),
                true,
            ),
            (
                json!({"ComparisonOperator": "NE", "AttributeValueList": [{"N": "5"}]}),
                false,
            ),
            (
                json!({"ComparisonOperator": "LT", "AttributeValueList": [{"N": "6"}]}),
                true,
            ),
            (
                json!({"ComparisonOperator": "LE", "AttributeValueList": [{"N": "5"}]}),
                true,
            ),
            (
                json!({"ComparisonOperator": "GT", "AttributeValueList": [{"N": "5"}]}),
                false,
            ),
            (
                json!({"ComparisonOperator": "GE", "AttributeValueList": [{"S": "5"}]}),
                false,
            ),
            (json!({"ComparisonOperator": "NOT_NULL"}), true),
            (json!({"ComparisonOperator": "NULL"}), false),
            (
                json!({"ComparisonOperator": "IN", "AttributeValueList": [{"N": "1"}, {"N": "5"}]}),
                true,
            ),
            (
                json!({"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "5"}, {"N": "9"}]}),
                true,
            ),
            (
                json!({"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "6"}, {"N": "9"}]}),
                false,
            ),
        ] {
            assert_eq!(
                expected_holds(json!({"n": condition.clone()}), None),
                holds,
                "{condition}"
            );
        }
        for (attr, condition, holds) in [
            (
                "s",
                json!({"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"S": "ell"}]}),
                true,
            ),
            (
                "ss",
                json!({"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"S": "a"}]}),
                true,
            ),
            (
                "l",
                json!({"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"N": "1"}]}),
                true,
            ),
            (
                "b",
                json!({"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"B": "Ag=="}]}),
                true,
            ),
            (
                "s",
                json!({"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "dog"}]}),
                true,
            ),
            (
                "ss",
                json!({"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "a"}]}),
                false,
            ),
            // Unlike NE, NOT_CONTAINS fails on a missing attribute.
            (
                "q",
                json!({"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "a"}]}),
                false,
            ),
            (
                "q",
                json!({"ComparisonOperator": "NE", "AttributeValueList": [{"S": "a"}]}),
                true,
            ),
            (
                "s",
                json!({"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "he"}]}),
                true,
            ),
            (
                "n",
                json!({"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "5"}]}),
                false,
            ),
        ] {
            assert_eq!(
                expected_holds(json!({attr: condition.clone()}), None),
                holds,
                "{attr} {condition}"
            );
        }
    }

    #[test]
    fn conditional_operator_joins_the_conditions() {
        let both = json!({"n": {"Value": {"N": "5"}}, "s": {"Value": {"S": "nope"}}});
        assert!(!expected_holds(both.clone(), None));
        assert!(!expected_holds(both.clone(), Some(json!("AND"))));
        assert!(expected_holds(both.clone(), Some(json!("OR"))));
        assert_eq!(
            super::expected(&both, Some(&json!("XOR"))).unwrap_err().0,
            "1 validation error detected: Value 'XOR' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]"
        );
    }

    #[test]
    fn expected_errors() {
        let prefix = "One or more parameter values were invalid: ";
        for (expected, message) in [
            (
                json!({"a": {}}),
                "Value must be provided when Exists is null for Attribute: a",
            ),
            (
                json!({"a": {"Exists": true}}),
                "Value must be provided when Exists is true for Attribute: a",
            ),
            (
                json!({"a": {"Exists": false, "Value": {"S": "a"}}}),
                "Value cannot be used when Exists is false for Attribute: a",
            ),
            (
                json!({"a": {"Value": {"S": "a"}, "AttributeValueList": [{"S": "a"}]}}),
                "Value and AttributeValueList cannot be used together for Attribute: a",
            ),
            (
                json!({"a": {"ComparisonOperator": "EQ", "Exists": true}}),
                "Exists and ComparisonOperator cannot be used together for Attribute: a",
            ),
            (
                json!({"a": {"ComparisonOperator": "EQ"}}),
                "Value or AttributeValueList must be used with ComparisonOperator: EQ for Attribute: a",
            ),
            (
                json!({"a": {"AttributeValueList": [{"S": "a"}]}}),
                "AttributeValueList can only be used with a ComparisonOperator for Attribute: a",
            ),
            (
                json!({"a": {"ComparisonOperator": "NULL", "AttributeValueList": [{"S": "a"}]}}),
                "Invalid number of argument(s) for the NULL ComparisonOperator",
            ),
            (
                json!({"a": {"ComparisonOperator": "IN", "AttributeValueList": []}}),
                "Invalid number of argument(s) for the IN ComparisonOperator",
            ),
            (
                json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}]}}),
                "Invalid number of argument(s) for the BETWEEN ComparisonOperator",
            ),
            (
                json!({"a": {"ComparisonOperator": "IN", "AttributeValueList": [{"N": "1"}, {"S": "a"}]}}),
                "AttributeValues inside AttributeValueList must be of same type",
            ),
            (
                json!({"a": {"ComparisonOperator": "LT", "AttributeValueList": [{"SS": ["a"]}]}}),
                "ComparisonOperator LT is not valid for SS AttributeValue type",
            ),
            (
                json!({"a": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"N": "3"}]}}),
                "ComparisonOperator BEGINS_WITH is not valid for N AttributeValue type",
            ),
            (
                json!({"a": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"L": []}]}}),
                "ComparisonOperator CONTAINS is not valid for L AttributeValue type",
            ),
        ] {
            assert_eq!(
                expected_error(expected.clone()),
                format!("{prefix}{message}"),
                "{expected}"
            );
        }
        assert_eq!(
            expected_error(
                json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "4"}, {"N": "3"}]}})
            ),
            "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound"
        );
        assert!(expected_error(json!({"a": {"ComparisonOperator": "LIKE", "Value": {"S": "a"}}}))
            .contains("Value 'LIKE' at 'expected.a.member.comparisonOperator' failed to satisfy constraint"));
        assert!(
            expected_error(json!({"a": {"Value": {"NULL": false}}}))
                .contains("Null attribute value")
        );
    }

    #[test]
    fn query_and_scan_filters() {
        let filter = json!({
            "n": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "4"}]},
            "s": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "x"}]}
        });
        let and = super::filter(&filter, None, "ScanFilter").unwrap().unwrap();
        let or = super::filter(&filter, Some(&json!("OR")), "ScanFilter")
            .unwrap()
            .unwrap();
        assert!(!and.eval(&target()));
        assert!(or.eval(&target()));
        assert_eq!(
            super::filter(&json!({}), None, "QueryFilter").unwrap(),
            None
        );
        assert_eq!(
            super::filter(
                &json!({"n": {"AttributeValueList": [{"N": "4"}]}}),
                None,
                "QueryFilter"
            )
            .unwrap_err()
            .0,
            "1 validation error detected: Value null at 'queryFilter.n.member.comparisonOperator' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn key_conditions_become_a_key_condition() {
        let kc = key_conditions(&json!({
            "p": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "pk"}]},
            "c": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}, {"N": "2"}]}
        }))
        .unwrap();
        assert_eq!(kc.hash, ("p".to_owned(), Value::S("pk".into())));
        assert_eq!(
            kc.range,
            Some(("c".to_owned(), RangeCondition::Between(n("1"), n("2"))))
        );
        let only_hash = key_conditions(
            &json!({"p": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "1"}]}}),
        )
        .unwrap();
        assert_eq!(only_hash.range, None);
        for (conditions, message) in [
            (
                json!({"p": {"ComparisonOperator": "NE", "AttributeValueList": [{"S": "a"}]}}),
                "Attempted conditional constraint is not an indexable operation",
            ),
            (
                json!({"p": {"ComparisonOperator": "NOT_NULL"}}),
                "Attempted conditional constraint is not an indexable operation",
            ),
            (
                json!({"p": {"ComparisonOperator": "GT", "AttributeValueList": [{"S": "a"}]}}),
                "Query key condition not supported",
            ),
            (json!({}), "Conditions can be of length 1 or 2 only"),
            (
                json!({
                    "a": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "a"}]},
                    "b": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "a"}]},
                    "c": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "a"}]}
                }),
                "Conditions can be of length 1 or 2 only",
            ),
            (
                json!({"p": {"ComparisonOperator": "EQ", "AttributeValueList": [{"SS": ["a"]}]}}),
                "One or more parameter values were invalid: ComparisonOperator EQ is not valid for SS AttributeValue type",
            ),
        ] {
            assert_eq!(
                key_conditions(&conditions).unwrap_err().0,
                message,
                "{conditions}"
            );
        }
    }

    #[test]
    fn attribute_updates_put_add_and_delete() {
        let update = attribute_updates(&json!({
            "s": {"Action": "PUT", "Value": {"S": "new"}},
            "fresh": {"Value": {"N": "1"}},
            "n": {"Action": "ADD", "Value": {"N": "-5"}},
            "l": {"Action": "ADD", "Value": {"L": [{"N": "2"}]}},
            "ss": {"Action": "DELETE", "Value": {"SS": ["a", "b"]}},
            "b": {"Action": "DELETE"}
        }))
        .unwrap();
        let mut updated = target();
        update.apply(&mut updated).unwrap();
        assert_eq!(
            updated,
            item(json!({
                "s": {"S": "new"}, "fresh": {"N": "1"}, "n": {"N": "0"},
                "l": {"L": [{"N": "1"}, {"N": "2"}]}
            }))
        );
        let mut touched = update.touched();
        touched.sort();
        assert_eq!(touched, ["b", "fresh", "l", "n", "s", "ss"]);
    }

    #[test]
    fn attribute_update_errors() {
        let prefix = "One or more parameter values were invalid: ";
        for (updates, message) in [
            (json!({"a": {"Action": "PUT"}}), format!("{prefix}Only DELETE action is allowed when no attribute value is specified")),
            (json!({"a": {"Action": "ADD"}}), format!("{prefix}Only DELETE action is allowed when no attribute value is specified")),
            (json!({"a": {"Action": "DELETE", "Value": {"S": "a"}}}), format!("{prefix}DELETE action with value is not supported for the type S")),
            (json!({"a": {"Action": "ADD", "Value": {"M": {}}}}), format!("{prefix}ADD action is not supported for the type M")),
            (json!({"a": {"Action": "ADD", "Value": {"B": "YQ=="}}}), format!("{prefix}ADD action is not supported for the type B")),
            (json!({"a": {"Action": "MERGE", "Value": {"S": "a"}}}), "1 validation error detected: Value 'MERGE' at 'attributeUpdates.a.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]".to_owned()),
        ] {
            assert_eq!(attribute_updates(&updates).unwrap_err().0, message, "{updates}");
        }
        // Type mismatches found while applying are worded for AttributeUpdates.
        for updates in [
            json!({"ss": {"Action": "DELETE", "Value": {"NS": ["1"]}}}),
            json!({"ss": {"Action": "ADD", "Value": {"NS": ["1"]}}}),
            json!({"s": {"Action": "ADD", "Value": {"N": "1"}}}),
        ] {
            let mut updated = target();
            assert_eq!(
                attribute_updates(&updates)
                    .unwrap()
                    .apply(&mut updated)
                    .unwrap_err()
                    .0,
                "Type mismatch for attribute to update",
                "{updates}"
            );
        }
    }

    #[test]
    fn attributes_to_get_are_top_level_paths() {
        let paths = attributes_to_get(&json!(["a.b", "c"])).unwrap();
        assert_eq!(
            paths,
            [
                Path(vec![PathElem::Attr("a.b".into())]),
                Path(vec![PathElem::Attr("c".into())])
            ]
        );
        assert_eq!(
            super::super::project(
                &item(json!({"a.b": {"N": "1"}, "a": {"M": {"b": {"N": "2"}}}})),
                &paths
            ),
            item(json!({"a.b": {"N": "1"}}))
        );
        assert_eq!(
            attributes_to_get(&json!(["a", "a"])).unwrap_err().0,
            "One or more parameter values were invalid: Duplicate value in attribute name: a"
        );
        assert!(
            attributes_to_get(&json!([]))
                .unwrap_err()
                .0
                .contains("attributesToGet")
        );
    }
}
