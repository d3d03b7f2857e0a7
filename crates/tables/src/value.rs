//! DynamoDB's values: the ten attribute types, numbers as exact decimals of up to 38
//! significant digits, items, their sizes, their wire form (`{"S": "…"}`, …) and the
//! order-preserving bytes a key attribute is stored under.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

/// An item: attribute names to values.
pub type Item = BTreeMap<String, Value>;

/// The largest item, in DynamoDB's own accounting of names and values.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Significant digits a number keeps.
pub const MAX_DIGITS: usize = 38;

/// A value that does not follow DynamoDB's rules, with DynamoDB's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A number: `0.d₁d₂…dₙ × 10^exponent`, digits without leading or trailing zeros (none at all
/// for zero), so that equal numbers have one form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    digits: Vec<u8>,
    exponent: i32,
}

impl Number {
    pub fn zero() -> Self {
        Self {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Parses a number as DynamoDB accepts it: an optional sign, digits with an optional
    /// point, an optional exponent.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bad = || invalid("A value provided cannot be converted into a number");
        let s = text.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let exp: i64 = match exp {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 6
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                e.parse().map_err(|_| bad())?
            }
        };
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let Some(first) = all.iter().position(|&d| d != 0) else {
            return Ok(Self::zero());
        };
        let last = all.iter().rposition(|&d| d != 0).unwrap_or(first);
        let digits = all[first..=last].to_vec();
        // The point sits after `int.len()` digits of `all`.
        let exponent = int.len() as i64 - first as i64 + exp;
        Self::build(negative, digits, exponent)
    }

    fn build(negative: bool, digits: Vec<u8>, exponent: i64) -> Result<Self, Invalid> {
        if digits.is_empty() {
            return Ok(Self::zero());
        }
        if digits.len() > MAX_DIGITS {
            return Err(invalid(
                "Attempting to store more than 38 significant digits in a Number",
            ));
        }
        // DynamoDB's range: 1E-130 to 9.9…9E+125 in magnitude.
        if exponent > 126 {
            return Err(invalid(
                "Number overflow. Attempting to store a number with magnitude larger than supported range",
            ));
        }
        if exponent < -129 {
            return Err(invalid(
                "Number underflow. Attempting to store a number with magnitude smaller than supported range",
            ));
        }
        Ok(Self {
            negative,
            digits,
            exponent: exponent as i32,
        })
    }

    /// The sum, exact.
    pub fn add(&self, other: &Self) -> Result<Self, Invalid> {
        if self.is_zero() {
            return Ok(other.clone());
        }
        if other.is_zero() {
            return Ok(self.clone());
        }
        // Align both on the smaller unit: value = integer × 10^low.
        let low = (self.exponent - self.digits.len() as i32)
            .min(other.exponent - other.digits.len() as i32);
        let high = self.exponent.max(other.exponent);
        let width = (high - low) as usize;
        if width > 400 {
            return Err(invalid(
                "Attempting to store more than 38 significant digits in a Number",
            ));
        }
        let spread = |n: &Self| {
            let mut v = vec![0u8; width];
            let start = (high - n.exponent) as usize;
            v[start..start + n.digits.len()].copy_from_slice(&n.digits);
            v
        };
        let (a, b) = (spread(self), spread(other));
        let (negative, digits) = if self.negative == other.negative {
            let mut out = vec![0u8; width + 1];
            let mut carry = 0;
            for i in (0..width).rev() {
                let s = a[i] + b[i] + carry;
                out[i + 1] = s % 10;
                carry = s / 10;
            }
            out[0] = carry;
            (self.negative, out)
        } else {
            let (big, small, negative) = match a.cmp(&b) {
                Ordering::Equal => return Ok(Self::zero()),
                Ordering::Greater => (&a, &b, self.negative),
                Ordering::Less => (&b, &a, other.negative),
            };
            let mut out = vec![0u8; width + 1];
            let mut borrow = 0i8;
            for i in (0..width).rev() {
                let mut d = big[i] as i8 - small[i] as i8 - borrow;
                borrow = 0;
                if d < 0 {
                    d += 10;
                    borrow = 1;
                }
                out[i + 1] = d as u8;
            }
            (negative, out)
        };
        // `digits` holds the value's digits from 10^(high) down, one extra place in front.
        let Some(first) = digits.iter().position(|&d| d != 0) else {
            return Ok(Self::zero());
        };
        let last = digits.iter().rposition(|&d| d != 0).unwrap_or(first);
        let exponent = high as i64 + 1 - first as i64;
        Self::build(negative, digits[first..=last].to_vec(), exponent)
    }

    pub fn negate(&self) -> Self {
        let mut n = self.clone();
        if !n.is_zero() {
            n.negative = !n.negative;
        }
        n
    }

    /// Bytes that sort as the numbers do.
    pub fn key_bytes(&self) -> Vec<u8> {
        if self.is_zero() {
            return vec![0x80];
        }
        // The exponent fits in a byte once biased (DynamoDB's range is about ±130).
        let biased = (self.exponent + 140).clamp(0, 255) as u8;
        let mut out = Vec::with_capacity(self.digits.len() + 3);
        if self.negative {
            out.push(0x40);
            out.push(255 - biased);
            out.extend(self.digits.iter().map(|d| 10 - d));
            out.push(0xff);
        } else {
            out.push(0xc0);
            out.push(biased);
            out.extend(self.digits.iter().map(|d| d + 1));
            out.push(0x00);
        }
        out
    }

    /// The size DynamoDB counts for a number: about one byte per two significant digits,
    /// plus one.
    pub fn size(&self) -> usize {
        self.digits.len().div_ceil(2) + 1
    }

    /// As an `f64`, for arithmetic that needs no exactness (never for storage).
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(0.0)
    }
}

impl std::fmt::Display for Number {
    /// Plain notation, as DynamoDB returns numbers: no exponent, no trailing zeros.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let mut s = String::with_capacity(self.digits.len() + 8);
        if self.negative {
            s.push('-');
        }
        let digit = |d: &u8| char::from(b'0' + d);
        let n = self.digits.len() as i32;
        if self.exponent <= 0 {
            s.push_str("0.");
            for _ in 0..-self.exponent {
                s.push('0');
            }
            s.extend(self.digits.iter().map(digit));
        } else if self.exponent >= n {
            s.extend(self.digits.iter().map(digit));
            for _ in 0..self.exponent - n {
                s.push('0');
            }
        } else {
            let (int, frac) = self.digits.split_at(self.exponent as usize);
            s.extend(int.iter().map(digit));
            s.push('.');
            s.extend(frac.iter().map(digit));
        }
        f.write_str(&s)
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_bytes().cmp(&other.key_bytes())
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    M(BTreeMap<String, Value>),
    L(Vec<Value>),
    /// Sets: kept sorted, without duplicates, never empty.
    Ss(Vec<String>),
    Ns(Vec<Number>),
    Bs(Vec<Vec<u8>>),
}

impl Value {
    /// The type's name on the wire (`S`, `N`, …, `BS`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::S(_) => "S",
            Self::N(_) => "N",
            Self::B(_) => "B",
            Self::Bool(_) => "BOOL",
            Self::Null => "NULL",
            Self::M(_) => "M",
            Self::L(_) => "L",
            Self::Ss(_) => "SS",
            Self::Ns(_) => "NS",
            Self::Bs(_) => "BS",
        }
    }

    /// A value from its wire form.
    pub fn from_json(json: &Json) -> Result<Self, Invalid> {
        let Some(obj) = json.as_object() else {
            return Err(invalid(
                "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
            ));
        };
        let mut fields = obj.iter().filter(|(_, v)| !v.is_null());
        let (Some((kind, v)), None) = (fields.next(), fields.next()) else {
            return Err(invalid(
                if obj.values().filter(|v| !v.is_null()).count() > 1 {
                    "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"
                } else {
                    "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
                },
            ));
        };
        let text = |v: &Json| -> Result<String, Invalid> {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("Expected a string for {kind}")))
        };
        let bytes = |v: &Json| -> Result<Vec<u8>, Invalid> {
            base64::engine::general_purpose::STANDARD
                .decode(text(v)?)
                .map_err(|_| invalid("Invalid Base64 in a binary value"))
        };
        let list = |v: &Json| -> Result<Vec<Json>, Invalid> {
            v.as_array()
                .cloned()
                .ok_or_else(|| invalid(format!("Expected a list for {kind}")))
        };
        Ok(match kind.as_str() {
            "S" => Self::S(text(v)?),
            "N" => Self::N(Number::parse(&text(v)?)?),
            "B" => Self::B(bytes(v)?),
            "BOOL" => Self::Bool(
                v.as_bool()
                    .ok_or_else(|| invalid("Expected a boolean for BOOL"))?,
            ),
            "NULL" => {
                if v.as_bool() != Some(true) {
                    return Err(invalid(
                        "One or more parameter values were invalid: Null attribute value types must have the value of true",
                    ));
                }
                Self::Null
            }
            "M" => {
                let m = v
                    .as_object()
                    .ok_or_else(|| invalid("Expected a map for M"))?;
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    out.insert(k.clone(), Self::from_json(v)?);
                }
                Self::M(out)
            }
            "L" => Self::L(
                list(v)?
                    .iter()
                    .map(Self::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            "SS" => Self::Ss(set(
                list(v)?.iter().map(text).collect::<Result<_, _>>()?,
                "string",
                |s| s.clone(),
            )?),
            "NS" => Self::Ns(set(
                list(v)?
                    .iter()
                    .map(|n| Number::parse(&text(n)?))
                    .collect::<Result<_, _>>()?,
                "number",
                |n| n.to_string(),
            )?),
            "BS" => Self::Bs(set(
                list(v)?.iter().map(bytes).collect::<Result<_, _>>()?,
                "binary",
                |b| base64::engine::general_purpose::STANDARD.encode(b),
            )?),
            other => {
                return Err(invalid(format!(
                    "Supplied AttributeValue has an unknown datatype: {other}"
                )));
            }
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Json {
        let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
        match self {
            Self::S(s) => json!({ "S": s }),
            Self::N(n) => json!({ "N": n.to_string() }),
            Self::B(b) => json!({ "B": b64(b) }),
            Self::Bool(b) => json!({ "BOOL": b }),
            Self::Null => json!({ "NULL": true }),
            Self::M(m) => json!({ "M": item_json(m) }),
            Self::L(l) => json!({ "L": l.iter().map(Self::to_json).collect::<Vec<_>>() }),
            Self::Ss(s) => json!({ "SS": s }),
            Self::Ns(n) => json!({ "NS": n.iter().map(Number::to_string).collect::<Vec<_>>() }),
            Self::Bs(b) => json!({ "BS": b.iter().map(|x| b64(x)).collect::<Vec<_>>() }),
        }
    }

    /// The bytes DynamoDB counts for the value.
    pub fn size(&self) -> usize {
        match self {
            Self::S(s) => s.len(),
            Self::N(n) => n.size(),
            Self::B(b) => b.len(),
            Self::Bool(_) | Self::Null => 1,
            Self::M(m) => 3 + m.iter().map(|(k, v)| k.len() + v.size() + 1).sum::<usize>(),
            Self::L(l) => 3 + l.iter().map(|v| v.size() + 1).sum::<usize>(),
            Self::Ss(s) => s.iter().map(String::len).sum(),
            Self::Ns(n) => n.iter().map(Number::size).sum(),
            Self::Bs(b) => b.iter().map(Vec::len).sum(),
        }
    }

    /// Bytes that sort as DynamoDB orders key values of this type (S and B by their bytes,
    /// N by value); `None` for types a key cannot have.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::S(s) => Some(s.as_bytes().to_vec()),
            Self::B(b) => Some(b.clone()),
            Self::N(n) => Some(n.key_bytes()),
            _ => None,
        }
    }
}

/// A set from its elements: not empty, no duplicates; sorted.
fn set<T: Ord + Clone>(
    mut items: Vec<T>,
    kind: &str,
    show: impl Fn(&T) -> String,
) -> Result<Vec<T>, Invalid> {
    if items.is_empty() {
        return Err(invalid(format!(
            "One or more parameter values were invalid: An {kind} set  may not be empty"
        )));
    }
    let shown: Vec<String> = items.iter().map(&show).collect();
    items.sort();
    if items.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(format!(
            "One or more parameter values were invalid: Input collection [{}] contains duplicates.",
            shown.join(", ")
        )));
    }
    Ok(items)
}

/// An item from its wire form.
pub fn item_from_json(json: &Json) -> Result<Item, Invalid> {
    let Some(obj) = json.as_object() else {
        return Err(invalid("Expected a map of attribute names to values"));
    };
    let mut out = Item::new();
    for (k, v) in obj {
        out.insert(k.clone(), Value::from_json(v)?);
    }
    Ok(out)
}

/// An item's (or a map's) wire form.
pub fn item_json(item: &BTreeMap<String, Value>) -> Map<String, Json> {
    item.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// The bytes DynamoDB counts for an item: each name and value.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

// ---- the stored form: a tag byte per value, lengths as LEB128 varints ----

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::S(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
        Value::N(n) => {
            out.push(2);
            put_bytes(out, n.to_string().as_bytes());
        }
        Value::B(b) => {
            out.push(3);
            put_bytes(out, b);
        }
        Value::Bool(b) => out.push(if *b { 5 } else { 4 }),
        Value::Null => out.push(6),
        Value::M(m) => {
            out.push(7);
            put_map(out, m);
        }
        Value::L(l) => {
            out.push(8);
            put_len(out, l.len());
            for v in l {
                put_value(out, v);
            }
        }
        Value::Ss(s) => {
            out.push(9);
            put_len(out, s.len());
            for x in s {
                put_bytes(out, x.as_bytes());
            }
        }
        Value::Ns(n) => {
            out.push(10);
            put_len(out, n.len());
            for x in n {
                put_bytes(out, x.to_string().as_bytes());
            }
        }
        Value::Bs(b) => {
            out.push(11);
            put_len(out, b.len());
            for x in b {
                put_bytes(out, x);
            }
        }
    }
}

fn put_map(out: &mut Vec<u8>, m: &BTreeMap<String, Value>) {
    put_len(out, m.len());
    for (k, v) in m {
        put_bytes(out, k.as_bytes());
        put_value(out, v);
    }
}

/// An item as stored.
pub fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_map(&mut out, item);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn damaged() -> Invalid {
        invalid("a stored item is damaged")
    }

    fn byte(&mut self) -> Result<u8, Invalid> {
        let b = *self.bytes.get(self.at).ok_or_else(Self::damaged)?;
        self.at += 1;
        Ok(b)
    }

    fn len(&mut self) -> Result<usize, Invalid> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Self::damaged())
    }

    fn bytes(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.len()?;
        let end = self.at.checked_add(n).ok_or_else(Self::damaged)?;
        let b = self.bytes.get(self.at..end).ok_or_else(Self::damaged)?;
        self.at = end;
        Ok(b)
    }

    fn text(&mut self) -> Result<String, Invalid> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Self::damaged())
    }

    fn number(&mut self) -> Result<Number, Invalid> {
        Number::parse(&self.text()?)
    }

    fn value(&mut self) -> Result<Value, Invalid> {
        Ok(match self.byte()? {
            1 => Value::S(self.text()?),
            2 => Value::N(self.number()?),
            3 => Value::B(self.bytes()?.to_vec()),
            4 => Value::Bool(false),
            5 => Value::Bool(true),
            6 => Value::Null,
            7 => Value::M(self.map()?),
            8 => {
                let n = self.len()?;
                let mut l = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    l.push(self.value()?);
                }
                Value::L(l)
            }
            9 => Value::Ss(self.many(Self::text)?),
            10 => Value::Ns(self.many(Self::number)?),
            11 => Value::Bs(self.many(|r| r.bytes().map(<[u8]>::to_vec))?),
            _ => return Err(Self::damaged()),
        })
    }

    fn many<T>(
        &mut self,
        one: impl Fn(&mut Self) -> Result<T, Invalid>,
    ) -> Result<Vec<T>, Invalid> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(one(self)?);
        }
        Ok(out)
    }

    fn map(&mut self) -> Result<BTreeMap<String, Value>, Invalid> {
        let n = self.len()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.text()?;
            m.insert(k, self.value()?);
        }
        Ok(m)
    }
}

/// An item from its stored form.
pub fn decode_item(bytes: &[u8]) -> Result<Item, Invalid> {
    Reader { bytes, at: 0 }.map()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn numbers_normalise_and_order_by_value() {
        assert_eq!(n("1.50").to_string(), "1.5");
        assert_eq!(n("-0").to_string(), "0");
        assert_eq!(n("1e3").to_string(), "1000");
        assert_eq!(n("0.00120").to_string(), "0.0012");
        assert_eq!(n("+12.5E-1").to_string(), "1.25");
        assert_eq!(n("007").to_string(), "7");
        for bad in [
            "", ".", "1e", "abc", "1.2.3", "NaN", "Infinity", "--1", "1e+",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad}");
        }
        assert!(Number::parse(&"1".repeat(39)).is_err());
        assert!(Number::parse("9.9e125").is_ok() && Number::parse("1e126").is_err());
        assert!(Number::parse("1e-130").is_ok() && Number::parse("1e-131").is_err());
        let sorted = [
            "-1000", "-2.5", "-2", "-0.001", "0", "0.001", "0.0011", "1", "2", "10", "1e20",
        ];
        for w in sorted.windows(2) {
            assert!(n(w[0]) < n(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(n("10"), n("1e1"));
    }

    #[test]
    fn numbers_add_exactly() {
        let sum = |a: &str, b: &str| n(a).add(&n(b)).unwrap().to_string();
        assert_eq!(sum("0.1", "0.2"), "0.3");
        assert_eq!(sum("999", "1"), "1000");
        assert_eq!(sum("5", "-7"), "-2");
        assert_eq!(sum("-1.5", "1.5"), "0");
        assert_eq!(
            sum("12345678901234567890123456789012345678", "1"),
            "12345678901234567890123456789012345679"
        );
        assert!(
            n("99999999999999999999999999999999999999")
                .add(&n("0.1"))
                .is_err()
        );
        assert_eq!(sum("1e10", "1e-5"), "10000000000.00001");
    }

    #[test]
    fn values_round_trip_and_sets_are_checked() {
        let wire = json!({
            "s": {"S": "x"}, "n": {"N": "1.50"}, "b": {"B": "AAE="}, "t": {"BOOL": true},
            "z": {"NULL": true}, "m": {"M": {"a": {"L": [{"N": "1"}, {"S": ""}]}}},
            "ss": {"SS": ["b", "a"]}, "ns": {"NS": ["2", "10"]}, "bs": {"BS": ["AQ=="]}
        });
        let item = item_from_json(&wire).unwrap();
        let back = Json::Object(item_json(&item));
        assert_eq!(back["n"], json!({"N": "1.5"}));
        assert_eq!(back["ss"], json!({"SS": ["a", "b"]}));
        assert_eq!(back["ns"], json!({"NS": ["2", "10"]}));
        assert_eq!(item_from_json(&back).unwrap(), item);
        assert_eq!(decode_item(&encode_item(&item)).unwrap(), item);
        assert!(decode_item(&encode_item(&item)[..10]).is_err());
        for bad in [
            json!({}),
            json!({"S": "a", "N": "1"}),
            json!({"SS": []}),
            json!({"SS": ["a", "a"]}),
            json!({"NS": ["1", "1.0"]}),
            json!({"NULL": false}),
            json!({"N": "x"}),
            json!({"B": "***"}),
            json!({"Q": "1"}),
        ] {
            assert!(Value::from_json(&bad).is_err(), "{bad}");
        }
    }
}
