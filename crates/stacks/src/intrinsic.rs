//! CloudFormation's intrinsic functions and pseudo parameters, evaluated against what a stack
//! knows: its parameters, mappings, conditions, the resources made so far and other stacks'
//! exports. Every error names the function and where in the template it is.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::StackError;

/// What `Ref` and `Fn::GetAtt` of a made resource give.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Made {
    /// `Ref`'s value.
    pub reference: String,
    /// `Fn::GetAtt`'s values, by attribute.
    pub attributes: BTreeMap<String, Value>,
}

/// Everything an expression may name.
#[derive(Debug, Default)]
pub struct Scope<'a> {
    pub parameters: BTreeMap<String, Value>,
    pub pseudo: BTreeMap<&'static str, Value>,
    pub mappings: Option<&'a Map<String, Value>>,
    pub conditions: BTreeMap<String, bool>,
    pub resources: BTreeMap<String, Made>,
    /// Logical ids the template declares (made or not yet).
    pub declared: BTreeSet<String>,
    pub exports: BTreeMap<String, String>,
}

pub const NO_VALUE: &str = "AWS::NoValue";

/// The longest string `Fn::Join` or `Fn::Sub` may make.
const MAX_STRING_BYTES: usize = 1 << 20;

impl Scope<'_> {
    /// The pseudo parameters of a stack.
    pub fn pseudo_for(
        account: &str,
        region: &str,
        stack_name: &str,
        stack_id: &str,
    ) -> BTreeMap<&'static str, Value> {
        BTreeMap::from([
            ("AWS::AccountId", Value::from(account)),
            ("AWS::Region", Value::from(region)),
            ("AWS::StackName", Value::from(stack_name)),
            ("AWS::StackId", Value::from(stack_id)),
            ("AWS::Partition", Value::from("aws")),
            ("AWS::URLSuffix", Value::from("amazonaws.com")),
            ("AWS::NotificationARNs", Value::Array(Vec::new())),
        ])
    }

    /// Evaluates `value`; `None` when it is `AWS::NoValue`.
    pub fn resolve(&self, value: &Value, at: &str) -> Result<Option<Value>, StackError> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(v) = self.resolve(item, &format!("{at}.{i}"))? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(map) => {
                if map.len() == 1
                    && let Some((name, args)) = map.iter().next()
                    && (name == "Ref" || name.starts_with("Fn::") || name == "Condition")
                {
                    return self.function(name, args, at);
                }
                let mut out = Map::new();
                for (k, v) in map {
                    if let Some(v) = self.resolve(v, &format!("{at}.{k}"))? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Evaluates `value` where a value is required.
    pub fn value(&self, value: &Value, at: &str) -> Result<Value, StackError> {
        self.resolve(value, at)?.ok_or_else(|| {
            StackError::validation(format!("Template error: {at} cannot be AWS::NoValue."))
        })
    }

    fn string(&self, value: &Value, at: &str, function: &str) -> Result<String, StackError> {
        match self.value(value, at)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(StackError::validation(format!(
                "Template error: {function} at {at} needs a string."
            ))),
        }
    }

    fn function(&self, name: &str, args: &Value, at: &str) -> Result<Option<Value>, StackError> {
        let bad =
            |what: &str| StackError::validation(format!("Template error: {name} at {at} {what}."));
        let at_fn = format!("{at}.{name}");
        match name {
            "Ref" => {
                let Some(target) = args.as_str() else {
                    return Err(bad("must name a parameter or resource"));
                };
                if target == NO_VALUE {
                    return Ok(None);
                }
                self.reference(target, at).map(Some)
            }
            "Fn::GetAtt" => {
                let (resource, attribute) = match args {
                    Value::Array(a) if a.len() == 2 => {
                        let r = a[0]
                            .as_str()
                            .ok_or_else(|| bad("must name a resource"))?
                            .to_owned();
                        let attr = self.string(&a[1], &at_fn, name)?;
                        (r, attr)
                    }
                    Value::String(s) => match s.split_once('.') {
                        Some((r, a)) => (r.to_owned(), a.to_owned()),
                        None => return Err(bad("must be [RESOURCE, ATTRIBUTE]")),
                    },
                    _ => return Err(bad("must be [RESOURCE, ATTRIBUTE]")),
                };
                self.attribute(&resource, &attribute, at).map(Some)
            }
            "Fn::Sub" => {
                let (text, vars) = match args {
                    Value::String(s) => (s.clone(), Map::new()),
                    Value::Array(a) if a.len() == 2 => {
                        let text = a[0]
                            .as_str()
                            .ok_or_else(|| bad("needs a string first"))?
                            .to_owned();
                        let Some(Value::Object(vars)) = self.resolve(&a[1], &at_fn)? else {
                            return Err(bad("needs a map of variables second"));
                        };
                        (text, vars)
                    }
                    _ => return Err(bad("must be a string or [STRING, VARIABLES]")),
                };
                self.substitute(&text, &vars, at)
                    .map(|s| Some(Value::String(s)))
            }
            "Fn::Join" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [DELIMITER, LIST]"));
                };
                if a.len() != 2 {
                    return Err(bad("must be [DELIMITER, LIST]"));
                }
                let delimiter = a[0]
                    .as_str()
                    .ok_or_else(|| bad("needs a string delimiter"))?;
                let Value::Array(items) = self.value(&a[1], &at_fn)? else {
                    return Err(bad("needs a list to join"));
                };
                let parts = items
                    .iter()
                    .map(|i| scalar_text(i).ok_or_else(|| bad("can join only strings")))
                    .collect::<Result<Vec<_>, _>>()?;
                let joined = parts.join(delimiter);
                if joined.len() > MAX_STRING_BYTES {
                    return Err(bad("makes a string longer than 1 MiB"));
                }
                Ok(Some(Value::String(joined)))
            }
            "Fn::Select" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [INDEX, LIST]"));
                };
                if a.len() != 2 {
                    return Err(bad("must be [INDEX, LIST]"));
                }
                let index = self.string(&a[0], &at_fn, name)?;
                let index: usize = index.parse().map_err(|_| bad("needs a number as index"))?;
                let Value::Array(items) = self.value(&a[1], &at_fn)? else {
                    return Err(bad("needs a list"));
                };
                items
                    .get(index)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| bad("has an index past the list's end"))
            }
            "Fn::Split" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [DELIMITER, STRING]"));
                };
                if a.len() != 2 {
                    return Err(bad("must be [DELIMITER, STRING]"));
                }
                let delimiter = a[0]
                    .as_str()
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| bad("needs a delimiter"))?;
                let text = self.string(&a[1], &at_fn, name)?;
                Ok(Some(Value::Array(
                    text.split(delimiter).map(Value::from).collect(),
                )))
            }
            "Fn::If" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [CONDITION, THEN, ELSE]"));
                };
                if a.len() != 3 {
                    return Err(bad("must be [CONDITION, THEN, ELSE]"));
                }
                let condition = a[0].as_str().ok_or_else(|| bad("must name a condition"))?;
                let chosen = if self.condition(condition, at)? {
                    &a[1]
                } else {
                    &a[2]
                };
                self.resolve(chosen, &at_fn)
            }
            "Condition" => {
                let condition = args.as_str().ok_or_else(|| bad("must name a condition"))?;
                self.condition(condition, at).map(|b| Some(Value::Bool(b)))
            }
            "Fn::Equals" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [A, B]"));
                };
                if a.len() != 2 {
                    return Err(bad("must be [A, B]"));
                }
                let x = self.value(&a[0], &at_fn)?;
                let y = self.value(&a[1], &at_fn)?;
                Ok(Some(Value::Bool(
                    scalar_text(&x)
                        .zip(scalar_text(&y))
                        .map_or(x == y, |(x, y)| x == y),
                )))
            }
            "Fn::Not" | "Fn::And" | "Fn::Or" => {
                let Value::Array(a) = args else {
                    return Err(bad("needs a list of conditions"));
                };
                let mut values = Vec::with_capacity(a.len());
                for item in a {
                    match self.value(item, &at_fn)? {
                        Value::Bool(b) => values.push(b),
                        Value::String(s) if s == "true" || s == "false" => values.push(s == "true"),
                        _ => return Err(bad("needs conditions (true or false)")),
                    }
                }
                let result = match name {
                    "Fn::Not" if values.len() == 1 => !values[0],
                    "Fn::Not" => return Err(bad("needs exactly one condition")),
                    _ if !(2..=10).contains(&values.len()) => {
                        return Err(bad("needs 2 to 10 conditions"));
                    }
                    "Fn::And" => values.iter().all(|b| *b),
                    _ => values.iter().any(|b| *b),
                };
                Ok(Some(Value::Bool(result)))
            }
            "Fn::FindInMap" => {
                let Value::Array(a) = args else {
                    return Err(bad("must be [MAP, KEY, KEY]"));
                };
                if a.len() != 3 {
                    return Err(bad("must be [MAP, KEY, KEY]"));
                }
                let map = self.string(&a[0], &at_fn, name)?;
                let top = self.string(&a[1], &at_fn, name)?;
                let second = self.string(&a[2], &at_fn, name)?;
                self.mappings
                    .and_then(|m| m.get(&map))
                    .and_then(|m| m.get(&top))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        bad(&format!(
                            "finds nothing at {map}.{top}.{second} in Mappings"
                        ))
                    })
            }
            "Fn::ImportValue" => {
                let export = self.string(args, &at_fn, name)?;
                self.exports
                    .get(&export)
                    .map(|v| Some(Value::String(v.clone())))
                    .ok_or_else(|| {
                        StackError::validation(format!(
                            "No export named {export} found (Fn::ImportValue at {at})."
                        ))
                    })
            }
            "Fn::Base64" => {
                use base64::Engine as _;
                let text = self.string(args, &at_fn, name)?;
                Ok(Some(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(text),
                )))
            }
            "Fn::GetAZs" => {
                let region = self
                    .pseudo
                    .get("AWS::Region")
                    .and_then(Value::as_str)
                    .unwrap_or("us-east-1");
                Ok(Some(Value::Array(vec![Value::String(format!(
                    "{region}a"
                ))])))
            }
            "Fn::ToJsonString" => {
                let v = self.value(args, &at_fn)?;
                Ok(Some(Value::String(v.to_string())))
            }
            "Fn::Length" => match self.value(args, &at_fn)? {
                Value::Array(a) => Ok(Some(Value::from(a.len()))),
                _ => Err(bad("needs a list")),
            },
            other => Err(StackError::validation(format!(
                "Template error: the intrinsic function {other} at {at} is not supported."
            ))),
        }
    }

    fn reference(&self, target: &str, at: &str) -> Result<Value, StackError> {
        if let Some(v) = self.parameters.get(target) {
            return Ok(v.clone());
        }
        if let Some(v) = self.pseudo.get(target) {
            return Ok(v.clone());
        }
        if let Some(made) = self.resources.get(target) {
            return Ok(Value::String(made.reference.clone()));
        }
        if self.declared.contains(target) {
            return Err(StackError::validation(format!(
                "Template error: {target} (Ref at {at}) is not made yet."
            )));
        }
        Err(StackError::validation(format!(
            "Template format error: Unresolved resource dependencies [{target}] in the Resources block of the template (Ref at {at})."
        )))
    }

    fn attribute(&self, resource: &str, attribute: &str, at: &str) -> Result<Value, StackError> {
        match self.resources.get(resource) {
            Some(made) => made.attributes.get(attribute).cloned().ok_or_else(|| {
                StackError::validation(format!(
                    "Template error: resource {resource} does not support attribute type {attribute} in Fn::GetAtt (at {at})."
                ))
            }),
            None if self.declared.contains(resource) => Err(StackError::validation(format!(
                "Template error: {resource} (Fn::GetAtt at {at}) is not made yet."
            ))),
            None => Err(StackError::validation(format!(
                "Template error: instance of Fn::GetAtt references undefined resource {resource} (at {at})."
            ))),
        }
    }

    /// Whether the named condition holds.
    pub fn condition(&self, name: &str, at: &str) -> Result<bool, StackError> {
        self.conditions.get(name).copied().ok_or_else(|| {
            StackError::validation(format!(
                "Template error: unresolved condition {name} (at {at})."
            ))
        })
    }

    fn substitute(
        &self,
        text: &str,
        vars: &Map<String, Value>,
        at: &str,
    ) -> Result<String, StackError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(StackError::validation(format!(
                    "Template error: Fn::Sub at {at} has an unclosed ${{."
                )));
            };
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar_text(v).ok_or_else(|| {
                    StackError::validation(format!(
                        "Template error: Fn::Sub variable {name} at {at} is not a string."
                    ))
                })?);
            } else {
                let name = name.trim();
                let value = match name.split_once('.') {
                    Some((res, attr))
                        if !self.parameters.contains_key(name)
                            && !self.pseudo.contains_key(name) =>
                    {
                        self.attribute(res, attr, at)?
                    }
                    _ => self.reference(name, at)?,
                };
                out.push_str(&scalar_text(&value).ok_or_else(|| {
                    StackError::validation(format!(
                        "Template error: Fn::Sub at {at}: ${{{name}}} is not a string."
                    ))
                })?);
            }
            if out.len() > MAX_STRING_BYTES {
                return Err(StackError::validation(format!(
                    "Template error: Fn::Sub at {at} makes a string longer than 1 MiB."
                )));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A scalar's text, as CloudFormation passes numbers and booleans to string properties.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => {
            // A list parameter inside Sub/Join is its comma-joined text.
            a.iter()
                .map(scalar_text)
                .collect::<Option<Vec<_>>>()
                .map(|p| p.join(","))
        }
        _ => None,
    }
}

/// The logical ids an expression refers to (`Ref`, `Fn::GetAtt`, `Fn::Sub`'s `${…}`), of
/// those in `declared`.
pub fn references(value: &Value, declared: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| references(i, declared, out)),
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("Ref", Value::String(target)) if declared.contains(target) => {
                        out.insert(target.clone());
                    }
                    ("Fn::GetAtt", Value::Array(a)) => {
                        if let Some(r) = a
                            .first()
                            .and_then(Value::as_str)
                            .filter(|r| declared.contains(*r))
                        {
                            out.insert(r.to_owned());
                        }
                    }
                    ("Fn::GetAtt", Value::String(s)) => {
                        let r = s.split('.').next().unwrap_or_default();
                        if declared.contains(r) {
                            out.insert(r.to_owned());
                        }
                    }
                    ("Fn::Sub", sub) => {
                        let (text, vars) = match sub {
                            Value::String(s) => (s.as_str(), None),
                            Value::Array(a) if a.len() == 2 => {
                                (a[0].as_str().unwrap_or_default(), Some(&a[1]))
                            }
                            _ => ("", None),
                        };
                        if let Some(vars) = vars {
                            references(vars, declared, out);
                        }
                        let mut rest = text;
                        while let Some(start) = rest.find("${") {
                            let after = &rest[start + 2..];
                            let Some(end) = after.find('}') else { break };
                            let name = after[..end].trim();
                            let explicit = vars.and_then(|v| v.get(name)).is_some();
                            if !name.starts_with('!') && !explicit {
                                let r = name.split('.').next().unwrap_or_default();
                                if declared.contains(r) {
                                    out.insert(r.to_owned());
                                }
                            }
                            rest = &after[end + 1..];
                        }
                    }
                    _ => references(v, declared, out),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope<'static> {
        let mut s = Scope {
            pseudo: Scope::pseudo_for("000000000000", "us-east-1", "app", "arn:stack"),
            ..Default::default()
        };
        s.parameters.insert("Stage".into(), json!("dev"));
        s.parameters.insert("Names".into(), json!(["a", "b"]));
        s.conditions.insert("IsProd".into(), false);
        s.declared.insert("Fn".into());
        s.declared.insert("Later".into());
        s.resources.insert(
            "Fn".into(),
            Made {
                reference: "app-Fn-X".into(),
                attributes: BTreeMap::from([(
                    "Arn".into(),
                    json!("arn:aws:lambda:us-east-1:0:function:app-Fn-X"),
                )]),
            },
        );
        s
    }

    #[test]
    fn functions_evaluate() {
        let s = scope();
        let v = s
            .resolve(
                &json!({
                    "a": {"Fn::Sub": "${AWS::StackName}-${Stage}-${Fn}-${Fn.Arn}-${!Literal}"},
                    "b": {"Fn::Join": ["-", [{"Ref": "Stage"}, "x", 3]]},
                    "c": {"Fn::Select": [1, {"Fn::Split": [",", "p,q,r"]}]},
                    "d": {"Fn::If": ["IsProd", "big", {"Ref": "AWS::NoValue"}]},
                    "e": {"Fn::Equals": [{"Ref": "Stage"}, "dev"]},
                    "f": [1, {"Ref": "AWS::NoValue"}, 2],
                    "g": {"Fn::Sub": ["${x}/${Stage}", {"x": {"Ref": "Fn"}}]},
                    "h": {"Fn::Join": [",", {"Ref": "Names"}]},
                }),
                "Root",
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            v,
            json!({
                "a": "app-dev-app-Fn-X-arn:aws:lambda:us-east-1:0:function:app-Fn-X-${Literal}",
                "b": "dev-x-3", "c": "q", "e": true, "f": [1, 2], "g": "app-Fn-X/dev", "h": "a,b",
            })
        );
    }

    #[test]
    fn errors_name_the_function_and_place() {
        let s = scope();
        let e = s
            .resolve(&json!({"Ref": "Nothing"}), "Resources.A.Properties.B")
            .unwrap_err();
        assert!(
            e.message.contains("[Nothing]") && e.message.contains("Resources.A.Properties.B"),
            "{}",
            e.message
        );
        let e = s
            .resolve(&json!({"Fn::GetAtt": ["Fn", "Bogus"]}), "X")
            .unwrap_err();
        assert!(e.message.contains("Bogus"));
        let e = s
            .resolve(&json!({"Fn::Transmogrify": 1}), "Resources.A")
            .unwrap_err();
        assert!(e.message.contains("Fn::Transmogrify") && e.message.contains("Resources.A"));
        let e = s
            .resolve(&json!({"Fn::ImportValue": "none"}), "Y")
            .unwrap_err();
        assert!(e.message.contains("No export named none"));
    }

    #[test]
    fn references_are_found_in_every_form() {
        let declared: BTreeSet<String> =
            ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
        let mut out = BTreeSet::new();
        references(
            &json!({"x": {"Ref": "A"}, "y": [{"Fn::GetAtt": ["B", "Arn"]}], "z": {"Fn::Sub": "${C.Arn}/${Stage}/${!D}"}, "w": {"Ref": "Stage"}}),
            &declared,
            &mut out,
        );
        assert_eq!(out.into_iter().collect::<Vec<_>>(), vec!["A", "B", "C"]);
    }
}
