//! Which diagnostics a person sees: every error, and the first few warnings of each code;
//! the rest of a code are counted in one line, as rustc's "and N more".
//!
//! Why: 20,000 unreachable services are one problem said 20,000 times. Machine formats
//! (`json`, `sarif`) always carry everything; `--all-warnings` shows everything here too.

use std::collections::BTreeMap;

use super::Diagnostic;

/// Warnings of one code shown before the rest are summarised.
pub const WARNINGS_SHOWN_PER_CODE: usize = 5;

pub struct Summary<'a> {
    /// In the order given.
    pub shown: Vec<&'a Diagnostic>,
    /// Per warning code with more than are shown, by code.
    pub hidden: Vec<Hidden>,
}

/// Warnings of one code left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    pub code: &'static str,
    pub count: usize,
}

impl Hidden {
    /// The line that stands for them.
    pub fn line(&self) -> String {
        let s = if self.count == 1 { "" } else { "s" };
        format!(
            "warning: {} more `{}` warning{s} not shown, like the {WARNINGS_SHOWN_PER_CODE} above (--all-warnings shows every one)",
            self.count, self.code
        )
    }
}

pub fn summarise(diagnostics: &[Diagnostic], all_warnings: bool) -> Summary<'_> {
    if all_warnings {
        return Summary {
            shown: diagnostics.iter().collect(),
            hidden: Vec::new(),
        };
    }
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut shown = Vec::new();
    for d in diagnostics {
        if !d.is_error() {
            let n = seen.entry(d.code).or_default();
            *n += 1;
            if *n > WARNINGS_SHOWN_PER_CODE {
                continue;
            }
        }
        shown.push(d);
    }
    let hidden = seen
        .into_iter()
        .filter(|&(_, n)| n > WARNINGS_SHOWN_PER_CODE)
        .map(|(code, n)| Hidden {
            code,
            count: n - WARNINGS_SHOWN_PER_CODE,
        })
        .collect();
    Summary { shown, hidden }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_and_warnings_beyond_a_few_per_code_are_counted() {
        let mut list = Vec::new();
        for i in 0..8 {
            list.push(Diagnostic::warning("wepoq::a", format!("a{i}")));
            list.push(Diagnostic::error("wepoq::e", format!("e{i}")));
        }
        list.push(Diagnostic::warning("wepoq::b", "b"));
        let s = summarise(&list, false);
        let count = |code: &str| s.shown.iter().filter(|d| d.code == code).count();
        assert_eq!(count("wepoq::e"), 8);
        assert_eq!(count("wepoq::a"), WARNINGS_SHOWN_PER_CODE);
        assert_eq!(count("wepoq::b"), 1);
        assert_eq!(
            s.hidden,
            [Hidden {
                code: "wepoq::a",
                count: 8 - WARNINGS_SHOWN_PER_CODE
            }]
        );
        // The first ones are the ones shown.
        assert_eq!(s.shown[0].message, "a0");
        let all = summarise(&list, true);
        assert_eq!((all.shown.len(), all.hidden.len()), (list.len(), 0));
    }
}
