//! A manifest checked as the API server would check it, from the generated CRD itself: the
//! schema's defaults applied, then its OpenAPI schema (unknown fields refused, as `kubectl
//! apply`'s strict field validation does), then its CEL rules (`x-kubernetes-validations`),
//! evaluated with the `cel` crate. Transition rules (those reading `oldSelf`) need the stored
//! object and are left to the API server.

use kube::Resource;
use serde_json::{Map, Value};

/// One thing wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Violation {
    /// Where, as a dotted path (`spec.kafka.partitions`; the root is empty).
    pub field: String,
    /// What.
    pub message: String,
}

/// The CRD's schema could not be used (a bug of ours, not of the manifest).
#[derive(Debug, thiserror::Error)]
#[error("the ChatAgent schema cannot be used: {0}")]
pub struct SchemaError(String);

/// Applies the schema's defaults to `object` (a whole ChatAgent: apiVersion, kind, metadata,
/// spec) and returns what is wrong with it, the schema's findings first.
pub fn validate(object: &mut Value) -> Result<Vec<Violation>, SchemaError> {
    let schema = crate::crd()
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.clone())
        .ok_or_else(|| SchemaError("no openAPIV3Schema".into()))?;
    let mut schema = serde_json::to_value(schema).map_err(|e| SchemaError(e.to_string()))?;
    // what every object has, which the API server checks before the CRD's schema
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let api_version = format!(
            "{}/{}",
            crate::ChatAgent::group(&()),
            crate::ChatAgent::version(&())
        );
        props.insert(
            "apiVersion".into(),
            serde_json::json!({"type": "string", "enum": [api_version]}),
        );
        props.insert(
            "kind".into(),
            serde_json::json!({"type": "string", "enum": ["ChatAgent"]}),
        );
        props.insert(
            "metadata".into(),
            serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    apply_defaults(&schema, object);
    let strict = strict(schema.clone());
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&strict)
        .map_err(|e| SchemaError(e.to_string()))?;
    let mut found: Vec<Violation> = validator
        .iter_errors(object)
        .map(|e| Violation {
            field: dotted(e.instance_path().as_str()),
            message: e.to_string(),
        })
        .collect();
    // CEL rules assume a well-formed object, as the API server evaluates them only then
    if found.is_empty() {
        rules(&schema, object, "", &mut found);
    }
    Ok(found)
}

/// `/spec/kafka/partitions` → `spec.kafka.partitions`; `/spec/env/0` → `spec.env[0]`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

/// Structural defaulting: a missing property with a `default` gets it, in every object present.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    if !obj.contains_key(name)
                        && let Some(default) = prop.get("default")
                    {
                        obj.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = obj.get_mut(name) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in obj.values_mut() {
                    apply_defaults(extra, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for child in items {
                    apply_defaults(item, child);
                }
            }
        }
        _ => {}
    }
}

/// The OpenAPI schema as JSON Schema draft 4 refuses what the API server refuses: `nullable`
/// becomes a `null` type, and objects with declared properties take no others (strict field
/// validation) unless they preserve unknown fields.
fn strict(mut schema: Value) -> Value {
    fn walk(s: &mut Value) {
        let Some(obj) = s.as_object_mut() else { return };
        if obj.remove("nullable") == Some(Value::Bool(true))
            && let Some(t) = obj.get("type").cloned()
        {
            obj.insert("type".into(), Value::Array(vec![t, Value::from("null")]));
        }
        let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserves {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        for key in ["properties", "patternProperties"] {
            if let Some(Value::Object(props)) = obj.get_mut(key) {
                props.values_mut().for_each(walk);
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            if let Some(child) = obj.get_mut(key) {
                walk(child);
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(all)) = obj.get_mut(key) {
                all.iter_mut().for_each(walk);
            }
        }
    }
    walk(&mut schema);
    schema
}

/// Evaluates the CEL rules of `schema` on `value` (at `path`), then those of its children.
fn rules(schema: &Value, value: &Value, path: &str, found: &mut Vec<Violation>) {
    if value.is_null() {
        return;
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        if text.contains("oldSelf") {
            continue;
        }
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("failed rule: {text}"), str::to_string);
        let field = match rule.get("fieldPath").and_then(Value::as_str) {
            Some(sub) => format!("{path}{sub}"),
            None => path.to_string(),
        };
        match evaluate(text, value) {
            Ok(true) => {}
            Ok(false) => found.push(Violation { field, message }),
            Err(why) => found.push(Violation {
                field,
                message: format!("{message} (the rule {text:?} could not be evaluated: {why})"),
            }),
        }
    }
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    match value {
        Value::Object(obj) => {
            let props: Option<&Map<String, Value>> = schema.get("properties").and_then(Value::as_object);
            for (name, child) in obj {
                if let Some(prop) = props.and_then(|p| p.get(name)) {
                    rules(prop, child, &join(name), found);
                } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    rules(extra, child, &join(name), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    rules(item, child, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn evaluate(rule: &str, value: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| e.to_string())?;
    let mut context = cel::Context::default();
    context
        .add_variable("self", value.clone())
        .map_err(|e| e.to_string())?;
    match program.execute(&context).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("it gave {other:?}, not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(spec: Value) -> Value {
        json!({
            "apiVersion": "meshchat.io/v1alpha1",
            "kind": "ChatAgent",
            "metadata": {"name": "support"},
            "spec": spec,
        })
    }

    fn check(spec: Value) -> Vec<(String, String)> {
        let mut a = agent(spec);
        validate(&mut a)
            .expect("schema")
            .into_iter()
            .map(|v| (v.field, v.message))
            .collect()
    }

    #[test]
    fn a_minimal_manifest_is_valid_and_gets_the_schema_defaults() {
        let mut a = agent(json!({"auth": {"mode": "None"}}));
        assert_eq!(validate(&mut a).expect("schema"), vec![]);
        assert_eq!(a["spec"]["replicas"], 3);
        assert_eq!(a["spec"]["kafka"]["partitions"], 24);
        assert_eq!(a["spec"]["rebalance"]["lowWatermark"], 0.2);
    }

    #[test]
    fn schema_violations_name_the_field() {
        let found = check(json!({"auth": {"mode": "None"}, "replicas": -1}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "spec.replicas");
        assert!(found[0].1.contains("minimum"), "{found:?}");
        let found = check(json!({"auth": {"mode": "None"}, "kafka": {"partitions": 5000}}));
        assert_eq!(found[0].0, "spec.kafka.partitions", "{found:?}");
        // a misspelt field is refused, as kubectl's strict field validation does
        let found = check(json!({"auth": {"mode": "None"}, "kafka": {"partitons": 6}}));
        assert_eq!(found[0].0, "spec.kafka", "{found:?}");
        assert!(found[0].1.contains("partitons"), "{found:?}");
        let found = check(json!({"auth": {"mode": "None"}, "env": [{"name": "A", "value": 1}]}));
        assert_eq!(found[0].0, "spec.env[0].value", "{found:?}");
    }

    #[test]
    fn the_cel_rules_are_evaluated_with_the_defaults_applied() {
        // no auth at all
        let found = check(json!({}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "spec");
        assert!(found[0].1.starts_with("spec.auth is required"), "{found:?}");
        // minInsyncReplicas (given) against replicationFactor's default (3)
        let found = check(json!({"auth": {"mode": "None"}, "kafka": {"minInsyncReplicas": 4}}));
        assert_eq!(
            found,
            [(
                "spec.kafka".to_string(),
                "kafka.minInsyncReplicas cannot exceed kafka.replicationFactor: no write could be acknowledged"
                    .to_string()
            )]
        );
        let found = check(json!({"auth": {"mode": "Required"}}));
        assert!(found[0].1.starts_with("auth needs apiKeysSecretRef"), "{found:?}");
        let found = check(json!({"auth": {"mode": "None"}, "rebalance": {"lowWatermark": 0.9}}));
        assert_eq!(found[0].0, "spec.rebalance", "{found:?}");
        let found = check(json!({"auth": {"mode": "None"}, "env": [{"name": "MESHCHAT_X", "value": "1"}]}));
        assert_eq!(found[0].0, "spec.env", "{found:?}");
        let found = check(json!({
            "auth": {"mode": "None"},
            "kafka": {"sasl": {"mechanism": "SCRAM-SHA-512", "credentialsSecretRef": {"name": "c"}}}
        }));
        assert!(found[0].1.starts_with("sasl without tls"), "{found:?}");
        let found = check(json!({
            "auth": {"mode": "None"},
            "autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}
        }));
        assert_eq!(found[0].1, "minReplicas must not exceed maxReplicas", "{found:?}");
    }

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(dotted(""), "");
        assert_eq!(dotted("/spec/env/0/name"), "spec.env[0].name");
        assert_eq!(dotted("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
