//! Checked update actions (from an UpdateExpression or from legacy AttributeUpdates) and
//! their application to an item.

use super::eval::resolve;
use super::{ExprError, Path, PathElem};
use crate::value::{Item, Value};

/// One action of an update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Set(Path, SetValue),
    Remove(Path),
    /// Adds a number, or adds elements to a set (or, from AttributeUpdates, to a list).
    Add(Path, Value),
    /// Removes elements from a set.
    Delete(Path, Value),
}

impl Action {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Set(p, _) | Self::Remove(p) | Self::Add(p, _) | Self::Delete(p, _) => p,
        }
    }
}

/// The right-hand side of a SET action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SetValue {
    Operand(UpdateOperand),
    Plus(UpdateOperand, UpdateOperand),
    Minus(UpdateOperand, UpdateOperand),
}

/// An operand of a SET action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UpdateOperand {
    Path(Path),
    Value(Value),
    /// `if_not_exists(path, fallback)`
    IfNotExists(Path, Box<UpdateOperand>),
    /// `list_append(a, b)`
    ListAppend(Box<UpdateOperand>, Box<UpdateOperand>),
}

/// A checked update, ready to apply to items.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    actions: Vec<Action>,
    /// Whether it came from AttributeUpdates, whose type errors DynamoDB words differently.
    legacy: bool,
}

fn invalid_path() -> ExprError {
    ExprError("The document path provided in the update expression is invalid for update".into())
}

fn missing_attribute() -> ExprError {
    ExprError(
        "The provided expression refers to an attribute that does not exist in the item".into(),
    )
}

/// The container that holds the last step of `path` (which has at least two steps).
fn parent_mut<'v>(item: &'v mut Item, path: &Path) -> Result<&'v mut Value, ExprError> {
    let Some((PathElem::Attr(first), middle)) =
        path.0.split_last().and_then(|(_, init)| init.split_first())
    else {
        return Err(invalid_path());
    };
    let mut current = item.get_mut(first).ok_or_else(invalid_path)?;
    for elem in middle {
        current = match (elem, current) {
            (PathElem::Attr(key), Value::M(map)) => map.get_mut(key),
            (PathElem::Index(i), Value::L(list)) => list.get_mut(*i),
            _ => None,
        }
        .ok_or_else(invalid_path)?;
    }
    Ok(current)
}

/// Whether the path's parent exists and can hold its last step: a map for a name, a list for
/// an index. A top-level attribute always can.
fn check_parent(item: &Item, path: &Path) -> Result<(), ExprError> {
    let Some((last, init)) = path.0.split_last() else {
        return Err(invalid_path());
    };
    if init.is_empty() {
        return Ok(());
    }
    match (last, resolve(item, &Path(init.to_vec()))) {
        (PathElem::Attr(_), Some(Value::M(_))) | (PathElem::Index(_), Some(Value::L(_))) => Ok(()),
        _ => Err(invalid_path()),
    }
}

fn set_at(item: &mut Item, path: &Path, value: Value) -> Result<(), ExprError> {
    match path.0.as_slice() {
        [PathElem::Attr(name)] => {
            item.insert(name.clone(), value);
            return Ok(());
        }
        [] | [PathElem::Index(_)] => return Err(invalid_path()),
        _ => {}
    }
    let parent = parent_mut(item, path)?;
    match (path.0.last(), parent) {
        (Some(PathElem::Attr(key)), Value::M(map)) => {
            map.insert(key.clone(), value);
        }
        (Some(PathElem::Index(i)), Value::L(list)) => match list.get_mut(*i) {
            Some(slot) => *slot = value,
            // Setting past the end appends.
            None => list.push(value),
        },
        _ => return Err(invalid_path()),
    }
    Ok(())
}

fn remove_at(item: &mut Item, path: &Path) -> Result<(), ExprError> {
    match path.0.as_slice() {
        [PathElem::Attr(name)] => {
            item.remove(name);
            return Ok(());
        }
        [] | [PathElem::Index(_)] => return Err(invalid_path()),
        _ => {}
    }
    let parent = parent_mut(item, path)?;
    match (path.0.last(), parent) {
        (Some(PathElem::Attr(key)), Value::M(map)) => {
            map.remove(key);
        }
        (Some(PathElem::Index(i)), Value::L(list)) => {
            if *i < list.len() {
                list.remove(*i);
            }
        }
        _ => return Err(invalid_path()),
    }
    Ok(())
}

/// The union of two sorted, duplicate-free sets.
fn union<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out: Vec<T> = a.iter().chain(b).cloned().collect();
    out.sort();
    out.dedup();
    out
}

fn difference<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter()
        .filter(|x| b.binary_search(x).is_err())
        .cloned()
        .collect()
}

impl Update {
    pub(crate) fn new(actions: Vec<Action>, legacy: bool) -> Self {
        Self { actions, legacy }
    }

    fn type_error(&self) -> ExprError {
        ExprError(if self.legacy {
            "Type mismatch for attribute to update".into()
        } else {
            "An operand in the update expression has an incorrect data type".into()
        })
    }

    /// Applies the update to `item` in place, all of it or, on error, none of it. Every SET
    /// value is computed from the item as it was before the update; list elements named by
    /// REMOVE are removed after the other actions, from the highest index down, so indexes
    /// refer to the list as it was. Errors are DynamoDB's.
    pub fn apply(&self, item: &mut Item) -> Result<(), ExprError> {
        let mut updated = item.clone();
        self.apply_to(&mut updated)?;
        *item = updated;
        Ok(())
    }

    fn apply_to(&self, item: &mut Item) -> Result<(), ExprError> {
        let mut computed = Vec::new();
        for action in &self.actions {
            if let Action::Set(path, value) = action {
                computed.push((path, self.set_value(item, value)?));
            }
        }
        for (path, value) in computed {
            set_at(item, path, value)?;
        }
        for action in &self.actions {
            match action {
                Action::Add(path, value) => self.add(item, path, value)?,
                Action::Delete(path, value) => self.delete(item, path, value)?,
                Action::Set(..) | Action::Remove(_) => {}
            }
        }
        let mut removed: Vec<&Path> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove(p) => Some(p),
                _ => None,
            })
            .collect();
        removed.sort_by(|a, b| b.cmp(a));
        for path in removed {
            remove_at(item, path)?;
        }
        Ok(())
    }

    /// The top-level attributes the update touches, each once, in the order of the actions
    /// (what ReturnValues UPDATED_OLD and UPDATED_NEW return).
    pub fn touched(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for action in &self.actions {
            if let Some(top) = action.path().top()
                && !names.iter().any(|n| n == top)
            {
                names.push(top.to_owned());
            }
        }
        names
    }

    fn operand(&self, item: &Item, operand: &UpdateOperand) -> Result<Value, ExprError> {
        match operand {
            UpdateOperand::Path(p) => resolve(item, p).cloned().ok_or_else(missing_attribute),
            UpdateOperand::Value(v) => Ok(v.clone()),
            UpdateOperand::IfNotExists(p, fallback) => match resolve(item, p) {
                Some(v) => Ok(v.clone()),
                None => self.operand(item, fallback),
            },
            UpdateOperand::ListAppend(a, b) => {
                match (self.operand(item, a)?, self.operand(item, b)?) {
                    (Value::L(mut a), Value::L(b)) => {
                        a.extend(b);
                        Ok(Value::L(a))
                    }
                    _ => Err(self.type_error()),
                }
            }
        }
    }

    fn set_value(&self, item: &Item, value: &SetValue) -> Result<Value, ExprError> {
        let (a, b, negate) = match value {
            SetValue::Operand(o) => return self.operand(item, o),
            SetValue::Plus(a, b) => (a, b, false),
            SetValue::Minus(a, b) => (a, b, true),
        };
        match (self.operand(item, a)?, self.operand(item, b)?) {
            (Value::N(x), Value::N(y)) => {
                let y = if negate { y.negate() } else { y };
                x.add(&y).map(Value::N).map_err(|e| ExprError(e.0))
            }
            _ => Err(self.type_error()),
        }
    }

    fn add(&self, item: &mut Item, path: &Path, value: &Value) -> Result<(), ExprError> {
        check_parent(item, path)?;
        let sum = match (resolve(item, path), value) {
            (None, v) => v.clone(),
            (Some(Value::N(x)), Value::N(y)) => Value::N(x.add(y).map_err(|e| ExprError(e.0))?),
            (Some(Value::Ss(x)), Value::Ss(y)) => Value::Ss(union(x, y)),
            (Some(Value::Ns(x)), Value::Ns(y)) => Value::Ns(union(x, y)),
            (Some(Value::Bs(x)), Value::Bs(y)) => Value::Bs(union(x, y)),
            (Some(Value::L(x)), Value::L(y)) => Value::L(x.iter().chain(y).cloned().collect()),
            _ => return Err(self.type_error()),
        };
        set_at(item, path, sum)
    }

    fn delete(&self, item: &mut Item, path: &Path, value: &Value) -> Result<(), ExprError> {
        check_parent(item, path)?;
        let rest = match (resolve(item, path), value) {
            (None, _) => return Ok(()),
            (Some(Value::Ss(x)), Value::Ss(y)) => Some(difference(x, y))
                .filter(|s| !s.is_empty())
                .map(Value::Ss),
            (Some(Value::Ns(x)), Value::Ns(y)) => Some(difference(x, y))
                .filter(|s| !s.is_empty())
                .map(Value::Ns),
            (Some(Value::Bs(x)), Value::Bs(y)) => Some(difference(x, y))
                .filter(|s| !s.is_empty())
                .map(Value::Bs),
            _ => return Err(self.type_error()),
        };
        match rest {
            Some(rest) => set_at(item, path, rest),
            // A set is never empty: removing its last element removes the attribute.
            None => remove_at(item, path),
        }
    }
}
