//! Label selectors (`tier=edge,region!=eu`) and label syntax.
//!
//! A selector is a comma-separated list of requirements that must all hold:
//! `k=v` (the label is `v`) or `k!=v` (the label is absent or not `v`), as
//! Kubernetes equality selectors read. Keys and values share one small
//! alphabet so a selector never needs quoting in a URL, a shell or a TOML
//! string; anything else is refused with the offending part named.

use std::collections::BTreeMap;
use std::fmt;

/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;
/// Most requirements in one selector.
pub const MAX_REQUIREMENTS: usize = 32;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`: the label is present with this value.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Why a selector or label does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// Checks a label key: 1–63 of `A-Z a-z 0-9 . _ / -`, starting with a
/// letter or digit.
pub fn check_key(key: &str) -> Result<(), SyntaxError> {
    check_word(key, "key", false)
}

/// Checks a label value: up to 63 of `A-Z a-z 0-9 . _ -` (may be empty).
pub fn check_value(value: &str) -> Result<(), SyntaxError> {
    check_word(value, "value", true)
}

fn check_word(w: &str, what: &str, may_be_empty: bool) -> Result<(), SyntaxError> {
    if w.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err(SyntaxError(format!("label {what} is empty")))
        };
    }
    if w.len() > MAX_LABEL_LEN {
        return Err(SyntaxError(format!(
            "label {what} '{}…' is longer than {MAX_LABEL_LEN} characters",
            w.chars().take(16).collect::<String>()
        )));
    }
    let slash_ok = what == "key";
    if !w.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(SyntaxError(format!(
            "label {what} '{w}' must start with a letter or digit"
        )));
    }
    if let Some(c) = w.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' || (slash_ok && c == '/'))
    }) {
        return Err(SyntaxError(format!(
            "label {what} '{w}' has the character {c:?} (allowed: letters, digits, '.', '_', '-'{})",
            if slash_ok { ", '/'" } else { "" }
        )));
    }
    Ok(())
}

/// Parses `k=v,k2=v2` labels (the CLI's and `RawLabels`' form).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, SyntaxError> {
    let mut out = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    for part in text.split(',') {
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            return Err(SyntaxError(format!("label '{part}' is not k=v")));
        };
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(SyntaxError(format!("label '{k}' is given twice")));
        }
    }
    Ok(out)
}

impl Selector {
    /// Parses a selector. Whitespace around parts is ignored; an empty
    /// selector, an empty part, or anything but `k=v` / `k!=v` is an error.
    pub fn parse(text: &str) -> Result<Selector, SyntaxError> {
        if text.trim().is_empty() {
            return Err(SyntaxError(
                "selector is empty (give k=v or k!=v, comma-separated)".into(),
            ));
        }
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(SyntaxError(format!(
                    "selector '{text}' has an empty requirement"
                )));
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else {
                return Err(SyntaxError(format!(
                    "selector requirement '{part}' is not k=v or k!=v"
                )));
            };
            let (Requirement::Equals(k, v) | Requirement::NotEquals(k, v)) = &req;
            check_key(k).map_err(|e| SyntaxError(format!("selector '{part}': {e}")))?;
            check_value(v).map_err(|e| SyntaxError(format!("selector '{part}': {e}")))?;
            requirements.push(req);
        }
        if requirements.len() > MAX_REQUIREMENTS {
            return Err(SyntaxError(format!(
                "selector has {} requirements (at most {MAX_REQUIREMENTS})",
                requirements.len()
            )));
        }
        Ok(Selector { requirements })
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        })
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    /// The canonical form: `k=v,k!=v`, no spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality() {
        let s = Selector::parse("tier=edge, region!=eu").unwrap();
        assert_eq!(s.to_string(), "tier=edge,region!=eu");
        assert!(s.matches(&labels(&[("tier", "edge"), ("region", "us")])));
        assert!(s.matches(&labels(&[("tier", "edge")])), "absent is not eu");
        assert!(!s.matches(&labels(&[("tier", "edge"), ("region", "eu")])));
        assert!(!s.matches(&labels(&[("tier", "origin")])));
        assert!(
            Selector::parse("a==b")
                .unwrap()
                .matches(&labels(&[("a", "b")]))
        );
        assert!(
            Selector::parse("team/app=x.y_z-1")
                .unwrap()
                .matches(&labels(&[("team/app", "x.y_z-1")]))
        );
        // An empty value: the label is present and empty.
        let empty = Selector::parse("canary=").unwrap();
        assert!(empty.matches(&labels(&[("canary", "")])));
        assert!(!empty.matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_name_the_part() {
        for (bad, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("tier", "'tier' is not k=v"),
            ("tier=edge,", "empty requirement"),
            (",tier=edge", "empty requirement"),
            ("=edge", "key is empty"),
            ("tier=ed ge", "' '"),
            ("tier in (a,b)", "not k=v"),
            ("ti*r=edge", "'*'"),
            ("-tier=edge", "start with"),
            ("tier=a/b", "'/'"),
            ("tier=é", "'é'"),
        ] {
            let e = Selector::parse(bad).expect_err(bad).0;
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        let long = format!("k={}", "v".repeat(64));
        assert!(Selector::parse(&long).unwrap_err().0.contains("longer"));
        let many = vec!["a=b"; 33].join(",");
        assert!(Selector::parse(&many).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_labels("tier=edge, region=eu").unwrap(),
            labels(&[("tier", "edge"), ("region", "eu")])
        );
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("tier").is_err());
        assert!(parse_labels("a=b,a=c").unwrap_err().0.contains("twice"));
        assert!(parse_labels("a=b c").is_err());
    }

    proptest! {
        /// Any input: no panic, and what parses prints back to itself.
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            if let Ok(s) = Selector::parse(&text) {
                let again = Selector::parse(&s.to_string()).expect("canonical form parses");
                prop_assert_eq!(again, s);
            }
            let _ = parse_labels(&text);
        }

        /// Selectors built from valid words always parse and match labels
        /// built to satisfy them.
        #[test]
        fn built_selectors_match(
            pairs in proptest::collection::btree_map("[a-z][a-z0-9._-]{0,8}", "[a-z0-9]{0,6}", 1..6)
        ) {
            let text = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let s = Selector::parse(&text).expect("valid selector");
            let map: BTreeMap<String, String> = pairs.clone().into_iter().collect();
            prop_assert!(s.matches(&map));
            let negated = pairs.iter().map(|(k, v)| format!("{k}!={v}")).collect::<Vec<_>>().join(",");
            prop_assert!(!Selector::parse(&negated).expect("valid").matches(&map));
        }
    }
}
