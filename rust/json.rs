//! A strict reader for the small JSON documents the core parses (the bundle manifest, which is
//! untrusted input). Objects, arrays, strings, non-negative integers, booleans and null; no
//! floats, no duplicate keys, nesting at most `MAX_DEPTH` deep. Never panics on any input.
#![deny(clippy::arithmetic_side_effects)]

/// A parsed value. Object keys keep their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(u64),
    Str(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

const MAX_DEPTH: usize = 32;

/// Parse a whole document; the error says what is wrong and at which byte.
pub fn parse(text: &[u8]) -> Result<Value, String> {
    let mut p = Parser { s: text, at: 0 };
    let v = p.value(0)?;
    p.space();
    if p.at < p.s.len() {
        return Err(p.fail("trailing data after the document"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn fail(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at = self.at.saturating_add(1);
        Some(c)
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at = self.at.saturating_add(1);
        }
    }

    fn eat(&mut self, word: &[u8]) -> bool {
        let end = self.at.saturating_add(word.len());
        if self.s.get(self.at..end) == Some(word) {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        let inner = depth.saturating_add(1);
        self.space();
        match self.peek() {
            Some(b'{') => self.object(inner),
            Some(b'[') => self.array(inner),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'0'..=b'9') => self.int(),
            Some(b'-') => Err(self.fail("a negative number")),
            _ if self.eat(b"true") => Ok(Value::Bool(true)),
            _ if self.eat(b"false") => Ok(Value::Bool(false)),
            _ if self.eat(b"null") => Ok(Value::Null),
            None => Err(self.fail("the document ends early")),
            Some(_) => Err(self.fail("not a JSON value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        self.bump();
        let mut fields: Vec<(String, Value)> = Vec::new();
        self.space();
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Value::Object(fields));
        }
        loop {
            self.space();
            if self.peek() != Some(b'"') {
                return Err(self.fail("expected a string key"));
            }
            let key = self.string()?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(self.fail(&format!("duplicate key {key:?}")));
            }
            self.space();
            if self.bump() != Some(b':') {
                return Err(self.fail("expected ':'"));
            }
            let v = self.value(depth)?;
            fields.push((key, v));
            self.space();
            match self.bump() {
                Some(b',') => {}
                Some(b'}') => return Ok(Value::Object(fields)),
                _ => return Err(self.fail("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        self.bump();
        let mut items = Vec::new();
        self.space();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.space();
            match self.bump() {
                Some(b',') => {}
                Some(b']') => return Ok(Value::Array(items)),
                _ => return Err(self.fail("expected ',' or ']'")),
            }
        }
    }

    fn int(&mut self) -> Result<Value, String> {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at = self.at.saturating_add(1);
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(self.fail("a number that is not an integer"));
        }
        let digits = self.s.get(start..self.at).unwrap_or_default();
        if digits.len() > 1 && digits.first() == Some(&b'0') {
            return Err(self.fail("an integer with a leading zero"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .map(Value::Int)
            .ok_or_else(|| self.fail("an integer too large"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| char::from(c).to_digit(16))
                .ok_or_else(|| self.fail("a bad \\u escape"))?;
            v = v << 4 | d;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.bump();
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.fail("a string that does not end")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let c = match self.bump() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(self.fail("a bad escape")),
                    };
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
                Some(c) if c < 0x20 => return Err(self.fail("a control character in a string")),
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.fail("a string that is not UTF-8"))
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.eat(b"\\u") {
                return Err(self.fail("a lone surrogate"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.fail("a lone surrogate"));
            }
            0x10000 | (hi & 0x3FF) << 10 | (lo & 0x3FF)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.fail("a lone surrogate"))
    }
}

/// Append `s` as a JSON string: quotes, backslashes and control characters escaped, the rest as
/// UTF-8.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_python_writes() {
        let v =
            parse(br#" {"a": [1, 22, {"b": null}], "c\u00e9\ud83d\ude00": "x\"y\n", "t": true} "#)
                .unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::Array(vec![
                Value::Int(1),
                Value::Int(22),
                Value::Object(vec![("b".into(), Value::Null)])
            ]))
        );
        assert_eq!(
            v.get("c\u{e9}\u{1F600}"),
            Some(&Value::Str("x\"y\n".into()))
        );
        assert_eq!(v.get("t"), Some(&Value::Bool(true)));
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        for (text, want) in [
            (&b"{\"a\":1,\"a\":2}"[..], "duplicate key"),
            (b"1.5", "not an integer"),
            (b"-1", "negative"),
            (b"01", "leading zero"),
            (b"99999999999999999999", "too large"),
            (b"{\"a\":1} x", "trailing data"),
            (b"\"\\ud800\"", "lone surrogate"),
            (b"\"a\x01\"", "control character"),
            (b"\"\xff\"", "not UTF-8"),
            (b"{\"a\" 1}", "expected ':'"),
            (b"[1 2]", "expected ','"),
            (b"", "ends early"),
            (b"nul", "not a JSON value"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(text)
            );
        }
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(parse(deep.as_bytes())
            .unwrap_err()
            .contains("nested too deeply"));
    }

    #[test]
    fn strings_round_trip() {
        let s = "a\"b\\c\u{1}\u{e9}";
        let mut out = String::new();
        write_string(&mut out, s);
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001\u{e9}\"");
        assert_eq!(parse(out.as_bytes()).unwrap(), Value::Str(s.into()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
