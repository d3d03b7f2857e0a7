//! A template's sections, checked: parameters bound to their values, conditions evaluated,
//! resources with their dependencies in an order to make them in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::StackError;
use crate::intrinsic::{self, NO_VALUE, Scope};

pub const SAM_TRANSFORM: &str = "AWS::Serverless-2016-10-31";

/// One resource of a (transformed) template.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub properties: Value,
    pub depends_on: Vec<String>,
    pub condition: Option<String>,
    /// `Retain`: left in place when the stack no longer has it.
    pub retain: bool,
    /// `UpdateReplacePolicy: Retain`: the old resource is left in place when replaced.
    #[serde(default)]
    pub retain_on_replace: bool,
}

/// A template after the SAM transform, its sections split out.
#[derive(Debug, Clone)]
pub struct Template {
    pub description: Option<String>,
    pub parameters: Map<String, Value>,
    pub mappings: Map<String, Value>,
    pub conditions: Map<String, Value>,
    pub resources: BTreeMap<String, Resource>,
    pub outputs: Map<String, Value>,
}

const SECTIONS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
    "Globals",
];

/// The most resources a (transformed) template may hold.
pub const MAX_RESOURCES: usize = 2000;
/// The longest parameter value, as CloudFormation allows.
pub const MAX_PARAMETER_BYTES: usize = 4096;
/// The longest `AllowedPattern`.
const MAX_PATTERN_CHARS: usize = 1024;

const RESOURCE_KEYS: &[&str] = &[
    "Type",
    "Properties",
    "DependsOn",
    "Condition",
    "DeletionPolicy",
    "UpdateReplacePolicy",
    "Metadata",
];

fn section(raw: &Map<String, Value>, name: &str) -> Result<Map<String, Value>, StackError> {
    match raw.get(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(StackError::validation(format!(
            "Template format error: {name} must be a map."
        ))),
    }
}

/// Whether the template asks for the SAM transform (and only transforms this node has).
pub fn wants_sam(raw: &Map<String, Value>) -> Result<bool, StackError> {
    let names: Vec<&str> = match raw.get("Transform") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => {
            return Err(StackError::validation(
                "Template format error: Transform must be a name or a list of names.",
            ));
        }
    };
    for n in &names {
        if *n != SAM_TRANSFORM {
            return Err(StackError::validation(format!(
                "Transform {n} is not supported; this node has {SAM_TRANSFORM} only."
            )));
        }
    }
    Ok(!names.is_empty())
}

impl Template {
    /// Checks a (transformed) template's shape.
    pub fn from_raw(raw: &Value) -> Result<Self, StackError> {
        let Value::Object(raw) = raw else {
            return Err(StackError::validation(
                "Template format error: a template is a map.",
            ));
        };
        for key in raw.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(StackError::validation(format!(
                    "Template format error: Invalid template property or properties [{key}]"
                )));
            }
        }
        let mut resources = BTreeMap::new();
        let declared = section(raw, "Resources")?;
        if declared.is_empty() {
            return Err(StackError::validation(
                "Template format error: At least one Resources member must be defined.",
            ));
        }
        if declared.len() > MAX_RESOURCES {
            return Err(StackError::validation(format!(
                "Template format error: the template declares {} resources (after the SAM transform); at most {MAX_RESOURCES} are allowed.",
                declared.len()
            )));
        }
        for (name, max) in [
            ("Parameters", 200),
            ("Conditions", 200),
            ("Outputs", 200),
            ("Mappings", 200),
        ] {
            if section(raw, name)?.len() > max {
                return Err(StackError::validation(format!(
                    "Template format error: at most {max} {name} are allowed."
                )));
            }
        }
        for (id, r) in &declared {
            if !id.chars().all(|c| c.is_ascii_alphanumeric()) || id.len() > 255 {
                return Err(StackError::validation(format!(
                    "Template format error: Resource name {id} is non alphanumeric."
                )));
            }
            let Value::Object(r) = r else {
                return Err(StackError::validation(format!(
                    "Template format error: resource {id} must be a map."
                )));
            };
            for key in r.keys() {
                if !RESOURCE_KEYS.contains(&key.as_str()) {
                    return Err(StackError::validation(format!(
                        "Template format error: Unsupported attribute {key} of resource {id}."
                    )));
                }
            }
            let kind = r.get("Type").and_then(Value::as_str).ok_or_else(|| {
                StackError::validation(format!(
                    "Template format error: [/Resources/{id}] Every Resources object must contain a Type member."
                ))
            })?;
            let properties = match r.get("Properties") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(StackError::validation(format!(
                        "Template format error: Properties of {id} must be a map."
                    )));
                }
            };
            let depends_on = match r.get("DependsOn") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        StackError::validation(format!(
                            "Template format error: DependsOn of {id} must list names."
                        ))
                    })?,
                Some(_) => {
                    return Err(StackError::validation(format!(
                        "Template format error: DependsOn of {id} must be a name or a list of names."
                    )));
                }
            };
            let condition = match r.get("Condition") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(StackError::validation(format!(
                        "Template format error: Condition of {id} must name a condition."
                    )));
                }
            };
            let policy = |key: &str| -> Result<bool, StackError> {
                match r.get(key) {
                    None => Ok(false),
                    Some(Value::String(p)) if p == "Delete" => Ok(false),
                    Some(Value::String(p)) if p == "Retain" || p == "RetainExceptOnCreate" => {
                        Ok(true)
                    }
                    Some(Value::String(other)) => Err(StackError::validation(format!(
                        "{key} {other} of {id} is not supported (Delete and Retain are)."
                    ))),
                    // Refused rather than read as Delete: a policy decides what data survives.
                    Some(_) => Err(StackError::validation(format!(
                        "{key} of {id} must be Delete or Retain written out; intrinsic functions are not supported there."
                    ))),
                }
            };
            let retain = policy("DeletionPolicy")?;
            let retain_on_replace = policy("UpdateReplacePolicy")?;
            resources.insert(
                id.clone(),
                Resource {
                    kind: kind.to_owned(),
                    properties,
                    depends_on,
                    condition,
                    retain,
                    retain_on_replace,
                },
            );
        }
        Ok(Self {
            description: raw
                .get("Description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: section(raw, "Parameters")?,
            mappings: section(raw, "Mappings")?,
            conditions: section(raw, "Conditions")?,
            resources,
            outputs: section(raw, "Outputs")?,
        })
    }

    /// The parameters' values: those given, else their defaults, each checked against its
    /// declaration.
    pub fn bind(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Value>, StackError> {
        if let Some(unknown) = given.keys().find(|k| !self.parameters.contains_key(*k)) {
            return Err(StackError::validation(format!(
                "Parameters: [{unknown}] do not exist in the template"
            )));
        }
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, decl) in &self.parameters {
            let text = match given.get(name) {
                Some(v) => v.clone(),
                None => match decl.get("Default") {
                    Some(v) => intrinsic::scalar_text(v).ok_or_else(|| {
                        StackError::validation(format!(
                            "Parameter {name} has a default that is not a string."
                        ))
                    })?,
                    None => {
                        missing.push(name.clone());
                        continue;
                    }
                },
            };
            if text.len() > MAX_PARAMETER_BYTES {
                return Err(StackError::validation(format!(
                    "Parameter '{name}' is longer than {MAX_PARAMETER_BYTES} bytes."
                )));
            }
            out.insert(name.clone(), check_parameter(name, decl, &text)?);
        }
        if !missing.is_empty() {
            return Err(StackError::validation(format!(
                "Parameters: [{}] must have values",
                missing.join(", ")
            )));
        }
        Ok(out)
    }

    /// Every condition's value.
    pub fn evaluate_conditions(&self, scope: &Scope) -> Result<BTreeMap<String, bool>, StackError> {
        let mut done: BTreeMap<String, bool> = BTreeMap::new();
        // Conditions may name others: evaluate until nothing changes (a cycle never resolves).
        for _ in 0..=self.conditions.len() {
            let mut progressed = false;
            for (name, expr) in &self.conditions {
                if done.contains_key(name) {
                    continue;
                }
                let trial = Scope {
                    parameters: scope.parameters.clone(),
                    pseudo: scope.pseudo.clone(),
                    mappings: scope.mappings,
                    conditions: done.clone(),
                    ..Default::default()
                };
                match trial.value(expr, &format!("Conditions.{name}")) {
                    Ok(Value::Bool(b)) => {
                        done.insert(name.clone(), b);
                        progressed = true;
                    }
                    Ok(_) => {
                        return Err(StackError::validation(format!(
                            "Template error: condition {name} is not true or false."
                        )));
                    }
                    Err(e) if e.message.contains("unresolved condition") => {}
                    Err(e) => return Err(e),
                }
            }
            if !progressed {
                break;
            }
        }
        if let Some(name) = self.conditions.keys().find(|n| !done.contains_key(*n)) {
            return Err(StackError::validation(format!(
                "Template error: condition {name} names a condition that does not exist or forms a cycle."
            )));
        }
        Ok(done)
    }

    /// The resources whose condition holds, in an order that makes each after what it names.
    pub fn plan_order(
        &self,
        conditions: &BTreeMap<String, bool>,
        names: &BTreeSet<String>,
    ) -> Result<Vec<String>, StackError> {
        let mut active = BTreeMap::new();
        for (id, r) in &self.resources {
            let on = match &r.condition {
                None => true,
                Some(c) => *conditions.get(c).ok_or_else(|| {
                    StackError::validation(format!(
                        "Template error: unresolved condition {c} (resource {id})."
                    ))
                })?,
            };
            if on {
                active.insert(id.clone(), r);
            }
        }
        let declared: BTreeSet<String> = self.resources.keys().cloned().collect();
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, r) in &active {
            check_names(
                &r.properties,
                &declared,
                names,
                &format!("Resources.{id}.Properties"),
            )?;
            let mut set = BTreeSet::new();
            intrinsic::references(&r.properties, &declared, &mut set);
            for d in &r.depends_on {
                if !declared.contains(d) {
                    return Err(StackError::validation(format!(
                        "Template format error: Unresolved resource dependencies [{d}] in the Resources block of the template (DependsOn of {id})."
                    )));
                }
                set.insert(d.clone());
            }
            // A reference to a resource whose condition is off resolves to nothing there.
            set.retain(|d| active.contains_key(d));
            set.remove(id);
            deps.insert(id.clone(), set);
        }
        for (name, output) in &self.outputs {
            check_names(output, &declared, names, &format!("Outputs.{name}"))?;
        }
        // Kahn's algorithm, by name among the ready ones, so the order is stable.
        let mut order = Vec::with_capacity(deps.len());
        let mut waiting = deps.clone();
        while !waiting.is_empty() {
            let ready: Vec<String> = waiting
                .iter()
                .filter(|(_, d)| d.iter().all(|x| !waiting.contains_key(x)))
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                let cycle: Vec<&str> = waiting.keys().map(String::as_str).collect();
                return Err(StackError::validation(format!(
                    "Circular dependency between resources: [{}]",
                    cycle.join(", ")
                )));
            }
            for id in ready {
                waiting.remove(&id);
                order.push(id);
            }
        }
        Ok(order)
    }
}

/// Refuses a `Ref` or `Fn::GetAtt` to a name that is neither declared nor a parameter or
/// pseudo parameter.
fn check_names(
    value: &Value,
    declared: &BTreeSet<String>,
    names: &BTreeSet<String>,
    at: &str,
) -> Result<(), StackError> {
    match value {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_names(v, declared, names, &format!("{at}.{i}"))?;
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let target = match (k.as_str(), v) {
                    ("Ref", Value::String(t)) => Some(t.as_str()),
                    ("Fn::GetAtt", Value::Array(a)) => a.first().and_then(Value::as_str),
                    _ => None,
                };
                if let Some(t) = target
                    && t != NO_VALUE
                    && !declared.contains(t)
                    && !(k == "Ref" && names.contains(t))
                {
                    return Err(StackError::validation(format!(
                        "Template format error: Unresolved resource dependencies [{t}] in the Resources block of the template ({k} at {at})."
                    )));
                }
                check_names(v, declared, names, &format!("{at}.{k}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_parameter(name: &str, decl: &Value, text: &str) -> Result<Value, StackError> {
    let kind = decl.get("Type").and_then(Value::as_str).unwrap_or("String");
    let invalid = |why: String| StackError::validation(format!("Parameter '{name}' {why}"));
    if let Some(Value::Array(allowed)) = decl.get("AllowedValues") {
        let allowed: Vec<String> = allowed.iter().filter_map(intrinsic::scalar_text).collect();
        if !allowed.iter().any(|a| a == text) {
            return Err(invalid(format!(
                "must be one of AllowedValues: {}",
                allowed.join(", ")
            )));
        }
    }
    if let Some(pattern) = decl.get("AllowedPattern").and_then(Value::as_str) {
        match simple_pattern_matches(pattern, text) {
            Some(true) => {}
            Some(false) => return Err(invalid(format!("must match pattern {pattern}"))),
            None => {
                return Err(invalid(format!(
                    "has an AllowedPattern ({pattern}) with regular-expression features this node does not read \
                     (literals, ., classes, \\d \\w \\s and their negations, * + ? {{m,n}}, top-level | and one enclosing group are)"
                )));
            }
        }
    }
    let len = text.chars().count();
    if let Some(min) = decl.get("MinLength").and_then(as_u64)
        && (len as u64) < min
    {
        return Err(invalid(format!("must contain at least {min} characters")));
    }
    if let Some(max) = decl.get("MaxLength").and_then(as_u64)
        && (len as u64) > max
    {
        return Err(invalid(format!("must contain at most {max} characters")));
    }
    match kind {
        "Number" => {
            let n: f64 = text
                .parse()
                .map_err(|_| invalid("must be a number".into()))?;
            if let Some(min) = decl.get("MinValue").and_then(as_f64)
                && n < min
            {
                return Err(invalid(format!("must be a number not less than {min}")));
            }
            if let Some(max) = decl.get("MaxValue").and_then(as_f64)
                && n > max
            {
                return Err(invalid(format!("must be a number not greater than {max}")));
            }
            Ok(Value::String(text.to_owned()))
        }
        "CommaDelimitedList" | "List<Number>" | "List<String>" => Ok(Value::Array(
            text.split(',')
                .map(|s| Value::String(s.trim().to_owned()))
                .collect(),
        )),
        _ if kind == "String" || kind.starts_with("AWS::") => Ok(Value::String(text.to_owned())),
        other => Err(invalid(format!("has type {other}, which is not supported"))),
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

/// `AllowedPattern`s as templates write them: a regular expression anchored at both ends.
/// The common forms are handled: literals, `.`, classes `[a-z0-9_-]` (with `^` negation),
/// `\d \w \s` and `\D \W \S`, quantifiers `* + ? {m,n}`, alternation of whole patterns
/// with `|`, one group around the whole. `None`: a pattern this cannot read (refused).
/// Matching takes time linear in the pattern times the text, whatever the pattern.
pub fn simple_pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return None;
    }
    let p = pattern.strip_prefix('^').unwrap_or(pattern);
    let p = p.strip_suffix('$').unwrap_or(p);
    let p = match p.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        Some(inner) if !inner.contains(['(', ')']) => inner,
        _ => p,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut any = false;
    for alt in split_top_level(p) {
        any |= matches_all(&parse_atoms(&alt)?, &chars);
    }
    Some(any)
}

fn split_top_level(p: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut in_class = false;
    let mut escaped = false;
    for c in p.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '[' {
            in_class = true;
        } else if c == ']' {
            in_class = false;
        } else if c == '|' && !in_class {
            out.push(String::new());
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

#[derive(Debug)]
struct Atom {
    set: Vec<(char, char)>,
    negated: bool,
    any: bool,
    min: usize,
    max: usize,
}

/// The set of a class escape and whether it is negated (`\D`, `\W`, `\S`).
fn class_escape(c: char) -> Option<(Vec<(char, char)>, bool)> {
    let set = match c.to_ascii_lowercase() {
        'd' => vec![('0', '9')],
        'w' => vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
        's' => vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')],
        _ => return None,
    };
    Some((set, c.is_ascii_uppercase()))
}

fn parse_atoms(p: &str) -> Option<Vec<Atom>> {
    let c: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut atoms = Vec::new();
    while i < c.len() {
        let mut atom = Atom {
            set: Vec::new(),
            negated: false,
            any: false,
            min: 1,
            max: 1,
        };
        match c[i] {
            '.' => {
                atom.any = true;
                i += 1;
            }
            '\\' => {
                let e = *c.get(i + 1)?;
                match class_escape(e) {
                    Some((set, negated)) => {
                        atom.set = set;
                        atom.negated = negated;
                    }
                    None => atom.set = vec![(e, e)],
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    atom.negated = true;
                    i += 1;
                }
                let mut first = true;
                while i < c.len() && (c[i] != ']' || first) {
                    first = false;
                    let lo = if c[i] == '\\' {
                        let e = *c.get(i + 1)?;
                        i += 2;
                        match class_escape(e) {
                            Some((set, false)) => {
                                atom.set.extend(set);
                                continue;
                            }
                            // `[\D…]` is not read.
                            Some((_, true)) => return None,
                            None => {}
                        }
                        e
                    } else {
                        i += 1;
                        c[i - 1]
                    };
                    if c.get(i) == Some(&'-') && c.get(i + 1).is_some_and(|n| *n != ']') {
                        let hi = c[i + 1];
                        atom.set.push((lo, hi));
                        i += 2;
                    } else {
                        atom.set.push((lo, lo));
                    }
                }
                if c.get(i) != Some(&']') {
                    return None;
                }
                i += 1;
            }
            '(' | ')' | '^' | '$' => return None,
            ch => {
                atom.set = vec![(ch, ch)];
                i += 1;
            }
        }
        match c.get(i) {
            Some('*') => {
                atom.min = 0;
                atom.max = usize::MAX;
                i += 1;
            }
            Some('+') => {
                atom.max = usize::MAX;
                i += 1;
            }
            Some('?') => {
                atom.min = 0;
                i += 1;
            }
            Some('{') => {
                let end = c[i..].iter().position(|x| *x == '}')? + i;
                let inner: String = c[i + 1..end].iter().collect();
                let (lo, hi) = match inner.split_once(',') {
                    Some((lo, "")) => (lo.parse().ok()?, usize::MAX),
                    Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                    None => {
                        let n = inner.parse().ok()?;
                        (n, n)
                    }
                };
                atom.min = lo;
                atom.max = hi;
                i = end + 1;
            }
            _ => {}
        }
        atoms.push(atom);
    }
    Some(atoms)
}

fn atom_accepts(a: &Atom, ch: char) -> bool {
    if a.any {
        return ch != '\n';
    }
    let inside = a.set.iter().any(|(lo, hi)| (*lo..=*hi).contains(&ch));
    inside != a.negated
}

/// Whether `atoms` match all of `text`, by dynamic programming from the last atom back:
/// `next[j]` says whether the atoms after the current one match `text[j..]`.
fn matches_all(atoms: &[Atom], text: &[char]) -> bool {
    let n = text.len();
    let mut next = vec![false; n + 1];
    next[n] = true;
    for atom in atoms.iter().rev() {
        // How many of `next` are true before each position, for range queries.
        let mut before = vec![0usize; n + 2];
        for j in 0..=n {
            before[j + 1] = before[j] + usize::from(next[j]);
        }
        // How many characters from each position the atom accepts in a row.
        let mut run = vec![0usize; n + 1];
        for j in (0..n).rev() {
            run[j] = if atom_accepts(atom, text[j]) {
                run[j + 1] + 1
            } else {
                0
            };
        }
        let mut current = vec![false; n + 1];
        for j in 0..=n {
            if atom.min > run[j] {
                continue;
            }
            let (lo, hi) = (j + atom.min, j + atom.max.min(run[j]));
            current[j] = before[hi + 1] > before[lo];
        }
        next = current;
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_checked_against_their_declarations() {
        let raw = json!({
            "Parameters": {
                "Stage": {"Type": "String", "AllowedValues": ["dev", "prod"], "Default": "dev"},
                "Name": {"Type": "String", "AllowedPattern": "^[a-z][a-z0-9-]{2,20}$"},
                "Size": {"Type": "Number", "MinValue": 1, "MaxValue": 10, "Default": 3},
                "Subnets": {"Type": "CommaDelimitedList", "Default": "a, b"},
            },
            "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
        });
        let t = Template::from_raw(&raw).unwrap();
        let given = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let bound = t.bind(&given(&[("Name", "my-app")])).unwrap();
        assert_eq!(bound["Stage"], json!("dev"));
        assert_eq!(bound["Subnets"], json!(["a", "b"]));
        assert!(
            t.bind(&given(&[]))
                .unwrap_err()
                .message
                .contains("[Name] must have values")
        );
        assert!(
            t.bind(&given(&[("Name", "My_App")]))
                .unwrap_err()
                .message
                .contains("pattern")
        );
        assert!(
            t.bind(&given(&[("Name", "app"), ("Stage", "qa")]))
                .unwrap_err()
                .message
                .contains("AllowedValues")
        );
        assert!(
            t.bind(&given(&[("Name", "app"), ("Size", "11")]))
                .unwrap_err()
                .message
                .contains("greater")
        );
        assert!(
            t.bind(&given(&[("Name", "app"), ("Nope", "1")]))
                .unwrap_err()
                .message
                .contains("[Nope] do not exist")
        );
    }

    #[test]
    fn order_follows_references_and_finds_cycles() {
        let raw = json!({
            "Resources": {
                "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": ["Role", "Arn"]}}},
                "Role": {"Type": "AWS::IAM::Role"},
                "Url": {"Type": "AWS::Lambda::Url", "Properties": {"TargetFunctionArn": {"Fn::Sub": "${Fn.Arn}"}}, "DependsOn": "Role"},
            },
        });
        let t = Template::from_raw(&raw).unwrap();
        let order = t.plan_order(&BTreeMap::new(), &BTreeSet::new()).unwrap();
        assert_eq!(order, vec!["Role", "Fn", "Url"]);

        let cyclic = json!({"Resources": {
            "A": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::GetAtt": ["B", "QueueName"]}}},
            "B": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Ref": "A"}}},
        }});
        let e = Template::from_raw(&cyclic)
            .unwrap()
            .plan_order(&BTreeMap::new(), &BTreeSet::new())
            .unwrap_err();
        assert!(
            e.message
                .contains("Circular dependency between resources: [A, B]"),
            "{}",
            e.message
        );

        let dangling = json!({"Resources": {"A": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Ref": "Ghost"}}}}});
        let e = Template::from_raw(&dangling)
            .unwrap()
            .plan_order(&BTreeMap::new(), &BTreeSet::new())
            .unwrap_err();
        assert!(
            e.message.contains("[Ghost]") && e.message.contains("Resources.A.Properties"),
            "{}",
            e.message
        );
    }

    #[test]
    fn patterns() {
        let m = |p: &str, t: &str| simple_pattern_matches(p, t);
        assert_eq!(m("^[a-zA-Z0-9-]+$", "my-stage-1"), Some(true));
        assert_eq!(m("^[a-zA-Z0-9-]+$", "my stage"), Some(false));
        assert_eq!(m("[a-z]{3,5}", "abcd"), Some(true));
        assert_eq!(m("[a-z]{3,5}", "ab"), Some(false));
        assert_eq!(m("dev|prod", "prod"), Some(true));
        assert_eq!(m("^(dev|prod)$", "qa"), Some(false));
        assert_eq!(m("\\d+\\.\\d+", "3.14"), Some(true));
        assert_eq!(m("\\S+", "a b"), Some(false));
        assert_eq!(m("(a)(b)", "ab"), None);
        // Patterns that make a backtracking matcher take exponential time or deep recursion
        // are linear here.
        let stars = "a*".repeat(20) + "b";
        assert_eq!(m(&stars, &"a".repeat(4000)), Some(false));
        assert_eq!(m(&"a?".repeat(500), ""), Some(true));
    }
}
