//! Request bodies as the server reads them: JSON or YAML into a JSON value, noting every
//! duplicate field on the way (`fieldValidation` reports them as kube-apiserver does;
//! a plain JSON parse would silently keep the last one).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A decoded body and the paths of the fields it gave twice (`spec.replicas`,
/// `spec.template.spec.containers[0].name`).
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub value: Value,
    pub duplicates: Vec<String>,
}

/// Parses JSON, keeping the last of duplicate fields and naming them.
pub fn from_json(bytes: &[u8]) -> Result<Decoded, String> {
    let mut duplicates = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Walker {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut deserializer)
    .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(Decoded { value, duplicates })
}

/// Parses one YAML document (duplicate keys are an error of the YAML parser itself).
pub fn from_yaml(text: &str) -> Result<Decoded, String> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    Ok(Decoded {
        value,
        duplicates: Vec::new(),
    })
}

/// Builds a `Value` while tracking where it is, to name duplicate fields.
struct Walker<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let walker = Walker {
                path: format!("{}[{}]", self.path, items.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(walker)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if object.contains_key(&key) {
                self.duplicates.push(path.clone());
            }
            let value = map.next_value_seed(Walker {
                path,
                duplicates: &mut *self.duplicates,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicates_are_named_by_path_and_the_last_wins() {
        let decoded = from_json(
            br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"containers": [{"name": "x", "image": "i", "image": "j"}]}}"#,
        )
        .expect("json");
        assert_eq!(
            decoded.duplicates,
            ["metadata.name", "spec.containers[0].image"]
        );
        assert_eq!(decoded.value["metadata"]["name"], "b");
        assert_eq!(decoded.value["spec"]["containers"][0]["image"], "j");
        assert!(from_json(br#"{"a": 1} x"#).is_err(), "trailing data");
        assert!(from_json(br#"{"a": "#).is_err());
        assert_eq!(
            from_json(br#"{"n": 1.5, "u": 18446744073709551615, "z": null, "t": true}"#)
                .expect("json")
                .value,
            json!({"n": 1.5, "u": 18446744073709551615u64, "z": null, "t": true})
        );
    }

    #[test]
    fn yaml_documents_become_json() {
        let decoded =
            from_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: \"1\"\n")
                .expect("yaml");
        assert_eq!(
            decoded.value,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}})
        );
        assert!(from_yaml("a: [1, 2\n").is_err());
    }
}
