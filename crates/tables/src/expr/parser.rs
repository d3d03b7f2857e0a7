//! The grammars of the expressions, producing raw trees in which names and placeholders are
//! still text. Only syntax is checked here; `check` resolves placeholders and applies
//! DynamoDB's other rules, once the whole text has parsed.
//!
//! Where the grammar is ambiguous (a `(` may open a condition or an operand) the parser tries
//! one reading and falls back to the other. A syntax error is reported at the furthest token
//! any reading reached, which is where the text stopped making sense.

use super::Comparator;
use super::lexer::{Kind, Token, lex};

/// A path element as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawElem<'t> {
    /// A bare attribute name.
    Bare(&'t str),
    /// An expression attribute name, `#n`.
    Placeholder(&'t str),
    /// A list index.
    Index(usize),
}

/// `+` or `-` in a SET action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Plus,
    Minus,
}

impl ArithOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Plus => "+",
            Self::Minus => "-",
        }
    }
}

/// An operand as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawOperand<'t> {
    Path(Vec<RawElem<'t>>),
    /// An expression attribute value, `:v`.
    Value(&'t str),
    /// A function call: the name as written and its arguments.
    Call(&'t str, Vec<RawOperand<'t>>),
    /// `a + b` or `a - b`, only in a SET action.
    Arith(Box<RawOperand<'t>>, ArithOp, Box<RawOperand<'t>>),
}

/// A condition as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawCond<'t> {
    Compare(Comparator, RawOperand<'t>, RawOperand<'t>),
    Between(RawOperand<'t>, RawOperand<'t>, RawOperand<'t>),
    In(RawOperand<'t>, Vec<RawOperand<'t>>),
    /// A function call in the place of a condition.
    Call(&'t str, Vec<RawOperand<'t>>),
    Not(Box<RawCond<'t>>),
    And(Box<RawCond<'t>>, Box<RawCond<'t>>),
    Or(Box<RawCond<'t>>, Box<RawCond<'t>>),
}

/// The clauses of an update expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Set,
    Remove,
    Add,
    Delete,
}

impl Section {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Self::Set => "SET",
            Self::Remove => "REMOVE",
            Self::Add => "ADD",
            Self::Delete => "DELETE",
        }
    }
}

/// One action of an update expression as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawAction<'t> {
    Set(Vec<RawElem<'t>>, RawOperand<'t>),
    Remove(Vec<RawElem<'t>>),
    Add(Vec<RawElem<'t>>, &'t str),
    Delete(Vec<RawElem<'t>>, &'t str),
}

/// The words that end a path or an operand in each grammar.
const CONDITION_KEYWORDS: [&str; 5] = ["AND", "OR", "NOT", "BETWEEN", "IN"];
const UPDATE_KEYWORDS: [&str; 4] = ["SET", "REMOVE", "ADD", "DELETE"];

/// A reading that did not work; where it stopped is in `Parser::furthest`.
struct Fail;

type Parsed<T> = Result<T, Fail>;

/// The tokens of one expression and a position in them.
pub(crate) struct Parser<'t> {
    text: &'t str,
    toks: Vec<Token<'t>>,
    pos: usize,
    furthest: usize,
    keywords: &'static [&'static str],
}

fn is_keyword(tok: &Token<'_>, word: &str) -> bool {
    tok.kind == Kind::Ident && tok.text.eq_ignore_ascii_case(word)
}

fn is_punct(tok: &Token<'_>, p: &str) -> bool {
    tok.kind == Kind::Punct && tok.text == p
}

impl<'t> Parser<'t> {
    fn new(text: &'t str, keywords: &'static [&'static str]) -> Self {
        Self {
            text,
            toks: lex(text),
            pos: 0,
            furthest: 0,
            keywords,
        }
    }

    /// The syntax error DynamoDB would give, without the `Invalid …:` prefix, if the text has
    /// a character no token starts with. DynamoDB's lexer rejects those before parsing.
    fn unknown_character(&mut self) -> Option<String> {
        let at = self.toks.iter().position(|t| t.kind == Kind::Unknown)?;
        self.furthest = at;
        Some(self.syntax_error())
    }

    fn peek(&self) -> Token<'t> {
        self.toks[self.pos]
    }

    fn peek_at(&self, ahead: usize) -> Token<'t> {
        let last = self.toks.len() - 1;
        self.toks[(self.pos + ahead).min(last)]
    }

    fn bump(&mut self) -> Token<'t> {
        let tok = self.peek();
        if tok.kind != Kind::Eof {
            self.pos += 1;
        }
        tok
    }

    fn fail<T>(&mut self) -> Parsed<T> {
        self.furthest = self.furthest.max(self.pos);
        Err(Fail)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if is_punct(&self.peek(), p) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Parsed<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            self.fail()
        }
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if is_keyword(&self.peek(), word) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_eof(&mut self) -> Parsed<()> {
        if self.peek().kind == Kind::Eof {
            Ok(())
        } else {
            self.fail()
        }
    }

    fn is_grammar_keyword(&self, tok: &Token<'_>) -> bool {
        self.keywords.iter().any(|k| is_keyword(tok, k))
    }

    /// `Syntax error; token: "<tok>", near: "<text>"` for the furthest token reached; the
    /// text runs from the token before it to the token after it.
    fn syntax_error(&self) -> String {
        let last = self.toks.len() - 1;
        let at = self.furthest.min(last);
        let tok = self.toks[at];
        let prev = at.checked_sub(1).map(|i| self.toks[i]);
        let (shown, from, to) = if tok.kind == Kind::Eof {
            let (from, to) = prev.map_or((tok.start, tok.end), |p| (p.start, p.end));
            ("<EOF>", from, to)
        } else {
            let next = self.toks[(at + 1).min(last)];
            let to = if next.kind == Kind::Eof {
                tok.end
            } else {
                next.end
            };
            (tok.text, prev.map_or(tok.start, |p| p.start), to)
        };
        format!(
            "Syntax error; token: \"{shown}\", near: \"{}\"",
            &self.text[from..to]
        )
    }

    fn name(&mut self) -> Parsed<RawElem<'t>> {
        let tok = self.peek();
        match tok.kind {
            Kind::Ident if !self.is_grammar_keyword(&tok) => {
                self.bump();
                Ok(RawElem::Bare(tok.text))
            }
            Kind::Name => {
                self.bump();
                Ok(RawElem::Placeholder(tok.text))
            }
            _ => self.fail(),
        }
    }

    /// `name ( . name | [ digits ] )*`
    fn path(&mut self) -> Parsed<Vec<RawElem<'t>>> {
        let mut elems = vec![self.name()?];
        loop {
            if self.eat_punct(".") {
                elems.push(self.name()?);
            } else if self.eat_punct("[") {
                let tok = self.peek();
                let index = match tok.kind {
                    Kind::Number => tok.text.parse::<usize>().ok(),
                    _ => None,
                };
                let Some(index) = index else {
                    return self.fail();
                };
                self.bump();
                self.expect_punct("]")?;
                elems.push(RawElem::Index(index));
            } else {
                return Ok(elems);
            }
        }
    }

    /// A path, a `:value` or a function call.
    fn operand(&mut self) -> Parsed<RawOperand<'t>> {
        let tok = self.peek();
        match tok.kind {
            Kind::Value => {
                self.bump();
                Ok(RawOperand::Value(tok.text))
            }
            Kind::Ident if !self.is_grammar_keyword(&tok) && is_punct(&self.peek_at(1), "(") => {
                self.bump();
                self.bump();
                let mut args = vec![self.operand_in_parens()?];
                while self.eat_punct(",") {
                    args.push(self.operand_in_parens()?);
                }
                self.expect_punct(")")?;
                Ok(RawOperand::Call(tok.text, args))
            }
            _ => Ok(RawOperand::Path(self.path()?)),
        }
    }

    /// An operand, possibly inside parentheses.
    fn operand_in_parens(&mut self) -> Parsed<RawOperand<'t>> {
        if self.eat_punct("(") {
            let inner = self.operand_in_parens()?;
            self.expect_punct(")")?;
            Ok(inner)
        } else {
            self.operand()
        }
    }

    fn condition_or(&mut self) -> Parsed<RawCond<'t>> {
        let mut left = self.condition_and()?;
        while self.eat_keyword("OR") {
            let right = self.condition_and()?;
            left = RawCond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn condition_and(&mut self) -> Parsed<RawCond<'t>> {
        let mut left = self.condition_not()?;
        while self.eat_keyword("AND") {
            let right = self.condition_not()?;
            left = RawCond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn condition_not(&mut self) -> Parsed<RawCond<'t>> {
        if self.eat_keyword("NOT") {
            Ok(RawCond::Not(Box::new(self.condition_not()?)))
        } else {
            self.condition_primary()
        }
    }

    /// A comparison or a function call, else a parenthesized condition. The comparison is
    /// tried first so that `(size(a)) > :v` reads as a comparison of a parenthesized operand.
    fn condition_primary(&mut self) -> Parsed<RawCond<'t>> {
        let start = self.pos;
        if let Ok(cond) = self.comparison() {
            return Ok(cond);
        }
        self.pos = start;
        if self.eat_punct("(") {
            let inner = self.condition_or()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        self.fail()
    }

    fn comparison(&mut self) -> Parsed<RawCond<'t>> {
        let left = self.operand_in_parens()?;
        let tok = self.peek();
        let comparator = match (tok.kind, tok.text) {
            (Kind::Punct, "=") => Some(Comparator::Eq),
            (Kind::Punct, "<>") => Some(Comparator::Ne),
            (Kind::Punct, "<") => Some(Comparator::Lt),
            (Kind::Punct, "<=") => Some(Comparator::Le),
            (Kind::Punct, ">") => Some(Comparator::Gt),
            (Kind::Punct, ">=") => Some(Comparator::Ge),
            _ => None,
        };
        if let Some(comparator) = comparator {
            self.bump();
            let right = self.operand_in_parens()?;
            return Ok(RawCond::Compare(comparator, left, right));
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.operand_in_parens()?;
            if !self.eat_keyword("AND") {
                return self.fail();
            }
            let high = self.operand_in_parens()?;
            return Ok(RawCond::Between(left, low, high));
        }
        if self.eat_keyword("IN") {
            self.expect_punct("(")?;
            let mut list = vec![self.operand_in_parens()?];
            while self.eat_punct(",") {
                list.push(self.operand_in_parens()?);
            }
            self.expect_punct(")")?;
            return Ok(RawCond::In(left, list));
        }
        match left {
            RawOperand::Call(name, args) => Ok(RawCond::Call(name, args)),
            _ => self.fail(),
        }
    }

    /// Whether a pair of parentheses only wraps another pair, as in `((a = :v))`. Parentheses
    /// of a function call or of an IN list do not count: their content is an argument list.
    fn has_redundant_parentheses(&self) -> bool {
        let mut stack = Vec::new();
        let mut partner = vec![None; self.toks.len()];
        for (i, tok) in self.toks.iter().enumerate() {
            if is_punct(tok, "(") {
                stack.push(i);
            } else if is_punct(tok, ")") {
                let Some(open) = stack.pop() else {
                    return false;
                };
                partner[open] = Some(i);
            }
        }
        let opens_list = |i: usize| {
            i.checked_sub(1).is_some_and(|p| {
                let before = &self.toks[p];
                before.kind == Kind::Ident
                    && !["AND", "OR", "NOT", "BETWEEN"]
                        .iter()
                        .any(|k| is_keyword(before, k))
            })
        };
        (0..self.toks.len()).any(|i| match partner[i] {
            Some(close) if !opens_list(i) && is_punct(&self.toks[i + 1], "(") => {
                partner[i + 1] == Some(close - 1)
            }
            _ => false,
        })
    }

    fn set_value(&mut self) -> Parsed<RawOperand<'t>> {
        // `SET a = (b + c)`: parentheses around the whole value.
        if is_punct(&self.peek(), "(") {
            let start = self.pos;
            self.bump();
            if let Ok(value) = self.arithmetic()
                && self.eat_punct(")")
                && self.at_action_end()
            {
                return Ok(value);
            }
            self.pos = start;
        }
        self.arithmetic()
    }

    fn at_action_end(&self) -> bool {
        let tok = self.peek();
        tok.kind == Kind::Eof || is_punct(&tok, ",") || self.is_grammar_keyword(&tok)
    }

    fn arithmetic(&mut self) -> Parsed<RawOperand<'t>> {
        let left = self.operand_in_parens()?;
        let op = if self.eat_punct("+") {
            ArithOp::Plus
        } else if self.eat_punct("-") {
            ArithOp::Minus
        } else {
            return Ok(left);
        };
        let right = self.operand_in_parens()?;
        Ok(RawOperand::Arith(Box::new(left), op, Box::new(right)))
    }

    fn value_placeholder(&mut self) -> Parsed<&'t str> {
        let tok = self.peek();
        if tok.kind == Kind::Value {
            self.bump();
            Ok(tok.text)
        } else {
            self.fail()
        }
    }

    fn action(&mut self, section: Section) -> Parsed<RawAction<'t>> {
        let path = self.path()?;
        Ok(match section {
            Section::Set => {
                self.expect_punct("=")?;
                RawAction::Set(path, self.set_value()?)
            }
            Section::Remove => RawAction::Remove(path),
            Section::Add => RawAction::Add(path, self.value_placeholder()?),
            Section::Delete => RawAction::Delete(path, self.value_placeholder()?),
        })
    }

    fn update(&mut self) -> Parsed<Vec<(Section, Vec<RawAction<'t>>)>> {
        let mut sections = Vec::new();
        loop {
            let tok = self.peek();
            let Some(section) = [Section::Set, Section::Remove, Section::Add, Section::Delete]
                .into_iter()
                .find(|s| is_keyword(&tok, s.keyword()))
            else {
                break;
            };
            self.bump();
            let mut actions = vec![self.action(section)?];
            while self.eat_punct(",") {
                actions.push(self.action(section)?);
            }
            sections.push((section, actions));
        }
        if sections.is_empty() {
            return self.fail();
        }
        self.expect_eof()?;
        Ok(sections)
    }
}

/// A parsed condition, and whether it had a pair of redundant parentheses (which DynamoDB
/// rejects, but only after a syntax check of the whole text).
pub(crate) struct ParsedCondition<'t> {
    pub cond: RawCond<'t>,
    pub redundant_parentheses: bool,
}

/// Parses a condition (ConditionExpression, FilterExpression, KeyConditionExpression). The
/// error is the syntax error without the `Invalid …:` prefix.
pub(crate) fn condition(text: &str) -> Result<ParsedCondition<'_>, String> {
    let mut p = Parser::new(text, &CONDITION_KEYWORDS);
    if let Some(err) = p.unknown_character() {
        return Err(err);
    }
    let parsed = p.condition_or().and_then(|cond| {
        p.expect_eof()?;
        Ok(cond)
    });
    match parsed {
        Ok(cond) => Ok(ParsedCondition {
            cond,
            redundant_parentheses: p.has_redundant_parentheses(),
        }),
        Err(Fail) => Err(p.syntax_error()),
    }
}

/// Parses a ProjectionExpression: paths separated by commas.
pub(crate) fn projection(text: &str) -> Result<Vec<Vec<RawElem<'_>>>, String> {
    let mut p = Parser::new(text, &[]);
    if let Some(err) = p.unknown_character() {
        return Err(err);
    }
    let parsed = (|| {
        let mut paths = vec![p.path()?];
        while p.eat_punct(",") {
            paths.push(p.path()?);
        }
        p.expect_eof()?;
        Ok(paths)
    })();
    parsed.map_err(|Fail| p.syntax_error())
}

/// Parses an UpdateExpression into its sections, in the order written.
pub(crate) fn update(text: &str) -> Result<Vec<(Section, Vec<RawAction<'_>>)>, String> {
    let mut p = Parser::new(text, &UPDATE_KEYWORDS);
    if let Some(err) = p.unknown_character() {
        return Err(err);
    }
    p.update().map_err(|Fail| p.syntax_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(names: &[&'static str]) -> RawOperand<'static> {
        RawOperand::Path(names.iter().map(|n| RawElem::Bare(n)).collect())
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        let parsed = condition("NOT a = :a AND b = :b OR c = :c").unwrap().cond;
        let cmp = |n, v| RawCond::Compare(Comparator::Eq, path(&[n]), RawOperand::Value(v));
        assert_eq!(
            parsed,
            RawCond::Or(
                Box::new(RawCond::And(
                    Box::new(RawCond::Not(Box::new(cmp("a", ":a")))),
                    Box::new(cmp("b", ":b")),
                )),
                Box::new(cmp("c", ":c")),
            )
        );
    }

    #[test]
    fn parentheses_group_conditions_and_operands() {
        let parsed = condition("(size(a)) > :v AND (b = :v OR (c) = :v)").unwrap();
        assert!(!parsed.redundant_parentheses);
        let RawCond::And(left, right) = parsed.cond else {
            panic!("expected AND");
        };
        assert!(matches!(
            *left,
            RawCond::Compare(Comparator::Gt, RawOperand::Call("size", _), _)
        ));
        assert!(matches!(*right, RawCond::Or(..)));
    }

    #[test]
    fn redundant_parentheses_are_noticed_but_call_parentheses_are_not() {
        assert!(condition("((a = :v))").unwrap().redundant_parentheses);
        assert!(condition("NOT ((a = :v))").unwrap().redundant_parentheses);
        assert!(condition("((a)) = :v").unwrap().redundant_parentheses);
        assert!(
            !condition("((a = :v) AND (b = :v))")
                .unwrap()
                .redundant_parentheses
        );
        assert!(!condition("size((a)) = :v").unwrap().redundant_parentheses);
        assert!(!condition("a IN ((:v), :w)").unwrap().redundant_parentheses);
    }

    #[test]
    fn nested_paths_and_indexes() {
        let parsed = projection("a.#b[2][10].c, d").unwrap();
        assert_eq!(
            parsed[0],
            vec![
                RawElem::Bare("a"),
                RawElem::Placeholder("#b"),
                RawElem::Index(2),
                RawElem::Index(10),
                RawElem::Bare("c"),
            ]
        );
        assert_eq!(parsed[1], vec![RawElem::Bare("d")]);
    }

    #[test]
    fn syntax_errors_name_the_token_and_its_neighbours() {
        let err = |t| condition(t).err().unwrap();
        assert_eq!(
            err("a = = :v"),
            r#"Syntax error; token: "=", near: "= = :v""#
        );
        assert_eq!(err("a"), r#"Syntax error; token: "<EOF>", near: "a""#);
        assert_eq!(
            err("a = :v AND"),
            r#"Syntax error; token: "<EOF>", near: "AND""#
        );
        assert_eq!(err("a = :v b"), r#"Syntax error; token: "b", near: ":v b""#);
        assert_eq!(
            err("_hidden = :v"),
            r#"Syntax error; token: "_", near: "_hidden""#
        );
        assert_eq!(err("a[x] = :v"), r#"Syntax error; token: "x", near: "[x]""#);
        assert_eq!(err("a != :v"), r#"Syntax error; token: "!", near: "a !=""#);
        assert_eq!(
            err("(a = :v"),
            r#"Syntax error; token: "<EOF>", near: ":v""#
        );
        assert_eq!(
            projection("!!").err().unwrap(),
            r#"Syntax error; token: "!", near: "!!""#
        );
        assert_eq!(
            update("SET a = :v,").err().unwrap(),
            r#"Syntax error; token: "<EOF>", near: ",""#
        );
        assert_eq!(
            update("whatever").err().unwrap(),
            r#"Syntax error; token: "whatever", near: "whatever""#
        );
    }

    #[test]
    fn update_grammar() {
        for ok in [
            "SET a = :v",
            "set a = b + :v, c = (d - e), f = (g) + (h)",
            "SET a = if_not_exists(a, :v) REMOVE b, c[1] ADD d :n DELETE e :s",
            "remove a set b = list_append(b, :l)",
        ] {
            assert!(update(ok).is_ok(), "{ok}");
        }
        for bad in [
            "set a",
            "add a",
            "delete a b",
            "remove a = b",
            "set a b",
            "set :a = b",
            "set a = b / c",
            "set a = b + c + d",
            "set a[1] = 1",
            "set (a = (b + c))",
            "set a = (b.c).d + e",
            "SET if_not_exists(a, b) = a",
            "SET a = :v,",
            "SET",
        ] {
            assert!(update(bad).is_err(), "{bad}");
        }
    }
}
