//! The override table: maps computed region/state codes to the operator's codes.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::GeoError;

/// The override table: computed code → operator code, for regions and states separately
/// because the same subdivision code yields both `XX-R-..` and `XX-S-..`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Overrides {
    #[serde(default)]
    pub(super) region: HashMap<String, String>,
    #[serde(default)]
    pub(super) state: HashMap<String, String>,
}

impl Overrides {
    pub(super) fn load(path: &Path) -> Result<Overrides, GeoError> {
        let text = std::fs::read_to_string(path).map_err(|reason| GeoError::OverridesOpen {
            path: path.to_owned(),
            reason,
        })?;
        Overrides::parse(&text).map_err(|message| GeoError::Overrides {
            path: path.to_owned(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Overrides, String> {
        let table: Overrides = toml::from_str(text).map_err(|e| {
            // toml's Display is a multi-line snippet; the CLI wants one line.
            match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line}, column {col}: {}", e.message().trim())
                }
                None => e.message().trim().to_owned(),
            }
        })?;
        // A key in the wrong table would silently never match; reject it instead.
        for (section, map, marker) in [
            ("region", &table.region, "-R-"),
            ("state", &table.state, "-S-"),
        ] {
            for (from, to) in map {
                if !from.contains(marker) || !to.contains(marker) {
                    return Err(format!(
                        "[{section}] \"{from}\" = \"{to}\": both codes must look like XX{marker}CODE"
                    ));
                }
            }
        }
        Ok(table)
    }

    pub(super) fn len(&self) -> usize {
        self.region.len() + self.state.len()
    }
}

/// 1-based line and column of a byte offset, for error messages.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_check_tables() {
        let ok = Overrides::parse("[region]\n\"GB-R-ENG\" = \"GB-R-ENGLAND\"\n[state]\n").unwrap();
        assert_eq!(ok.region["GB-R-ENG"], "GB-R-ENGLAND");
        assert_eq!(ok.len(), 1);

        let wrong_table = Overrides::parse("[state]\n\"GB-R-ENG\" = \"GB-R-X\"\n").unwrap_err();
        assert!(
            wrong_table.contains("[state] \"GB-R-ENG\""),
            "{wrong_table}"
        );

        let typo = Overrides::parse("[regions]\n\"A-R-B\" = \"A-R-C\"\n").unwrap_err();
        assert!(typo.starts_with("line 1,"), "{typo}");

        let syntax = Overrides::parse("[region]\n\"GB-R-ENG\" = \n").unwrap_err();
        assert!(syntax.starts_with("line 2,"), "{syntax}");
    }
}
