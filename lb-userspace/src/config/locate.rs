//! Maps a field path (`l4.vips[0].backends[1].weight`, serde_path_to_error's
//! notation) to its line and column in the YAML text, so checks made after
//! parsing can point at the exact place, as parse errors do.
//!
//! serde deserializers do not keep positions once a value is built, so the
//! text is walked a second time with yaml-rust2's marked event parser.
use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// 1-based (line, column) of every key and value in a YAML document.
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Walks `text`; a text that does not parse yields no positions (the
    /// serde pass reports the syntax error itself).
    pub fn of(text: &str) -> Positions {
        let mut walker = Walker::default();
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Positions {
            values: walker.values,
            keys: walker.keys,
        }
    }

    /// Where the value at `path` starts, or its closest located ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p).or_else(|| self.keys.get(p)) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
}

impl Walker {
    /// The path of the node that starts now, if it is a value (not a key).
    fn next_value_path(&mut self, ev: &Event) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key.
                    if let Event::Scalar(s, ..) = ev {
                        *key = Some(s.clone());
                    } else {
                        *key = Some(String::from("?"));
                    }
                    None
                }
                Some(k) => Some(if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }),
            },
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(..) | Event::Alias(..) => {
                if let Some(path) = self.next_value_path(&ev) {
                    self.values.entry(path).or_insert(pos);
                } else if let (Some(Frame::Map { path, key: Some(k) }), Event::Scalar(..)) =
                    (self.stack.last(), &ev)
                {
                    // A block mapping's start mark is where the scanner saw
                    // its first ':'; its first key is where a reader looks.
                    self.values.entry(path.clone()).or_insert(pos);
                    // Remember the key's own position: a missing or bad
                    // value is best reported there when the value has none.
                    let full = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.keys.entry(full).or_insert(pos);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_value_path(&ev).unwrap_or_default();
                if matches!(ev, Event::SequenceStart(..)) {
                    self.values.entry(path.clone()).or_insert(pos);
                }
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let text = "instance: a\nl4:\n  vips:\n    - name: web\n      backends:\n        - address: 192.0.2.1\n          weight: 7\n";
        let p = Positions::of(text);
        assert_eq!(p.find("instance"), Some((1, 11)));
        assert_eq!(p.find("l4.vips[0].name"), Some((4, 13)));
        assert_eq!(p.find("l4.vips[0].backends[0].weight"), Some((7, 19)));
        // An unknown path falls back to its closest ancestor.
        assert_eq!(p.find("l4.vips[0].backends[0].mac"), Some((6, 11)));
    }
}
