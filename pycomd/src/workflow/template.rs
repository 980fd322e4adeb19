//! Step arguments as JSON templates: any JSON, where a string that is a
//! whole reference is replaced by what it names:
//!
//! - `"$input"`: the task's arguments;
//! - `"$prev"`: the previous step's result (for a compensation, the result
//!   of the step it undoes);
//! - `"$steps.<name>"`: the result of an earlier step;
//!
//! each followed by a dotted path into it (`"$input.order.id"`,
//! `"$steps.charge.items.0"`: a number indexes a list). `"$$..."` is the
//! literal string `"$..."`. A reference inside a longer string is left as
//! it is: templates place values, they do not format text.

use serde_json::Value;
use std::collections::BTreeSet;

/// What references resolve against.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub prev: &'a Value,
    /// A step's result by name (a parallel step's: the list of its
    /// branches'), copied only when a template names it.
    pub steps: &'a dyn Fn(&str) -> Option<Value>,
}

enum Root<'a> {
    Input,
    Prev,
    Step(&'a str),
}

struct Reference<'a> {
    root: Root<'a>,
    path: Vec<&'a str>,
}

/// The reference a string is, if it is one (`Ok(None)`: a plain string).
fn reference(s: &str) -> Result<Option<Reference<'_>>, String> {
    if !s.starts_with('$') || s.starts_with("$$") {
        return Ok(None);
    }
    let mut parts = s[1..].split('.');
    let root = match parts.next() {
        Some("input") => Root::Input,
        Some("prev") => Root::Prev,
        Some("steps") => match parts.next() {
            Some(name) if !name.is_empty() => Root::Step(name),
            _ => {
                return Err(format!(
                    "{s}: $steps is followed by a step's name ($steps.<name>)"
                ))
            }
        },
        _ => {
            return Err(format!(
                "{s} is not a reference: use $input, $prev or $steps.<name> (and $$ for a literal $)"
            ))
        }
    };
    let path: Vec<&str> = parts.collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("{s}: an empty part in the path"));
    }
    Ok(Some(Reference { root, path }))
}

/// Check a template against the step names it may use (`known`: the
/// earlier steps). Every error names the reference.
pub fn check(template: &Value, known: &BTreeSet<String>) -> Result<(), String> {
    match template {
        Value::String(s) => match reference(s)? {
            Some(Reference {
                root: Root::Step(name),
                ..
            }) if !known.contains(name) => Err(format!(
                "{s} refers to step '{name}', which is not an earlier step of the task"
            )),
            _ => Ok(()),
        },
        Value::Array(items) => items.iter().try_for_each(|v| check(v, known)),
        Value::Object(map) => map.values().try_for_each(|v| check(v, known)),
        _ => Ok(()),
    }
}

/// The template with every reference replaced. A path that is not there
/// is an error naming the reference and the missing part.
pub fn render(template: &Value, scope: &Scope) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => match reference(s)? {
            None if s.starts_with("$$") => Value::String(s[1..].to_string()),
            None => template.clone(),
            Some(r) => {
                let named: Value;
                let (mut at, what) = match r.root {
                    Root::Input => (scope.input, "the task's arguments".to_string()),
                    Root::Prev => (scope.prev, "the previous step's result".to_string()),
                    Root::Step(name) => match (scope.steps)(name) {
                        Some(v) => {
                            named = v;
                            (&named, format!("the result of step '{name}'"))
                        }
                        None => return Err(format!("{s}: step '{name}' has no result (it did not run)")),
                    },
                };
                for part in &r.path {
                    let next = match at {
                        Value::Object(map) => map.get(*part),
                        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                        _ => None,
                    };
                    at =
                        next.ok_or_else(|| format!("{s}: {what} has no '{part}' (it is {})", describe(at)))?;
                }
                at.clone()
            }
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| render(v, scope)).collect::<Result<_, _>>()?)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        _ => template.clone(),
    })
}

fn describe(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().take(5).map(String::as_str).collect();
            format!(
                "an object with {}",
                if keys.is_empty() {
                    "no keys".into()
                } else {
                    keys.join(", ")
                }
            )
        }
        Value::Array(items) => format!("a list of {}", items.len()),
        other => pycom_client::proto::type_name(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn references_are_replaced_and_paths_followed() {
        let steps = BTreeMap::from([(
            "charge".to_string(),
            json!({"receipt": {"id": 7}, "items": [1, 2]}),
        )]);
        let lookup = |name: &str| steps.get(name).cloned();
        let scope = Scope {
            input: &json!({"order": "o-1"}),
            prev: &json!(3),
            steps: &lookup,
        };
        let t = json!({"o": "$input.order", "p": "$prev", "r": "$steps.charge.receipt.id",
                       "i": "$steps.charge.items.1", "lit": "$$input", "text": "pay $input"});
        assert_eq!(
            render(&t, &scope).unwrap(),
            json!({"o": "o-1", "p": 3, "r": 7, "i": 2, "lit": "$input", "text": "pay $input"})
        );
        let e = render(&json!("$steps.charge.refund"), &scope).unwrap_err();
        assert!(e.contains("has no 'refund'") && e.contains("receipt"), "{e}");
    }

    #[test]
    fn check_refuses_unknown_steps_and_forms() {
        let known = BTreeSet::from(["a".to_string()]);
        assert!(check(&json!({"x": ["$steps.a.b"]}), &known).is_ok());
        assert!(check(&json!("$steps.b"), &known)
            .unwrap_err()
            .contains("not an earlier step"));
        assert!(check(&json!("$output"), &known)
            .unwrap_err()
            .contains("not a reference"));
    }
}
