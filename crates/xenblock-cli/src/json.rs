//! `--json` output: one object per result, its fields in the order they are
//! added (serde_json with `preserve_order`), so the text reads like the
//! sentence it stands beside.

use serde_json::{Map, Value};

/// A JSON object being built.
pub struct Object(Map<String, Value>);

impl Object {
    pub fn new() -> Object {
        Object(Map::new())
    }

    /// Add a field; strings, booleans, numbers, `Option`s (None is `null`)
    /// and slices of strings all convert.
    pub fn field(mut self, name: &str, v: impl Into<Value>) -> Object {
        self.0.insert(name.to_string(), v.into());
        self
    }

    /// Add a nested object.
    pub fn object(mut self, name: &str, o: Object) -> Object {
        self.0.insert(name.to_string(), Value::Object(o.0));
        self
    }

    /// The object as a JSON value (to put in an array).
    pub fn value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn finish(self) -> String {
        Value::Object(self.0).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_orders_fields() {
        let s = Object::new()
            .field("a", "x\"y\\z\n\u{1}")
            .field("b", None::<&str>)
            .field("c", &["p".to_string()][..])
            .field("ok", true)
            .object("env", Object::new().field("k", "v"))
            .finish();
        assert_eq!(
            s,
            r#"{"a":"x\"y\\z\n\u0001","b":null,"c":["p"],"ok":true,"env":{"k":"v"}}"#
        );
    }
}
