//! Just enough JSON for `--json`: one flat object per result, built in order.

/// A JSON object being written.
pub struct Object(String);

/// A value that can be a field of an [`Object`].
pub trait Value {
    fn write(&self, out: &mut String);
}

impl Object {
    pub fn new() -> Object {
        Object(String::from("{"))
    }

    pub fn field(mut self, name: &str, v: impl Value) -> Object {
        self.key(name);
        v.write(&mut self.0);
        self
    }

    /// A field whose value is already JSON text.
    pub fn raw(mut self, name: &str, json: &str) -> Object {
        self.key(name);
        self.0.push_str(json);
        self
    }

    fn key(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        name.write(&mut self.0);
        self.0.push(':');
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

impl Value for &str {
    fn write(&self, out: &mut String) {
        out.push('"');
        for c in self.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

impl Value for bool {
    fn write(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl Value for Option<&str> {
    fn write(&self, out: &mut String) {
        match self {
            Some(s) => s.write(out),
            None => out.push_str("null"),
        }
    }
}

impl Value for &[String] {
    fn write(&self, out: &mut String) {
        out.push('[');
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            s.as_str().write(out);
        }
        out.push(']');
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
            .finish();
        assert_eq!(s, r#"{"a":"x\"y\\z\n\u0001","b":null,"c":["p"],"ok":true}"#);
    }
}
