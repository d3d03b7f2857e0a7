//! Function URLs (a function's own HTTPS-style endpoint) and the resource-based policy
//! statements that say who may call a function, as Lambda defines them.

use serde::{Deserialize, Serialize};

use crate::InvalidParameter;

/// How a function URL authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UrlAuthType {
    /// Anyone may call it, if the function's resource policy allows `*`.
    #[serde(rename = "NONE")]
    None,
    /// Requests are SigV4-signed and the caller needs `lambda:InvokeFunctionUrl`.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

impl UrlAuthType {
    pub fn parse(s: &str) -> Result<Self, InvalidParameter> {
        match s {
            "NONE" => Ok(Self::None),
            "AWS_IAM" => Ok(Self::AwsIam),
            other => Err(InvalidParameter::constraint(
                "authType",
                Some(&other),
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::AwsIam => "AWS_IAM",
        }
    }
}

/// Whether a URL's response is returned whole or streamed as the function writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InvokeMode {
    #[default]
    #[serde(rename = "BUFFERED")]
    Buffered,
    #[serde(rename = "RESPONSE_STREAM")]
    ResponseStream,
}

impl InvokeMode {
    pub fn parse(s: &str) -> Result<Self, InvalidParameter> {
        match s {
            "BUFFERED" => Ok(Self::Buffered),
            "RESPONSE_STREAM" => Ok(Self::ResponseStream),
            other => Err(InvalidParameter::constraint(
                "invokeMode",
                Some(&other),
                "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffered => "BUFFERED",
            Self::ResponseStream => "RESPONSE_STREAM",
        }
    }
}

/// Cross-origin resource sharing for a function URL, answered by the node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UrlCors {
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<u32>,
}

/// A CORS configuration as the APIs take it: Lambda's `Cors` spells its fields in PascalCase,
/// API Gateway's `CorsConfiguration` in camelCase; both are accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CorsInput {
    #[serde(alias = "allowCredentials")]
    pub allow_credentials: Option<bool>,
    #[serde(alias = "allowHeaders")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(alias = "allowMethods")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(alias = "allowOrigins")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(alias = "exposeHeaders")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(alias = "maxAge")]
    pub max_age: Option<u32>,
}

impl CorsInput {
    /// The configuration, checked against Lambda's limits.
    pub fn into_cors(self) -> Result<UrlCors, InvalidParameter> {
        let cors = UrlCors {
            allow_credentials: self.allow_credentials.unwrap_or(false),
            allow_headers: self.allow_headers.unwrap_or_default(),
            allow_methods: self.allow_methods.unwrap_or_default(),
            allow_origins: self.allow_origins.unwrap_or_default(),
            expose_headers: self.expose_headers.unwrap_or_default(),
            max_age: self.max_age,
        };
        cors.validate()?;
        Ok(cors)
    }
}

const CORS_METHODS: [&str; 8] = [
    "GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "*",
];

impl UrlCors {
    /// Lambda's limits: at most 100 origins (each ≤ 253 characters), headers and exposed
    /// headers (each ≤ 1,024), 6 methods from HTTP's own or `*`, and a max age of a day.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        let list = |name: &str, items: &[String], max_items: usize, max_len: usize| {
            if items.len() > max_items {
                return Err(InvalidParameter::new(format!(
                    "Cors.{name} can have at most {max_items} items"
                )));
            }
            if let Some(bad) = items.iter().find(|i| i.is_empty() || i.len() > max_len) {
                return Err(InvalidParameter::new(format!(
                    "Cors.{name} item {bad:?} must be 1 to {max_len} characters"
                )));
            }
            Ok(())
        };
        list("AllowOrigins", &self.allow_origins, 100, 253)?;
        list("AllowHeaders", &self.allow_headers, 100, 1024)?;
        list("ExposeHeaders", &self.expose_headers, 100, 1024)?;
        list("AllowMethods", &self.allow_methods, 6, 6)?;
        if let Some(bad) = self
            .allow_methods
            .iter()
            .find(|m| !CORS_METHODS.contains(&m.to_ascii_uppercase().as_str()))
        {
            return Err(InvalidParameter::new(format!(
                "Cors.AllowMethods item {bad:?} is not an HTTP method"
            )));
        }
        if self.max_age.is_some_and(|a| a > 86_400) {
            return Err(InvalidParameter::new(
                "Cors.MaxAge must be between 0 and 86400",
            ));
        }
        Ok(())
    }

    /// The configuration as an API answers it: keys in PascalCase (Lambda) or camelCase (API
    /// Gateway).
    pub fn to_json(&self, pascal: bool) -> serde_json::Value {
        let key = |name: &str| {
            if pascal {
                let mut chars = name.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            } else {
                name.to_owned()
            }
        };
        let mut out = serde_json::Map::new();
        out.insert(key("allowCredentials"), self.allow_credentials.into());
        out.insert(key("allowHeaders"), self.allow_headers.clone().into());
        out.insert(key("allowMethods"), self.allow_methods.clone().into());
        out.insert(key("allowOrigins"), self.allow_origins.clone().into());
        out.insert(key("exposeHeaders"), self.expose_headers.clone().into());
        if let Some(age) = self.max_age {
            out.insert(key("maxAge"), age.into());
        }
        out.into()
    }

    /// The origin to answer with for a request from `origin`, if the configuration allows it.
    pub fn allowed_origin<'a>(&'a self, origin: &'a str) -> Option<&'a str> {
        self.allow_origins.iter().find_map(|o| {
            if o == "*" {
                // With credentials a browser accepts only the requesting origin itself.
                Some(if self.allow_credentials { origin } else { "*" })
            } else if o.eq_ignore_ascii_case(origin) {
                Some(origin)
            } else {
                None
            }
        })
    }
}

/// A function URL: one per function qualifier (`$LATEST` or an alias).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionUrl {
    /// 32 lower-case letters and digits, the first label of the URL's host.
    pub url_id: String,
    pub auth_type: UrlAuthType,
    #[serde(default)]
    pub cors: Option<UrlCors>,
    #[serde(default)]
    pub invoke_mode: InvokeMode,
    pub created_ms: i64,
    pub last_modified_ms: i64,
}

/// A new URL id: 32 random lower-case letters and digits.
pub fn new_url_id() -> String {
    crate::http_api::new_id(32)
}

/// One statement of a function's resource-based policy, as AddPermission makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub sid: String,
    /// `lambda:InvokeFunction`, `lambda:InvokeFunctionUrl`, `lambda:*`, …
    pub action: String,
    /// `*`, a 12-digit account, an IAM ARN, or a service (`s3.amazonaws.com`).
    pub principal: String,
    /// The qualifier the statement is about (`None`: the unqualified function).
    #[serde(default)]
    pub qualifier: Option<String>,
    #[serde(default)]
    pub source_arn: Option<String>,
    #[serde(default)]
    pub source_account: Option<String>,
    #[serde(default)]
    pub function_url_auth_type: Option<UrlAuthType>,
}

impl Permission {
    /// Whether the statement lets `principal` (`*` for an anonymous caller, else the caller's
    /// account id or ARN) take `action` on the function under `qualifier`, through a URL of
    /// `url_auth` if the call comes through one.
    pub fn allows(
        &self,
        action: &str,
        principal: Option<(&str, &str)>,
        qualifier: Option<&str>,
        url_auth: Option<UrlAuthType>,
    ) -> bool {
        let action_ok = self.action == action || self.action == "lambda:*";
        let principal_ok = match principal {
            // An anonymous caller is allowed only by a statement for everyone.
            None => self.principal == "*",
            Some((account, arn)) => {
                self.principal == "*"
                    || self.principal == account
                    || self.principal == format!("arn:aws:iam::{account}:root")
                    || self.principal == arn
            }
        };
        let qualifier_ok = self.qualifier.as_deref() == qualifier;
        let auth_ok = self
            .function_url_auth_type
            .is_none_or(|t| Some(t) == url_auth);
        action_ok && principal_ok && qualifier_ok && auth_ok
    }

    /// The statement as IAM policy JSON, for AddPermission's answer and GetPolicy.
    pub fn to_json(&self, function_arn: &str) -> serde_json::Value {
        let principal = if self.principal == "*" {
            serde_json::json!("*")
        } else if self.principal.contains('.') && !self.principal.starts_with("arn:") {
            serde_json::json!({ "Service": self.principal })
        } else if self.principal.len() == 12 && self.principal.bytes().all(|b| b.is_ascii_digit()) {
            serde_json::json!({ "AWS": format!("arn:aws:iam::{}:root", self.principal) })
        } else {
            serde_json::json!({ "AWS": self.principal })
        };
        let resource = match &self.qualifier {
            Some(q) => format!("{function_arn}:{q}"),
            None => function_arn.to_owned(),
        };
        let mut conditions = serde_json::Map::new();
        let mut equals = serde_json::Map::new();
        if let Some(t) = self.function_url_auth_type {
            equals.insert("lambda:FunctionUrlAuthType".into(), t.as_str().into());
        }
        if let Some(a) = &self.source_account {
            equals.insert("AWS:SourceAccount".into(), a.clone().into());
        }
        if !equals.is_empty() {
            conditions.insert("StringEquals".into(), equals.into());
        }
        if let Some(arn) = &self.source_arn {
            conditions.insert(
                "ArnLike".into(),
                serde_json::json!({ "AWS:SourceArn": arn }),
            );
        }
        let mut statement = serde_json::json!({
            "Sid": self.sid,
            "Effect": "Allow",
            "Principal": principal,
            "Action": self.action,
            "Resource": resource,
        });
        if !conditions.is_empty() {
            statement["Condition"] = conditions.into();
        }
        statement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_url_permission() -> Permission {
        Permission {
            sid: "public".into(),
            action: "lambda:InvokeFunctionUrl".into(),
            principal: "*".into(),
            qualifier: None,
            source_arn: None,
            source_account: None,
            function_url_auth_type: Some(UrlAuthType::None),
        }
    }

    #[test]
    fn a_public_url_statement_allows_anyone_through_a_none_url_only() {
        let p = public_url_permission();
        assert!(p.allows(
            "lambda:InvokeFunctionUrl",
            None,
            None,
            Some(UrlAuthType::None)
        ));
        assert!(!p.allows(
            "lambda:InvokeFunctionUrl",
            None,
            None,
            Some(UrlAuthType::AwsIam)
        ));
        assert!(!p.allows("lambda:InvokeFunction", None, None, None));
        assert!(!p.allows(
            "lambda:InvokeFunctionUrl",
            None,
            Some("live"),
            Some(UrlAuthType::None)
        ));
    }

    #[test]
    fn an_account_statement_allows_that_account_and_no_one_else() {
        let p = Permission {
            principal: "111122223333".into(),
            function_url_auth_type: None,
            ..public_url_permission()
        };
        let user = ("111122223333", "arn:aws:iam::111122223333:user/u");
        let other = ("444455556666", "arn:aws:iam::444455556666:user/u");
        assert!(p.allows(
            "lambda:InvokeFunctionUrl",
            Some(user),
            None,
            Some(UrlAuthType::AwsIam)
        ));
        assert!(!p.allows(
            "lambda:InvokeFunctionUrl",
            Some(other),
            None,
            Some(UrlAuthType::AwsIam)
        ));
        assert!(!p.allows(
            "lambda:InvokeFunctionUrl",
            None,
            None,
            Some(UrlAuthType::None)
        ));
        assert_eq!(
            p.to_json("arn:aws:lambda:us-east-1:000000000000:function:f")["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
    }

    #[test]
    fn cors_limits_are_lambdas() {
        let ok = UrlCors {
            allow_origins: vec!["https://example.com".into()],
            allow_methods: vec!["GET".into(), "post".into()],
            max_age: Some(600),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            UrlCors {
                allow_methods: vec!["FETCH".into()],
                ..ok.clone()
            },
            UrlCors {
                max_age: Some(86_401),
                ..ok.clone()
            },
            UrlCors {
                allow_origins: vec![String::new()],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let any = UrlCors {
            allow_origins: vec!["*".into()],
            ..Default::default()
        };
        assert_eq!(any.allowed_origin("https://a.example"), Some("*"));
        assert_eq!(ok.allowed_origin("https://other.example"), None);
    }

    #[test]
    fn url_ids_are_32_lower_case_letters_and_digits() {
        let id = new_url_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(id, new_url_id());
    }
}
