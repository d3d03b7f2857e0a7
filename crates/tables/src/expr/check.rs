//! Turns the raw trees of `parser` into checked ones: resolves placeholders, rejects reserved
//! words, misplaced functions, overlapping paths and constants of the wrong type.
//!
//! DynamoDB reports one problem per expression, and when an expression has several it picks
//! by kind (a reserved word before an undefined placeholder, and so on). So every problem is
//! recorded under its category as the tree is walked, and the first category in the
//! expression's order wins.

use base64::Engine as _;

use super::parser::{ParsedCondition, RawAction, RawCond, RawElem, RawOperand, Section};
use super::reserved::is_reserved;
use super::update::{Action, SetValue, Update, UpdateOperand};
use super::{
    Comparator, Condition, Context, ExprError, KeyCondition, Operand, Path, PathElem,
    RangeCondition, eval,
};
use crate::value::Value;

/// The deepest document path DynamoDB accepts.
const MAX_PATH_DEPTH: usize = 32;
/// The most values an IN list may hold.
const MAX_IN_OPERANDS: usize = 100;

const CONDITION_FUNCTIONS: [&str; 5] = [
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
];
const UPDATE_FUNCTIONS: [&str; 2] = ["if_not_exists", "list_append"];
const TYPE_NAMES: [&str; 10] = ["S", "N", "B", "NULL", "SS", "BOOL", "L", "BS", "NS", "M"];

/// The kinds of problem, each reported with its own message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cat {
    Parens,
    UnknownFunction,
    MisusedFunction,
    Reserved,
    Section,
    UndefinedName,
    UndefinedValue,
    Overlap,
    Conflict,
    Operand,
    OperandCount,
    Distinct,
    Function,
}

const CONDITION_ORDER: [Cat; 8] = [
    Cat::Parens,
    Cat::UnknownFunction,
    Cat::MisusedFunction,
    Cat::Reserved,
    Cat::UndefinedName,
    Cat::OperandCount,
    Cat::Distinct,
    Cat::Function,
];
const UPDATE_ORDER: [Cat; 11] = [
    Cat::Reserved,
    Cat::UnknownFunction,
    Cat::MisusedFunction,
    Cat::Section,
    Cat::UndefinedName,
    Cat::UndefinedValue,
    Cat::Overlap,
    Cat::Conflict,
    Cat::Operand,
    Cat::OperandCount,
    Cat::Function,
];
const PROJECTION_ORDER: [Cat; 5] = [
    Cat::Reserved,
    Cat::UndefinedName,
    Cat::Overlap,
    Cat::Conflict,
    Cat::Function,
];

/// How two paths of one expression relate when they cannot both stand.
enum Clash {
    /// One is the other or lies inside it.
    Overlap,
    /// At the same depth one indexes a list and the other names a map key.
    Conflict,
}

fn clash(a: &Path, b: &Path) -> Option<Clash> {
    for (x, y) in a.0.iter().zip(&b.0) {
        match (x, y) {
            (PathElem::Attr(x), PathElem::Attr(y)) if x == y => {}
            (PathElem::Index(x), PathElem::Index(y)) if x == y => {}
            (PathElem::Attr(_), PathElem::Attr(_)) | (PathElem::Index(_), PathElem::Index(_)) => {
                return None;
            }
            _ => return Some(Clash::Conflict),
        }
    }
    Some(Clash::Overlap)
}

/// `{N:10}`, as DynamoDB shows a constant in BETWEEN messages.
fn brief(v: &Value) -> String {
    let shown = match v {
        Value::S(s) => s.clone(),
        Value::N(n) => n.to_string(),
        Value::B(b) => base64::engine::general_purpose::STANDARD.encode(b),
        other => other.to_json().to_string(),
    };
    format!("{{{}:{shown}}}", v.type_name())
}

/// The type names DynamoDB uses in ADD and DELETE messages.
fn long_type_name(v: &Value) -> &'static str {
    match v {
        Value::S(_) => "STRING",
        Value::N(_) => "NUMBER",
        Value::B(_) => "BINARY",
        Value::Bool(_) => "BOOLEAN",
        Value::Null => "NULL",
        Value::M(_) => "MAP",
        Value::L(_) => "LIST",
        Value::Ss(_) => "STRING_SET",
        Value::Ns(_) => "NUMBER_SET",
        Value::Bs(_) => "BINARY_SET",
    }
}

/// Stands in for a part that was rejected; the expression fails, so it is never evaluated.
fn rejected_operand() -> Operand {
    Operand::Value(Value::Null)
}

fn rejected_condition() -> Condition {
    Condition::AttributeExists(Path(Vec::new()))
}

struct Checker<'c, 'a> {
    cx: &'c Context<'a>,
    kind: &'c str,
    /// In conditions DynamoDB reports the first undefined placeholder of either sort; in
    /// updates, undefined names before undefined values.
    values_with_names: bool,
    found: Vec<(Cat, String)>,
}

impl<'c, 'a> Checker<'c, 'a> {
    fn new(cx: &'c Context<'a>, kind: &'c str, values_with_names: bool) -> Self {
        Self {
            cx,
            kind,
            values_with_names,
            found: Vec::new(),
        }
    }

    fn record(&mut self, cat: Cat, message: impl Into<String>) {
        if !self.found.iter().any(|(c, _)| *c == cat) {
            self.found.push((cat, message.into()));
        }
    }

    fn finish<T>(self, order: &[Cat], checked: T) -> Result<T, ExprError> {
        let first = order
            .iter()
            .find_map(|cat| self.found.iter().find(|(c, _)| c == cat))
            .or(self.found.first());
        match first {
            Some((_, message)) => Err(ExprError(format!("Invalid {}: {message}", self.kind))),
            None => Ok(checked),
        }
    }

    fn path(&mut self, raw: &[RawElem<'_>]) -> Path {
        let mut elems = Vec::with_capacity(raw.len());
        for elem in raw {
            elems.push(match elem {
                RawElem::Bare(name) => {
                    if is_reserved(name) {
                        self.record(
                            Cat::Reserved,
                            format!("Attribute name is a reserved keyword; reserved keyword: {name}"),
                        );
                    }
                    PathElem::Attr((*name).to_owned())
                }
                RawElem::Placeholder(placeholder) => match self.cx.name(placeholder) {
                    Some(name) => PathElem::Attr(name.to_owned()),
                    None => {
                        self.record(
                            Cat::UndefinedName,
                            format!(
                                "An expression attribute name used in the document path is not defined; attribute name: {placeholder}"
                            ),
                        );
                        PathElem::Attr((*placeholder).to_owned())
                    }
                },
                RawElem::Index(index) => PathElem::Index(*index),
            });
        }
        if elems.len() > MAX_PATH_DEPTH {
            self.record(
                Cat::Function,
                format!(
                    "The document path has too many nesting levels; nesting levels: {}",
                    elems.len()
                ),
            );
        }
        Path(elems)
    }

    fn value(&mut self, placeholder: &str) -> Value {
        if let Some(value) = self.cx.value(placeholder) {
            return value.clone();
        }
        let cat = if self.values_with_names {
            Cat::UndefinedName
        } else {
            Cat::UndefinedValue
        };
        self.record(
            cat,
            format!(
                "An expression attribute value used in expression is not defined; attribute value: {placeholder}"
            ),
        );
        Value::Null
    }

    fn arity(&mut self, function: &str, count: usize, wanted: usize) -> bool {
        if count == wanted {
            return true;
        }
        self.record(
            Cat::OperandCount,
            format!(
                "Incorrect number of operands for operator or function; operator or function: {function}, number of operands: {count}"
            ),
        );
        false
    }

    fn needs_path(&mut self, function: &str) {
        self.record(
            Cat::Function,
            format!(
                "Operator or function requires a document path; operator or function: {function}"
            ),
        );
    }

    fn wrong_type(&mut self, function: &str, type_name: &str) {
        self.record(
            Cat::Function,
            format!(
                "Incorrect operand type for operator or function; operator or function: {function}, operand type: {type_name}"
            ),
        );
    }

    /// DynamoDB refuses to compare a path with itself.
    fn distinct<'o>(
        &mut self,
        operator: &str,
        first: &Operand,
        rest: impl IntoIterator<Item = &'o Operand>,
    ) {
        let Operand::Path(first) = first else {
            return;
        };
        if rest
            .into_iter()
            .any(|o| matches!(o, Operand::Path(p) if p == first))
        {
            self.record(
                Cat::Distinct,
                format!(
                    "The first operand must be distinct from the remaining operands for this operator or function; operator: {operator}, first operand: {}",
                    first.listed()
                ),
            );
        }
    }

    /// Constants used with an ordering operator must be numbers, strings or binaries.
    fn orderable<'o>(&mut self, operator: &str, operands: impl IntoIterator<Item = &'o Operand>) {
        for operand in operands {
            if let Operand::Value(v) = operand
                && !matches!(v, Value::N(_) | Value::S(_) | Value::B(_))
            {
                self.wrong_type(operator, v.type_name());
            }
        }
    }

    fn condition(&mut self, raw: &RawCond<'_>) -> Condition {
        match raw {
            RawCond::Compare(op, left, right) => {
                let (left, right) = (self.operand(left), self.operand(right));
                self.distinct(op.symbol(), &left, [&right]);
                if !matches!(op, Comparator::Eq | Comparator::Ne) {
                    self.orderable(op.symbol(), [&left, &right]);
                }
                Condition::Compare(left, *op, right)
            }
            RawCond::Between(x, low, high) => {
                let (x, low, high) = (self.operand(x), self.operand(low), self.operand(high));
                self.distinct("BETWEEN", &x, [&low, &high]);
                self.orderable("BETWEEN", [&x, &low, &high]);
                if let (Operand::Value(l), Operand::Value(h)) = (&low, &high) {
                    self.bounds(l, h);
                }
                Condition::Between(x, low, high)
            }
            RawCond::In(x, list) => {
                let x = self.operand(x);
                let list: Vec<Operand> = list.iter().map(|o| self.operand(o)).collect();
                if list.len() > MAX_IN_OPERANDS {
                    self.record(
                        Cat::Function,
                        format!(
                            "The IN operator is provided with too many operands; number of operands: {}",
                            list.len()
                        ),
                    );
                }
                self.distinct("IN", &x, &list);
                Condition::In(x, list)
            }
            RawCond::Call(name, args) => self.condition_call(name, args),
            RawCond::Not(c) => Condition::Not(Box::new(self.condition(c))),
            RawCond::And(a, b) => {
                Condition::And(Box::new(self.condition(a)), Box::new(self.condition(b)))
            }
            RawCond::Or(a, b) => {
                Condition::Or(Box::new(self.condition(a)), Box::new(self.condition(b)))
            }
        }
    }

    fn bounds(&mut self, low: &Value, high: &Value) {
        let shown = format!(
            "lower bound operand: AttributeValue: {}, upper bound operand: AttributeValue: {}",
            brief(low),
            brief(high)
        );
        if low.type_name() != high.type_name() {
            self.record(
                Cat::Function,
                format!(
                    "The BETWEEN operator requires same data type for lower and upper bounds; {shown}"
                ),
            );
        } else if eval::order(low, high) == Some(std::cmp::Ordering::Greater) {
            self.record(
                Cat::Function,
                format!(
                    "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; {shown}"
                ),
            );
        }
    }

    /// A function call in the place of a condition.
    fn condition_call(&mut self, name: &str, args: &[RawOperand<'_>]) -> Condition {
        if !CONDITION_FUNCTIONS.contains(&name) {
            for arg in args {
                self.operand(arg);
            }
            if name == "size" {
                self.record(
                    Cat::MisusedFunction,
                    "The function is not allowed to be used this way in an expression; function: size",
                );
            } else {
                self.foreign_function(name);
            }
            return rejected_condition();
        }
        let ops: Vec<Operand> = args.iter().map(|a| self.operand(a)).collect();
        let wanted = match name {
            "attribute_exists" | "attribute_not_exists" => 1,
            _ => 2,
        };
        if !self.arity(name, ops.len(), wanted) {
            return rejected_condition();
        }
        if wanted == 2 {
            self.distinct(name, &ops[0], [&ops[1]]);
        }
        let mut ops = ops.into_iter();
        let (Some(first), second) = (ops.next(), ops.next()) else {
            return rejected_condition();
        };
        match (name, first, second) {
            ("attribute_exists", Operand::Path(p), _) => Condition::AttributeExists(p),
            ("attribute_not_exists", Operand::Path(p), _) => Condition::AttributeNotExists(p),
            ("attribute_type", Operand::Path(p), Some(t)) => match t {
                Operand::Value(Value::S(t)) if TYPE_NAMES.contains(&t.as_str()) => {
                    Condition::AttributeType(p, t)
                }
                Operand::Value(Value::S(t)) => {
                    self.record(
                        Cat::Function,
                        format!(
                            "Invalid attribute type name found; type: {t}, valid types: {{B,NULL,SS,BOOL,L,BS,N,NS,S,M}}"
                        ),
                    );
                    rejected_condition()
                }
                Operand::Value(v) => {
                    self.wrong_type(name, v.type_name());
                    rejected_condition()
                }
                _ => {
                    self.wrong_type(name, "{NS,SS,L,BS,N,M,B,BOOL,NULL,S}");
                    rejected_condition()
                }
            },
            ("begins_with", first, Some(second)) => {
                for operand in [&first, &second] {
                    if let Operand::Value(v) = operand
                        && !matches!(v, Value::S(_) | Value::B(_))
                    {
                        self.wrong_type(name, v.type_name());
                    }
                }
                Condition::BeginsWith(first, second)
            }
            ("contains", first, Some(second)) => Condition::Contains(first, second),
            _ => {
                self.needs_path(name);
                rejected_condition()
            }
        }
    }

    /// An update function in a condition, or a function DynamoDB does not have.
    fn foreign_function(&mut self, name: &str) {
        if UPDATE_FUNCTIONS.contains(&name) {
            self.record(
                Cat::MisusedFunction,
                format!("The function is not allowed in a condition expression; function: {name}"),
            );
        } else {
            self.record(
                Cat::UnknownFunction,
                format!("Invalid function name; function: {name}"),
            );
        }
    }

    fn operand(&mut self, raw: &RawOperand<'_>) -> Operand {
        match raw {
            RawOperand::Path(p) => Operand::Path(self.path(p)),
            RawOperand::Value(placeholder) => Operand::Value(self.value(placeholder)),
            RawOperand::Call(name, args) => {
                let ops: Vec<Operand> = args.iter().map(|a| self.operand(a)).collect();
                if *name == "size" {
                    if !self.arity(name, ops.len(), 1) {
                        return rejected_operand();
                    }
                    return match ops.into_iter().next() {
                        Some(Operand::Path(p)) => Operand::Size(p),
                        _ => {
                            self.needs_path(name);
                            rejected_operand()
                        }
                    };
                }
                if CONDITION_FUNCTIONS.contains(name) {
                    self.record(
                        Cat::MisusedFunction,
                        format!(
                            "The function is not allowed to be used this way in an expression; function: {name}"
                        ),
                    );
                } else {
                    self.foreign_function(name);
                }
                rejected_operand()
            }
            RawOperand::Arith(left, op, right) => {
                self.operand(left);
                self.operand(right);
                self.record(
                    Cat::MisusedFunction,
                    format!(
                        "The function is not allowed to be used this way in an expression; function: {}",
                        op.symbol()
                    ),
                );
                rejected_operand()
            }
        }
    }

    fn overlaps(&mut self, paths: &[&Path]) {
        for (j, later) in paths.iter().enumerate() {
            for earlier in &paths[..j] {
                let (cat, relation) = match clash(earlier, later) {
                    Some(Clash::Overlap) => (Cat::Overlap, "overlap"),
                    Some(Clash::Conflict) => (Cat::Conflict, "conflict"),
                    None => continue,
                };
                self.record(
                    cat,
                    format!(
                        "Two document paths {relation} with each other; must remove or rewrite one of these paths; path one: {}, path two: {}",
                        earlier.listed(),
                        later.listed()
                    ),
                );
            }
        }
    }

    fn action(&mut self, raw: &RawAction<'_>) -> Action {
        match raw {
            RawAction::Set(path, value) => Action::Set(self.path(path), self.set_value(value)),
            RawAction::Remove(path) => Action::Remove(self.path(path)),
            RawAction::Add(path, placeholder) => {
                let path = self.path(path);
                let value = self.value(placeholder);
                if !matches!(
                    value,
                    Value::N(_) | Value::Ss(_) | Value::Ns(_) | Value::Bs(_)
                ) {
                    self.set_operand_error("ADD", &value);
                }
                Action::Add(path, value)
            }
            RawAction::Delete(path, placeholder) => {
                let path = self.path(path);
                let value = self.value(placeholder);
                if !matches!(value, Value::Ss(_) | Value::Ns(_) | Value::Bs(_)) {
                    self.set_operand_error("DELETE", &value);
                }
                Action::Delete(path, value)
            }
        }
    }

    fn set_operand_error(&mut self, action: &str, value: &Value) {
        self.record(
            Cat::Operand,
            format!(
                "Incorrect operand type for operator or function; operator: {action}, operand type: {}, typeSet: ALLOWED_FOR_{action}_OPERAND",
                long_type_name(value)
            ),
        );
    }

    fn set_value(&mut self, raw: &RawOperand<'_>) -> SetValue {
        let RawOperand::Arith(left, op, right) = raw else {
            return SetValue::Operand(self.update_operand(raw));
        };
        let (left, right) = (self.update_operand(left), self.update_operand(right));
        for operand in [&left, &right] {
            if let UpdateOperand::Value(v) = operand
                && !matches!(v, Value::N(_))
            {
                self.wrong_type(op.symbol(), v.type_name());
            }
        }
        match op {
            super::parser::ArithOp::Plus => SetValue::Plus(left, right),
            super::parser::ArithOp::Minus => SetValue::Minus(left, right),
        }
    }

    fn update_operand(&mut self, raw: &RawOperand<'_>) -> UpdateOperand {
        let rejected = || UpdateOperand::Value(Value::Null);
        match raw {
            RawOperand::Path(p) => UpdateOperand::Path(self.path(p)),
            RawOperand::Value(placeholder) => UpdateOperand::Value(self.value(placeholder)),
            RawOperand::Call(name, args) => {
                let ops: Vec<UpdateOperand> = args.iter().map(|a| self.update_operand(a)).collect();
                if !UPDATE_FUNCTIONS.contains(name) {
                    if CONDITION_FUNCTIONS.contains(name) || *name == "size" {
                        self.record(
                            Cat::MisusedFunction,
                            format!(
                                "The function is not allowed in an update expression; function: {name}"
                            ),
                        );
                    } else {
                        self.record(
                            Cat::UnknownFunction,
                            format!("Invalid function name; function: {name}"),
                        );
                    }
                    return rejected();
                }
                if !self.arity(name, ops.len(), 2) {
                    return rejected();
                }
                let mut ops = ops.into_iter();
                let (Some(first), Some(second)) = (ops.next(), ops.next()) else {
                    return rejected();
                };
                if *name == "if_not_exists" {
                    let UpdateOperand::Path(path) = first else {
                        self.needs_path(name);
                        return rejected();
                    };
                    return UpdateOperand::IfNotExists(path, Box::new(second));
                }
                for operand in [&first, &second] {
                    if let UpdateOperand::Value(v) = operand
                        && !matches!(v, Value::L(_))
                    {
                        self.wrong_type(name, v.type_name());
                    }
                }
                UpdateOperand::ListAppend(Box::new(first), Box::new(second))
            }
            RawOperand::Arith(..) => {
                // The grammar only allows arithmetic at the top of a SET value.
                self.record(
                    Cat::MisusedFunction,
                    "The function is not allowed to be used this way in an expression; function: +",
                );
                rejected()
            }
        }
    }
}

/// Checks a parsed condition of the given kind (`ConditionExpression`, …).
pub(crate) fn condition(
    parsed: &ParsedCondition<'_>,
    cx: &Context<'_>,
    kind: &str,
) -> Result<Condition, ExprError> {
    let mut checker = Checker::new(cx, kind, true);
    if parsed.redundant_parentheses {
        checker.record(Cat::Parens, "The expression has redundant parentheses;");
    }
    let cond = checker.condition(&parsed.cond);
    checker.finish(&CONDITION_ORDER, cond)
}

/// Checks the paths of a ProjectionExpression.
pub(crate) fn projection(
    parsed: &[Vec<RawElem<'_>>],
    cx: &Context<'_>,
) -> Result<Vec<Path>, ExprError> {
    let mut checker = Checker::new(cx, "ProjectionExpression", false);
    let paths: Vec<Path> = parsed.iter().map(|p| checker.path(p)).collect();
    checker.overlaps(&paths.iter().collect::<Vec<_>>());
    checker.finish(&PROJECTION_ORDER, paths)
}

/// Checks a parsed UpdateExpression.
pub(crate) fn update(
    parsed: &[(Section, Vec<RawAction<'_>>)],
    cx: &Context<'_>,
) -> Result<Update, ExprError> {
    let mut checker = Checker::new(cx, "UpdateExpression", false);
    let mut seen = Vec::new();
    let mut actions = Vec::new();
    for (section, raw_actions) in parsed {
        if seen.contains(section) {
            checker.record(
                Cat::Section,
                format!(
                    "The \"{}\" section can only be used once in an update expression;",
                    section.keyword()
                ),
            );
        } else {
            seen.push(*section);
        }
        actions.extend(raw_actions.iter().map(|a| checker.action(a)));
    }
    checker.overlaps(&actions.iter().map(Action::path).collect::<Vec<_>>());
    checker.finish(&UPDATE_ORDER, Update::new(actions, false))
}

fn key_error(message: &str) -> ExprError {
    ExprError(message.to_owned())
}

fn invalid_key_operator(operator: &str) -> ExprError {
    ExprError(format!(
        "Invalid operator used in KeyConditionExpression: {operator}"
    ))
}

fn flatten_key_condition(cond: Condition, out: &mut Vec<Condition>) -> Result<(), ExprError> {
    match cond {
        Condition::And(a, b) => {
            flatten_key_condition(*a, out)?;
            flatten_key_condition(*b, out)
        }
        Condition::Or(..) => Err(invalid_key_operator("OR")),
        Condition::Not(..) => Err(invalid_key_operator("NOT")),
        leaf => {
            out.push(leaf);
            Ok(())
        }
    }
}

fn key_name(path: Path) -> Result<String, ExprError> {
    match <[PathElem; 1]>::try_from(path.0) {
        Ok([PathElem::Attr(name)]) => Ok(name),
        _ => Err(key_error(
            "KeyConditionExpressions cannot have conditions on nested attributes",
        )),
    }
}

/// A key condition's constant operand.
fn key_value(operand: Operand) -> Result<Value, ExprError> {
    match operand {
        Operand::Value(v) => Ok(v),
        Operand::Path(_) => Err(key_error(
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        )),
        Operand::Size(_) => Err(key_error(
            "KeyConditionExpressions cannot contain nested operations",
        )),
    }
}

/// A key condition's attribute operand, which must come first.
fn key_subject(operand: Operand, operator: &str) -> Result<String, ExprError> {
    match operand {
        Operand::Path(p) => key_name(p),
        Operand::Size(_) => Err(key_error(
            "KeyConditionExpressions cannot contain nested operations",
        )),
        Operand::Value(_) => Err(ExprError(format!(
            "Invalid condition in KeyConditionExpression: {operator} operator must have the key attribute as its first operand"
        ))),
    }
}

fn key_part(leaf: Condition) -> Result<(String, RangeCondition), ExprError> {
    match leaf {
        Condition::Compare(_, Comparator::Ne, _) => Err(invalid_key_operator("<>")),
        Condition::Compare(left, op, right) => {
            let (path, value, op) = match (left, right) {
                (Operand::Size(_), _) | (_, Operand::Size(_)) => {
                    return Err(key_error(
                        "KeyConditionExpressions cannot contain nested operations",
                    ));
                }
                (Operand::Path(p), Operand::Value(v)) => (p, v, op),
                (Operand::Value(v), Operand::Path(p)) => {
                    let flipped = match op {
                        Comparator::Lt => Comparator::Gt,
                        Comparator::Le => Comparator::Ge,
                        Comparator::Gt => Comparator::Lt,
                        Comparator::Ge => Comparator::Le,
                        other => other,
                    };
                    (p, v, flipped)
                }
                (Operand::Path(_), Operand::Path(_)) => {
                    return Err(key_error(
                        "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
                    ));
                }
                (Operand::Value(_), Operand::Value(_)) => {
                    return Err(key_error(
                        "Invalid condition in KeyConditionExpression: No key attribute specified",
                    ));
                }
            };
            let name = key_name(path)?;
            let range = match op {
                Comparator::Lt => RangeCondition::Lt(value),
                Comparator::Le => RangeCondition::Le(value),
                Comparator::Gt => RangeCondition::Gt(value),
                Comparator::Ge => RangeCondition::Ge(value),
                Comparator::Eq | Comparator::Ne => RangeCondition::Eq(value),
            };
            Ok((name, range))
        }
        Condition::Between(x, low, high) => {
            let name = key_subject(x, "BETWEEN")?;
            Ok((
                name,
                RangeCondition::Between(key_value(low)?, key_value(high)?),
            ))
        }
        Condition::BeginsWith(x, prefix) => {
            let name = key_subject(x, "begins_with")?;
            Ok((name, RangeCondition::BeginsWith(key_value(prefix)?)))
        }
        Condition::In(..) => Err(invalid_key_operator("IN")),
        Condition::AttributeExists(_) => Err(invalid_key_operator("attribute_exists")),
        Condition::AttributeNotExists(_) => Err(invalid_key_operator("attribute_not_exists")),
        Condition::AttributeType(..) => Err(invalid_key_operator("attribute_type")),
        Condition::Contains(..) => Err(invalid_key_operator("contains")),
        Condition::Not(..) => Err(invalid_key_operator("NOT")),
        Condition::And(..) | Condition::Or(..) => Err(invalid_key_operator("OR")),
    }
}

/// Picks the partition key condition (the equality, the first one if both are) and the sort
/// key condition out of one or two conditions on distinct attributes.
pub(crate) fn key_parts(
    mut parts: Vec<(String, RangeCondition)>,
) -> Result<KeyCondition, ExprError> {
    if parts.is_empty() || parts.len() > 2 {
        return Err(key_error("Conditions can be of length 1 or 2 only"));
    }
    let hash_at = parts
        .iter()
        .position(|(_, c)| matches!(c, RangeCondition::Eq(_)))
        .ok_or_else(|| key_error("Query key condition not supported"))?;
    let (hash_name, hash_condition) = parts.remove(hash_at);
    let RangeCondition::Eq(hash_value) = hash_condition else {
        return Err(key_error("Query key condition not supported"));
    };
    Ok(KeyCondition {
        hash: (hash_name, hash_value),
        range: parts.pop(),
    })
}

/// Shapes a checked KeyConditionExpression into its partition and sort key conditions.
pub(crate) fn key_condition(cond: Condition) -> Result<KeyCondition, ExprError> {
    let mut leaves = Vec::new();
    flatten_key_condition(cond, &mut leaves)?;
    let mut parts: Vec<(String, RangeCondition)> = Vec::new();
    for leaf in leaves {
        let (name, range) = key_part(leaf)?;
        if parts.iter().any(|(n, _)| *n == name) {
            return Err(key_error(
                "KeyConditionExpressions must only contain one condition per key",
            ));
        }
        parts.push((name, range));
    }
    key_parts(parts)
}
