//! Label selectors: the string grammar clients send (`labelSelector=`), parsed once and
//! matched against an object's labels.
//!
//! Grammar (as `kubectl -l` and the API accept it), requirements separated by commas:
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`,
//! `key notin (v1,v2)`, `key>N`, `key<N`. Keys may carry a DNS prefix (`app.kubernetes.io/name`).

use std::collections::BTreeMap;

/// One requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

/// Why a selector string was refused; the message is shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl std::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!(
                        "unexpected ')' in selector {text:?}"
                    )));
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unclosed '(' in selector {text:?}")));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn key(text: &str) -> Result<String, SelectorError> {
    let key = text.trim();
    if valid_key(key) {
        Ok(key.to_owned())
    } else {
        Err(SelectorError(format!("invalid label key {key:?}")))
    }
}

fn value(text: &str) -> Result<String, SelectorError> {
    let value = text.trim();
    if valid_value(value) {
        Ok(value.to_owned())
    } else {
        Err(SelectorError(format!("invalid label value {value:?}")))
    }
}

fn set(text: &str) -> Result<Vec<String>, SelectorError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected a parenthesized set, found {text:?}")))?;
    inner.split(',').map(value).collect()
}

/// Finds ` in ` / ` notin ` between a key and a set.
fn set_operator(part: &str) -> Option<(&str, &str, &str)> {
    let paren = part.find('(')?;
    let head = part[..paren].trim_end();
    for op in ["notin", "in"] {
        if let Some(key) = head.strip_suffix(op)
            && key.ends_with(char::is_whitespace)
        {
            return Some((key, op, &part[paren..]));
        }
    }
    None
}

impl LabelSelector {
    /// A `LabelSelector` object (`matchLabels`, `matchExpressions`) as requirements;
    /// `None` for an operator Kubernetes does not know (such a selector matches nothing).
    pub fn from_object(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Option<Self> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            requirements.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => return None,
            });
        }
        Some(LabelSelector { requirements })
    }

    /// A `LabelSelector` object as JSON; `None` when it does not decode or names an
    /// unknown operator (such a selector matches nothing).
    pub fn from_json(selector: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(selector.clone())
            .ok()
            .and_then(|s| Self::from_object(&s))
    }

    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_requirements(text)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError(format!(
                    "empty requirement in selector {text:?}"
                )));
            }
            let requirement = if let Some((k, op, rest)) = set_operator(part) {
                let (k, values) = (key(k)?, set(rest)?);
                if op == "in" {
                    Requirement::In(k, values)
                } else {
                    Requirement::NotIn(k, values)
                }
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key(k)?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, value(v)?)
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(key(k)?, value(v)?)
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(key(k)?, value(v)?)
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| SelectorError(format!("{v:?} is not an integer")))?;
                Requirement::GreaterThan(key(k)?, n)
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| SelectorError(format!("{v:?} is not an integer")))?;
                Requirement::LessThan(key(k)?, n)
            } else {
                Requirement::Exists(key(part)?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, staging),!legacy,track notin (canary),ready,x==y,n>3,m<9").expect("valid");
        assert_eq!(
            s.requirements,
            vec![
                Requirement::Equals("app".into(), "web".into()),
                Requirement::NotEquals("tier".into(), "db".into()),
                Requirement::In("env".into(), vec!["prod".into(), "staging".into()]),
                Requirement::DoesNotExist("legacy".into()),
                Requirement::NotIn("track".into(), vec!["canary".into()]),
                Requirement::Exists("ready".into()),
                Requirement::Equals("x".into(), "y".into()),
                Requirement::GreaterThan("n".into(), 3),
                Requirement::LessThan("m".into(), 9),
            ]
        );
    }

    #[test]
    fn matches_as_kubernetes_does() {
        let pod = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("app.kubernetes.io/name", "x"),
            ("n", "5"),
        ]);
        let yes = [
            "app=web",
            "app",
            "!legacy",
            "env in (prod,dev)",
            "env notin (dev)",
            "tier notin (db)",
            "tier!=db",
            "app.kubernetes.io/name=x",
            "n>4",
            "n<6",
            "",
        ];
        let no = [
            "app=db",
            "legacy",
            "!app",
            "env in (dev)",
            "env notin (prod)",
            "n>5",
            "app=web,env=dev",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).expect(s).matches(&pod),
                "{s} should match"
            );
        }
        for s in no {
            assert!(
                !LabelSelector::parse(s).expect(s).matches(&pod),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn refuses_malformed_selectors() {
        for bad in [
            "app=",
            "=web",
            "app in (a",
            "app in a)",
            "a,,b",
            "Bad Key=1",
            "app=in valid",
            "n>x",
            "app=-web",
        ] {
            if bad == "app=" {
                // An empty value is allowed: `app=` selects labels whose value is empty.
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
