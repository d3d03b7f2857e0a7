//! Route keys (`GET /pets/{id}`, `ANY /files/{path+}`, `$default`) and the table that finds a
//! request's route with API Gateway's priorities: the most specific path wins, segment by
//! segment (a literal over a `{param}` over a greedy `{proxy+}`), then a route for the request's
//! method over an `ANY` one at the same path; `$default` takes what nothing else matches.
//!
//! The table is a tree of path segments, so a lookup costs the depth of the path, not the
//! number of routes.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

/// The methods a route key may name.
pub const METHODS: [&str; 8] = [
    "ANY", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
];

/// The catch-all route key.
pub const DEFAULT_ROUTE: &str = "$default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: one segment.
    Param(String),
    /// `{name+}`: the rest of the path, one segment or more; last only.
    Greedy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    Default,
    Route {
        method: String,
        segments: Vec<Segment>,
    },
}

/// Why a route key is refused, as API Gateway's `BadRequestException` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRouteKey(pub String);

impl std::fmt::Display for InvalidRouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRouteKey {}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl RouteKey {
    pub fn parse(key: &str) -> Result<Self, InvalidRouteKey> {
        if key == DEFAULT_ROUTE {
            return Ok(Self::Default);
        }
        let bad = |why: &str| InvalidRouteKey(format!("Invalid route key: {key}. {why}"));
        let Some((method, path)) = key.split_once(' ') else {
            return Err(bad(
                "A route key is $default or a method and a path: GET /items",
            ));
        };
        if !METHODS.contains(&method) {
            return Err(bad(&format!(
                "The method must be one of {}",
                METHODS.join(", ")
            )));
        }
        if !path.starts_with('/') {
            return Err(bad("The path must start with /"));
        }
        if path.len() > 8192 {
            return Err(bad("The path is too long"));
        }
        let mut segments = Vec::new();
        if path != "/" {
            let parts: Vec<&str> = path[1..].split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let segment =
                    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                        match inner.strip_suffix('+') {
                            Some(name) if !last => {
                                return Err(bad(&format!(
                                    "The greedy path variable {{{name}+}} must be the last segment"
                                )));
                            }
                            Some(name) if valid_name(name) => Segment::Greedy(name.to_owned()),
                            None if valid_name(inner) => Segment::Param(inner.to_owned()),
                            _ => return Err(bad(&format!("Invalid path variable {part}"))),
                        }
                    } else if part.is_empty() {
                        return Err(bad("The path has an empty segment"));
                    } else if part.contains(['{', '}']) {
                        return Err(bad(&format!(
                            "Invalid path segment {part:?}: a path variable must be a whole segment"
                        )));
                    } else if part
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                    {
                        return Err(bad(&format!(
                            "Invalid path segment {part:?}: spaces and control characters must be \
                         percent-encoded"
                        )));
                    } else {
                        Segment::Literal((*part).to_owned())
                    };
                segments.push(segment);
            }
        }
        let mut names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("A path variable's name is used twice"));
        }
        Ok(Self::Route {
            method: method.to_owned(),
            segments,
        })
    }
}

struct Entry<T> {
    key: String,
    /// The names of the route's path variables, in path order.
    names: Vec<String>,
    value: T,
}

struct Node<T> {
    literals: HashMap<String, Node<T>>,
    param: Option<Box<Node<T>>>,
    /// Routes ending in a greedy variable at this depth, by method.
    greedy: HashMap<String, Entry<T>>,
    /// Routes ending here, by method.
    ends: HashMap<String, Entry<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literals: HashMap::new(),
            param: None,
            greedy: HashMap::new(),
            ends: HashMap::new(),
        }
    }
}

/// A request's route: what was stored with it, its key, and its path variables decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    pub value: &'a T,
    pub route_key: &'a str,
    pub params: Vec<(String, String)>,
}

/// Two routes that would match the same requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub String);

/// Every route of an API.
pub struct RouteTable<T> {
    root: Node<T>,
    default: Option<Entry<T>>,
    len: usize,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            default: None,
            len: 0,
        }
    }
}

fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

impl<T> RouteTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route. Two routes with the same method whose paths differ only in their
    /// variables' names conflict.
    pub fn insert(&mut self, key: &str, value: T) -> Result<(), Conflict> {
        let parsed = RouteKey::parse(key).map_err(|e| Conflict(e.0))?;
        let conflict = || Conflict(format!("The route {key} conflicts with an existing route"));
        let (method, segments) = match parsed {
            RouteKey::Default => {
                if self.default.is_some() {
                    return Err(conflict());
                }
                self.default = Some(Entry {
                    key: key.to_owned(),
                    names: Vec::new(),
                    value,
                });
                self.len += 1;
                return Ok(());
            }
            RouteKey::Route { method, segments } => (method, segments),
        };
        let mut names = Vec::new();
        let mut node = &mut self.root;
        let mut greedy = false;
        for segment in &segments {
            match segment {
                Segment::Literal(l) => node = node.literals.entry(decode(l)).or_default(),
                Segment::Param(name) => {
                    names.push(name.clone());
                    node = node.param.get_or_insert_with(Default::default);
                }
                Segment::Greedy(name) => {
                    names.push(name.clone());
                    greedy = true;
                }
            }
        }
        let slot = if greedy {
            &mut node.greedy
        } else {
            &mut node.ends
        };
        if slot.contains_key(&method) {
            return Err(conflict());
        }
        slot.insert(
            method,
            Entry {
                key: key.to_owned(),
                names,
                value,
            },
        );
        self.len += 1;
        Ok(())
    }

    /// The route a request for `method` and `raw_path` (as sent, percent-encoded) takes.
    pub fn find(&self, method: &str, raw_path: &str) -> Option<Match<'_, T>> {
        let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut captured = Vec::new();
        let found =
            Self::search(&self.root, &segments, method, &mut captured).or(self.default.as_ref());
        let entry = found?;
        let params = entry
            .names
            .iter()
            .cloned()
            .zip(captured)
            .collect::<Vec<_>>();
        Some(Match {
            value: &entry.value,
            route_key: &entry.key,
            params,
        })
    }

    fn search<'a>(
        node: &'a Node<T>,
        segments: &[&str],
        method: &str,
        captured: &mut Vec<String>,
    ) -> Option<&'a Entry<T>> {
        let by_method = |routes: &'a HashMap<String, Entry<T>>| {
            routes.get(method).or_else(|| routes.get("ANY"))
        };
        let Some((first, rest)) = segments.split_first() else {
            return by_method(&node.ends);
        };
        let decoded = decode(first);
        if let Some(child) = node.literals.get(&decoded)
            && let Some(found) = Self::search(child, rest, method, captured)
        {
            return Some(found);
        }
        if let Some(child) = &node.param
            && !first.is_empty()
        {
            captured.push(decoded);
            if let Some(found) = Self::search(child, rest, method, captured) {
                return Some(found);
            }
            captured.pop();
        }
        let found = by_method(&node.greedy)?;
        captured.push(decode(&segments.join("/")));
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> RouteTable<String> {
        let mut t = RouteTable::default();
        for k in keys {
            t.insert(k, (*k).to_owned()).unwrap();
        }
        t
    }

    fn route(
        t: &RouteTable<String>,
        method: &str,
        path: &str,
    ) -> Option<(String, Vec<(String, String)>)> {
        t.find(method, path)
            .map(|m| (m.route_key.to_owned(), m.params))
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn route_keys_are_checked_as_api_gateway_does() {
        for good in [
            "$default",
            "GET /",
            "ANY /{proxy+}",
            "POST /pets/{petId}/toys",
            "DELETE /a.b/c-d_e",
        ] {
            assert!(RouteKey::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "GET",
            "get /pets",
            "FETCH /pets",
            "GET pets",
            "GET /pets//toys",
            "GET /pets/",
            "GET /{proxy+}/more",
            "GET /pets/{}",
            "GET /pets/id{x}",
            "GET /{a}/{a}",
            "GET /pets /x",
            "$Default",
        ] {
            assert!(RouteKey::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(&[
            "GET /pets",
            "GET /pets/dog",
            "GET /pets/{id}",
            "ANY /pets/{id}",
            "GET /pets/{id}/toys",
            "ANY /{proxy+}",
            "GET /files/{path+}",
            "$default",
        ]);
        assert_eq!(route(&t, "GET", "/pets").unwrap().0, "GET /pets");
        assert_eq!(route(&t, "GET", "/pets/dog").unwrap().0, "GET /pets/dog");
        assert_eq!(
            route(&t, "GET", "/pets/cat"),
            Some(("GET /pets/{id}".into(), params(&[("id", "cat")])))
        );
        assert_eq!(
            route(&t, "DELETE", "/pets/cat").unwrap().0,
            "ANY /pets/{id}"
        );
        assert_eq!(
            route(&t, "GET", "/pets/cat/toys"),
            Some(("GET /pets/{id}/toys".into(), params(&[("id", "cat")])))
        );
        // No route for POST at /pets/cat/toys: back up to the greedy catch-all.
        assert_eq!(
            route(&t, "POST", "/pets/cat/toys"),
            Some((
                "ANY /{proxy+}".into(),
                params(&[("proxy", "pets/cat/toys")])
            ))
        );
        assert_eq!(
            route(&t, "GET", "/files/a/b%20c.txt"),
            Some((
                "GET /files/{path+}".into(),
                params(&[("path", "a/b c.txt")])
            ))
        );
        // `/{proxy+}` needs a segment: the root goes to $default.
        assert_eq!(route(&t, "GET", "/").unwrap().0, "$default");
    }

    #[test]
    fn variables_are_decoded_and_literals_match_decoded() {
        let t = table(&["GET /items/{id}", "GET /a%20b"]);
        assert_eq!(
            route(&t, "GET", "/items/x%2Fy%20z"),
            Some(("GET /items/{id}".into(), params(&[("id", "x/y z")])))
        );
        assert_eq!(route(&t, "GET", "/a%20b").unwrap().0, "GET /a%20b");
        assert_eq!(route(&t, "GET", "/items"), None);
        assert_eq!(
            route(&t, "GET", "/items/"),
            None,
            "an empty segment is no value"
        );
        assert_eq!(route(&t, "PUT", "/items/1"), None);
    }

    #[test]
    fn duplicate_routes_conflict() {
        let mut t = table(&["GET /pets/{id}", "$default"]);
        assert!(t.insert("GET /pets/{name}", String::new()).is_err());
        assert!(t.insert("$default", String::new()).is_err());
        assert!(t.insert("POST /pets/{name}", String::new()).is_ok());
        assert!(t.insert("GET /pets/{id}/x", String::new()).is_ok());
        assert_eq!(t.len(), 4);
    }

    /// What a lookup costs among 1,000 routes against a table of one:
    /// `cargo test --release -p nimbus-httpapi routes::tests::lookup_cost -- --ignored
    /// --exact --nocapture` (BENCHMARKS.md). Prints; asserts only that every lookup matched.
    #[test]
    #[ignore]
    fn lookup_cost() {
        let mut big = RouteTable::default();
        for i in 0..1000 {
            let key = match i % 4 {
                0 => format!("GET /service{i}/items"),
                1 => format!("POST /service{i}/items/{{id}}"),
                2 => format!("ANY /service{i}/{{proxy+}}"),
                _ => format!("GET /service{i}/items/{{id}}/parts/{{part}}"),
            };
            big.insert(&key, i).unwrap();
        }
        let mut one = RouteTable::default();
        one.insert("GET /service999/items/{id}/parts/{part}", 0)
            .unwrap();
        let n = 1_000_000u32;
        for round in 0..3 {
            for (name, t) in [("1,000 routes", &big), ("1 route", &one)] {
                let start = std::time::Instant::now();
                for _ in 0..n {
                    let m = t.find("GET", std::hint::black_box("/service999/items/42/parts/7"));
                    assert!(m.is_some());
                }
                eprintln!(
                    "round {round}, {name}: {:?} per lookup",
                    start.elapsed() / n
                );
            }
        }
    }
}
