//! YAML → JSON value with the position of every node, so that any error found later (by serde
//! or by validation) can be reported as `file:line:column` from its path.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// A parsed document and where each path starts. Paths are spelled as serde_path_to_error
/// prints them: `a.b[0].c`; the root is `.`.
#[derive(Debug, Default)]
pub struct Spanned {
    pub value: Value,
    pub positions: HashMap<String, Pos>,
}

impl Spanned {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn pos(&self, path: &str) -> Pos {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(0) | None => {
                    return self
                        .positions
                        .get(".")
                        .copied()
                        .unwrap_or(Pos { line: 1, col: 1 })
                }
                Some(i) => p.truncate(i),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct YamlError {
    pub pos: Pos,
    pub msg: String,
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<(String, Pos)>,
        anchor: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    positions: HashMap<String, Pos>,
    anchors: HashMap<usize, Value>,
    error: Option<YamlError>,
    documents: usize,
}

fn join(parent: &str, key: &str) -> String {
    if parent == "." {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// YAML 1.2 core schema for plain scalars; quoted scalars are always strings.
fn scalar(s: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(s);
    }
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if s.chars().any(|c| c.is_ascii_digit()) && !s.contains(':') {
        if let Ok(f) = s.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(s)
}

impl Builder {
    /// The path the next value gets, from the enclosing frame.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => ".".to_string(),
            Some(Frame::Seq { path, items, .. }) => {
                format!("{}[{}]", if path == "." { "" } else { path }, items.len())
            }
            Some(Frame::Map {
                path,
                key: Some((k, _)),
                ..
            }) => join(path, k),
            Some(Frame::Map { path, .. }) => path.clone(),
        }
    }

    fn fail(&mut self, pos: Pos, msg: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                pos,
                msg: msg.into(),
            });
        }
    }

    /// Attach a finished value to the enclosing frame (or make it the root).
    fn push_value(&mut self, v: Value, pos: Pos) {
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq { items, .. }) => items.push(v),
            Some(Frame::Map { map, key, .. }) => match key.take() {
                None => {
                    let Value::String(k) = v else {
                        let k = v.to_string();
                        self.fail(pos, format!("mapping key {k} is not a string"));
                        return;
                    };
                    if map.contains_key(&k) {
                        self.fail(pos, format!("duplicate key {k:?}"));
                        return;
                    }
                    *key = Some((k, pos));
                }
                Some((k, _)) => {
                    map.insert(k, v);
                }
            },
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(pos, "more than one YAML document in the file");
                }
            }
            Event::Scalar(s, style, anchor, _) => {
                let key_position = self.is_key_position();
                let v = if key_position {
                    Value::String(s)
                } else {
                    scalar(s, style)
                };
                if !key_position {
                    let path = self.next_path();
                    self.positions.entry(path).or_insert(pos);
                } else if let Some(Frame::Map { path, .. }) = self.stack.last() {
                    if let Value::String(k) = &v {
                        self.positions.insert(join(path, k), pos);
                    }
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                self.push_value(v, pos);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.next_path();
                self.positions.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.is_key_position() {
                    self.fail(pos, "complex mapping keys are not supported");
                    return;
                }
                let path = self.next_path();
                self.positions.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor, .. }) = self.stack.pop() {
                    let v = Value::Array(items);
                    if anchor > 0 {
                        self.anchors.insert(anchor, v.clone());
                    }
                    self.push_value(v, pos);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { map, anchor, .. }) = self.stack.pop() {
                    let v = Value::Object(map);
                    if anchor > 0 {
                        self.anchors.insert(anchor, v.clone());
                    }
                    self.push_value(v, pos);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => self.push_value(v, pos),
                None => self.fail(pos, "alias to an unknown or unsupported anchor"),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Parse one YAML document. An empty document is `null`.
pub fn parse(text: &str) -> Result<Spanned, YamlError> {
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        positions: HashMap::new(),
        anchors: HashMap::new(),
        error: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        let m = *e.marker();
        return Err(YamlError {
            pos: Pos::from(m),
            msg: e.info().to_string(),
        });
    }
    if let Some(e) = b.error {
        return Err(e);
    }
    b.positions
        .entry(".".into())
        .or_insert(Pos { line: 1, col: 1 });
    Ok(Spanned {
        value: b.root.unwrap_or(Value::Null),
        positions: b.positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_positions() {
        let s = parse("a: 1\nb:\n  - x\n  - \"2\"\nc: {d: true, e: ~}\n").unwrap();
        assert_eq!(
            s.value,
            serde_json::json!({"a": 1, "b": ["x", "2"], "c": {"d": true, "e": null}})
        );
        assert_eq!(s.pos("a"), Pos { line: 1, col: 1 });
        assert_eq!(s.pos("b[1]"), Pos { line: 4, col: 5 });
        assert_eq!(s.pos("c.d"), Pos { line: 5, col: 5 });
        assert_eq!(s.pos("c.missing"), Pos { line: 5, col: 1 });
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(e.msg.contains("duplicate"));
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.pos.line >= 1);
    }

    #[test]
    fn anchors_expand() {
        let s = parse("x: &n [1]\ny: *n\n").unwrap();
        assert_eq!(s.value["y"], serde_json::json!([1]));
    }
}
