//! The classic Prometheus text format (0.0.4) from prometheus-client's
//! OpenMetrics text, for scrapers that do not ask for OpenMetrics (curl,
//! `promtool check metrics`, older Prometheus servers).
//!
//! Hand-written because prometheus-client encodes OpenMetrics only, and
//! the two formats differ in three places: a counter's `# HELP`/`# TYPE`
//! name is the sample name with `_total` in 0.0.4 and without it in
//! OpenMetrics; `# UNIT` lines and the `# EOF` terminator are
//! OpenMetrics-only. Samples are the same lines in both.

/// `text` (OpenMetrics, as prometheus-client writes it) in 0.0.4 format.
pub fn to_text_004(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Counter families, from their `# TYPE` lines (which come after `# HELP`).
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_gain_total_and_openmetrics_lines_go() {
        let om = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_count 1\n\
                  # HELP b B things.\n# TYPE b counter\nb_total{x=\"1\"} 2\n# EOF\n";
        assert_eq!(
            super::to_text_004(om),
            "# HELP a_seconds A.\n# TYPE a_seconds histogram\na_seconds_count 1\n\
             # HELP b_total B things.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\n"
        );
    }
}
