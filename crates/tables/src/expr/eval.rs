//! Evaluating checked conditions against items, and projecting items onto paths.
//!
//! A comparison with a missing attribute, or between values of different types, is false rather
//! than an error; only `<>` is true then, since the values are not equal.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{Comparator, Condition, Operand, Path, PathElem};
use crate::value::{Item, Number, Value};

/// The value at `path` in `item`, if there is one.
pub(crate) fn resolve<'v>(item: &'v Item, path: &Path) -> Option<&'v Value> {
    let (PathElem::Attr(first), rest) = path.0.split_first()? else {
        return None;
    };
    let mut current = item.get(first)?;
    for elem in rest {
        current = match (elem, current) {
            (PathElem::Attr(key), Value::M(map)) => map.get(key)?,
            (PathElem::Index(i), Value::L(list)) => list.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// How two values order, if they can: numbers by value, strings and binaries by their bytes.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::N(x), Value::N(y)) => Some(x.cmp(y)),
        (Value::S(x), Value::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::B(x), Value::B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `begins_with`: a string prefix of a string, a binary prefix of a binary.
pub(crate) fn begins_with(value: &Value, prefix: &Value) -> bool {
    match (value, prefix) {
        (Value::S(s), Value::S(p)) => s.starts_with(p.as_str()),
        (Value::B(b), Value::B(p)) => b.starts_with(p),
        _ => false,
    }
}

/// `contains`: a substring (or a run of bytes), a member of a set, an element of a list.
pub(crate) fn contains(container: &Value, element: &Value) -> bool {
    match (container, element) {
        (Value::S(s), Value::S(part)) => s.contains(part.as_str()),
        (Value::B(b), Value::B(part)) => {
            part.is_empty() || b.windows(part.len()).any(|w| w == part.as_slice())
        }
        (Value::Ss(set), Value::S(s)) => set.binary_search(s).is_ok(),
        (Value::Ns(set), Value::N(n)) => set.binary_search(n).is_ok(),
        (Value::Bs(set), Value::B(b)) => set.binary_search(b).is_ok(),
        (Value::L(list), element) => list.contains(element),
        _ => false,
    }
}

/// `size()`; `None` for types that have no size.
fn size(value: &Value) -> Option<Value> {
    let n = match value {
        Value::S(s) => s.encode_utf16().count(),
        Value::B(b) => b.len(),
        Value::Ss(s) => s.len(),
        Value::Ns(s) => s.len(),
        Value::Bs(s) => s.len(),
        Value::L(l) => l.len(),
        Value::M(m) => m.len(),
        Value::N(_) | Value::Bool(_) | Value::Null => return None,
    };
    Number::parse(&n.to_string()).ok().map(Value::N)
}

impl Operand {
    fn eval<'v>(&'v self, item: &'v Item) -> Option<Cow<'v, Value>> {
        match self {
            Self::Path(p) => resolve(item, p).map(Cow::Borrowed),
            Self::Value(v) => Some(Cow::Borrowed(v)),
            Self::Size(p) => resolve(item, p).and_then(size).map(Cow::Owned),
        }
    }
}

fn compare(a: Option<&Value>, op: Comparator, b: Option<&Value>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return op == Comparator::Ne;
    };
    match op {
        Comparator::Eq => a == b,
        Comparator::Ne => a != b,
        Comparator::Lt => order(a, b) == Some(Ordering::Less),
        Comparator::Le => matches!(order(a, b), Some(Ordering::Less | Ordering::Equal)),
        Comparator::Gt => order(a, b) == Some(Ordering::Greater),
        Comparator::Ge => matches!(order(a, b), Some(Ordering::Greater | Ordering::Equal)),
    }
}

impl Condition {
    /// The top-level attribute names the condition reads.
    pub fn attributes(&self) -> Vec<String> {
        fn operand(o: &Operand, out: &mut Vec<String>) {
            if let Operand::Path(p) | Operand::Size(p) = o
                && let Some(top) = p.top()
            {
                out.push(top.to_owned());
            }
        }
        fn walk(c: &Condition, out: &mut Vec<String>) {
            match c {
                Condition::Compare(a, _, b)
                | Condition::BeginsWith(a, b)
                | Condition::Contains(a, b) => {
                    operand(a, out);
                    operand(b, out);
                }
                Condition::Between(a, b, c) => {
                    for o in [a, b, c] {
                        operand(o, out);
                    }
                }
                Condition::In(a, list) => {
                    operand(a, out);
                    for o in list {
                        operand(o, out);
                    }
                }
                Condition::AttributeExists(p)
                | Condition::AttributeNotExists(p)
                | Condition::AttributeType(p, _) => {
                    if let Some(top) = p.top() {
                        out.push(top.to_owned());
                    }
                }
                Condition::Not(c) => walk(c, out),
                Condition::And(a, b) | Condition::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Whether `item` satisfies the condition. Evaluation never fails: a missing attribute or
    /// a type mismatch makes a comparison false.
    pub fn eval(&self, item: &Item) -> bool {
        match self {
            Self::Compare(a, op, b) => {
                compare(a.eval(item).as_deref(), *op, b.eval(item).as_deref())
            }
            Self::Between(x, low, high) => {
                let (Some(x), Some(low), Some(high)) =
                    (x.eval(item), low.eval(item), high.eval(item))
                else {
                    return false;
                };
                matches!(order(&x, &low), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(order(&x, &high), Some(Ordering::Less | Ordering::Equal))
            }
            Self::In(x, list) => x
                .eval(item)
                .is_some_and(|x| list.iter().any(|o| o.eval(item).as_deref() == Some(&*x))),
            Self::AttributeExists(p) => resolve(item, p).is_some(),
            Self::AttributeNotExists(p) => resolve(item, p).is_none(),
            Self::AttributeType(p, t) => resolve(item, p).is_some_and(|v| v.type_name() == t),
            Self::BeginsWith(a, b) => match (a.eval(item), b.eval(item)) {
                (Some(a), Some(b)) => begins_with(&a, &b),
                _ => false,
            },
            Self::Contains(a, b) => match (a.eval(item), b.eval(item)) {
                (Some(a), Some(b)) => contains(&a, &b),
                _ => false,
            },
            Self::Not(c) => !c.eval(item),
            Self::And(a, b) => a.eval(item) && b.eval(item),
            Self::Or(a, b) => a.eval(item) || b.eval(item),
        }
    }
}

/// What to keep of a value.
enum Pick {
    /// The whole value.
    All,
    /// Some keys of a map.
    Keys(BTreeMap<String, Pick>),
    /// Some elements of a list.
    Elements(BTreeMap<usize, Pick>),
}

impl Pick {
    fn new(rest: &[PathElem]) -> Self {
        match rest.split_first() {
            None => Self::All,
            Some((PathElem::Attr(key), tail)) => {
                Self::Keys(BTreeMap::from([(key.clone(), Self::new(tail))]))
            }
            Some((PathElem::Index(i), tail)) => {
                Self::Elements(BTreeMap::from([(*i, Self::new(tail))]))
            }
        }
    }

    fn add(&mut self, rest: &[PathElem]) {
        let Some((first, tail)) = rest.split_first() else {
            *self = Self::All;
            return;
        };
        match (self, first) {
            (Self::Keys(keys), PathElem::Attr(key)) => match keys.get_mut(key) {
                Some(pick) => pick.add(tail),
                None => {
                    keys.insert(key.clone(), Self::new(tail));
                }
            },
            (Self::Elements(elements), PathElem::Index(i)) => match elements.get_mut(i) {
                Some(pick) => pick.add(tail),
                None => {
                    elements.insert(*i, Self::new(tail));
                }
            },
            // The whole value is kept already, or the paths conflict (which the parser
            // rejects); either way there is nothing to add.
            _ => {}
        }
    }

    /// The kept part of `value`; `None` when nothing of it is kept.
    fn apply(&self, value: &Value) -> Option<Value> {
        match (self, value) {
            (Self::All, v) => Some(v.clone()),
            (Self::Keys(keys), Value::M(map)) => {
                let kept: BTreeMap<String, Value> = keys
                    .iter()
                    .filter_map(|(k, pick)| Some((k.clone(), pick.apply(map.get(k)?)?)))
                    .collect();
                (!kept.is_empty()).then_some(Value::M(kept))
            }
            (Self::Elements(elements), Value::L(list)) => {
                let kept: Vec<Value> = elements
                    .iter()
                    .filter_map(|(i, pick)| pick.apply(list.get(*i)?))
                    .collect();
                (!kept.is_empty()).then_some(Value::L(kept))
            }
            _ => None,
        }
    }
}

/// The parts of `item` that `paths` select, as DynamoDB returns them for a
/// ProjectionExpression: nested maps keep only the selected keys, lists only the selected
/// elements (in index order, without gaps), and a path that selects nothing adds nothing.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut picks: BTreeMap<&str, Pick> = BTreeMap::new();
    for path in paths {
        let Some((PathElem::Attr(name), rest)) = path.0.split_first() else {
            continue;
        };
        match picks.get_mut(name.as_str()) {
            Some(pick) => pick.add(rest),
            None => {
                picks.insert(name, Pick::new(rest));
            }
        }
    }
    picks
        .into_iter()
        .filter_map(|(name, pick)| Some((name.to_owned(), pick.apply(item.get(name)?)?)))
        .collect()
}
