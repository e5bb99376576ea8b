//! Line numbers for configuration problems: the line a byte offset is on,
//! and the line of a key path such as `zone[0].records[1].value`, found
//! through the spans of the TOML parser (so that `switchyard check` can
//! point at `FILE:LINE` the way a compiler does).

use toml::de::{DeTable, DeValue};

/// The 1-based line holding byte `offset` of `text`.
pub fn line_at(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes()[..end].iter().filter(|b| **b == b'\n');
    u32::try_from(newlines.count()).map_or(u32::MAX, |n| n.saturating_add(1))
}

/// The line of the deepest part of `path` (dotted keys, `[i]` for an
/// element of an array) that `text` holds: the key's own line when the
/// full path is there, else its nearest table's. `None` when `text` does
/// not parse or holds no part of it.
pub fn key_line(text: &str, path: &str) -> Option<u32> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut found = None;
    for segment in path.split('.') {
        let (key, indices) = split_indices(segment);
        if let Some(v) = value {
            match v {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            break;
        };
        found = Some(k.span().start);
        let mut v = v;
        for i in indices {
            let DeValue::Array(a) = v.get_ref() else {
                return found.map(|o| line_at(text, o));
            };
            let Some(element) = a.get(i) else {
                return found.map(|o| line_at(text, o));
            };
            found = Some(element.span().start);
            v = element;
        }
        value = Some(v.get_ref());
    }
    found.map(|o| line_at(text, o))
}

/// `records[2][0]` → (`records`, [2, 0]).
fn split_indices(segment: &str) -> (&str, Vec<usize>) {
    let key_end = segment.find('[').unwrap_or(segment.len());
    let indices = segment[key_end..]
        .split('[')
        .filter_map(|s| s.strip_suffix(']')?.parse().ok())
        .collect();
    (&segment[..key_end], indices)
}

/// The key path a checked configuration message starts with
/// (`zone[0].records[1].value: ...` → `zone[0].records[1].value`).
pub fn message_key(message: &str) -> Option<&str> {
    let (key, _) = message.split_once(": ")?;
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[]".contains(c));
    plain.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nhttp = \"x\"\n\n[[zone]]\nname = \"a.test\"\n[[zone.records]]\nname = \"w\"\nvalue = \"1.2.3\"\n[[zone.records]]\nname = \"v\"\nvalue = \"1.2.3.4\"\n";

    #[test]
    fn keys_find_their_lines() {
        assert_eq!(key_line(TEXT, "server.http"), Some(2));
        assert_eq!(key_line(TEXT, "zone[0].records[0].value"), Some(8));
        assert_eq!(key_line(TEXT, "zone[0].records[1].name"), Some(10));
        // The nearest part that is there.
        assert_eq!(key_line(TEXT, "server.nope"), Some(1));
        assert_eq!(key_line(TEXT, "geo.city"), None);
        assert_eq!(message_key("server.http: 'x' is bad"), Some("server.http"));
        assert_eq!(message_key("cannot read: no such file"), None);
    }
}
