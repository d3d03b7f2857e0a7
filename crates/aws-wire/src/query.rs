//! The Query protocol's requests (IAM, STS, CloudFormation): a form of parameters, lists
//! spelled `NAME.member.N` and lists of structures `NAME.member.N.FIELD`.

use std::collections::HashMap;

/// A request's parameters.
pub struct Form(HashMap<String, String>);

impl Form {
    /// Reads a form body; `Err` carries the message for a parameter given twice.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("The parameter {k} is given more than once."));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `NAME.member.N` for N = 1, 2, … while present.
    pub fn list(&self, name: &str) -> Vec<String> {
        (1..)
            .map_while(|i| self.get(&format!("{name}.member.{i}")).map(str::to_owned))
            .collect()
    }

    /// `(N, value)` of `NAME.member.N.FIELD` for N = 1, 2, … while present.
    pub fn members(&self, name: &str, field: &str) -> Vec<(usize, String)> {
        (1..)
            .map_while(|i| {
                self.get(&format!("{name}.member.{i}.{field}"))
                    .map(|v| (i, v.to_owned()))
            })
            .collect()
    }
}

/// The validation message for a required parameter left out, as AWS words it (the field with
/// a lower-case first letter).
pub fn missing(name: &str) -> String {
    let mut c = name.chars();
    let field = c
        .next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default();
    format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
         Member must not be null"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_members() {
        let f = Form::parse(
            b"A=1&L.member.1=x&L.member.2=y&P.member.1.K=k1&P.member.2.K=k2&P.member.4.K=k4",
        )
        .unwrap();
        assert_eq!(f.get("A"), Some("1"));
        assert_eq!(f.list("L"), vec!["x", "y"]);
        assert_eq!(
            f.members("P", "K"),
            vec![(1, "k1".to_owned()), (2, "k2".to_owned())]
        );
        assert!(Form::parse(b"A=1&A=2").is_err());
        assert!(missing("StackName").contains("'stackName'"));
    }
}
