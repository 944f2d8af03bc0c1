//! Table schemas: the subset of JSON Schema a record table needs — `type`,
//! `properties`, `required`, `additionalProperties`, `enum`, `minimum`,
//! `maximum`, `minLength`, `maxLength`, `items`. Writes that break a schema are
//! refused with the offending field named.

use serde_json::{Map, Value};

/// A schema checked for well-formedness when the table is declared.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema(Value);

const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "items",
    "description",
    "title",
];
const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

impl Schema {
    /// Accepts a schema document, or says what is wrong with it.
    pub fn new(doc: Value) -> Result<Self, String> {
        check_schema(&doc, "")?;
        Ok(Self(doc))
    }

    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// Checks `value`; the error names the field (`/name`) and the rule broken.
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        validate(&self.0, value, "")
    }
}

fn check_schema(doc: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = doc else {
        return Err(format!("schema{at}: must be an object"));
    };
    for (key, rule) in map {
        let ok = match key.as_str() {
            "type" => match rule {
                Value::String(t) => TYPES.contains(&t.as_str()),
                Value::Array(ts) => ts
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                _ => false,
            },
            "properties" => match rule {
                Value::Object(props) => {
                    for (name, sub) in props {
                        check_schema(sub, &format!("{at}/{name}"))?;
                    }
                    true
                }
                _ => false,
            },
            "items" => {
                check_schema(rule, &format!("{at}/items"))?;
                true
            }
            "required" => rule
                .as_array()
                .is_some_and(|names| names.iter().all(Value::is_string)),
            "additionalProperties" => rule.is_boolean(),
            "enum" => rule.is_array(),
            "minimum" | "maximum" => rule.is_number(),
            "minLength" | "maxLength" => rule.is_u64(),
            "description" | "title" => rule.is_string(),
            other => {
                return Err(format!(
                    "schema{at}: unsupported keyword '{other}' (supported: {})",
                    KEYWORDS.join(", ")
                ));
            }
        };
        if !ok {
            return Err(format!("schema{at}: '{key}' has the wrong form"));
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_allows(allowed: &str, actual: &str) -> bool {
    allowed == actual || (allowed == "number" && actual == "integer")
}

fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Value::Object(rules) = schema else {
        return Ok(());
    };
    let field = if at.is_empty() { "/" } else { at };
    if let Some(allowed) = rules.get("type") {
        let actual = type_name(value);
        let ok = match allowed {
            Value::String(t) => type_allows(t, actual),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_allows(t, actual)),
            _ => true,
        };
        if !ok {
            return Err(format!("{field}: expected {allowed}, got {actual}"));
        }
    }
    if let Some(Value::Array(choices)) = rules.get("enum")
        && !choices.contains(value)
    {
        return Err(format!(
            "{field}: must be one of {}",
            Value::Array(choices.clone())
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = rules.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{field}: must be at least {min}"));
        }
        if let Some(max) = rules.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{field}: must be at most {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = rules.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return Err(format!("{field}: must be at least {min} characters"));
        }
        if let Some(max) = rules.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return Err(format!("{field}: must be at most {max} characters"));
        }
    }
    if let Value::Object(fields) = value {
        validate_object(rules, fields, at)?;
    }
    if let (Value::Array(items), Some(item_schema)) = (value, rules.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{at}/{i}"))?;
        }
    }
    Ok(())
}

fn validate_object(
    rules: &Map<String, Value>,
    fields: &Map<String, Value>,
    at: &str,
) -> Result<(), String> {
    if let Some(Value::Array(required)) = rules.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Err(format!("{at}/{name}: is required"));
            }
        }
    }
    let props = rules.get("properties").and_then(Value::as_object);
    for (name, field_value) in fields {
        match props.and_then(|p| p.get(name)) {
            Some(sub) => validate(sub, field_value, &format!("{at}/{name}"))?,
            None if rules.get("additionalProperties") == Some(&Value::Bool(false)) => {
                return Err(format!("{at}/{name}: is not an allowed field"));
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sensors() -> Schema {
        Schema::new(json!({
            "type": "object",
            "required": ["temp"],
            "additionalProperties": false,
            "properties": {
                "temp": {"type": "number", "minimum": -50, "maximum": 150},
                "room": {"type": "string", "maxLength": 8},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn accepts_conforming_records() {
        let s = sensors();
        assert_eq!(s.validate(&json!({"temp": 21})), Ok(()));
        assert_eq!(
            s.validate(&json!({"temp": 21.5, "room": "lab", "tags": ["a"]})),
            Ok(())
        );
    }

    #[test]
    fn names_the_field_that_breaks_a_rule() {
        let s = sensors();
        assert_eq!(s.validate(&json!({})), Err("/temp: is required".into()));
        assert_eq!(
            s.validate(&json!({"temp": "hot"})),
            Err("/temp: expected \"number\", got string".into())
        );
        assert_eq!(
            s.validate(&json!({"temp": 200})),
            Err("/temp: must be at most 150".into())
        );
        assert_eq!(
            s.validate(&json!({"temp": 1, "x": 1})),
            Err("/x: is not an allowed field".into())
        );
        assert_eq!(
            s.validate(&json!({"temp": 1, "tags": [1]})),
            Err("/tags/0: expected \"string\", got integer".into())
        );
    }

    #[test]
    fn malformed_schemas_are_refused() {
        assert!(Schema::new(json!({"type": "color"})).is_err());
        assert!(Schema::new(json!({"pattern": "x"})).is_err());
        assert!(Schema::new(json!({"properties": {"a": 3}})).is_err());
    }
}
