//! How the commands that act on every server (`start`, `stop`, `status`,
//! `clean`) say what happened: one line per outcome, prefixed with the host
//! it concerns, then a summary line, and an error that names every host
//! that failed — so a job script's log shows at a glance which node to look
//! at, and the exit status says whether to look at all.

use anyhow::{bail, Result};
use sfs_global::hostfile::HostEntry;

/// What one part of a command came to on one host: one server (stop,
/// status) or all servers of the host (start and clean through a launcher).
pub struct Outcome {
    /// The host, as the hostfile writes it.
    pub host: String,
    /// The servers of the hostfile this outcome is about.
    pub servers: Vec<String>,
    /// What was done (lines for a person), or why it failed.
    pub result: Result<Vec<String>, String>,
}

impl Outcome {
    /// The outcome of one server.
    pub fn of_server(entry: &HostEntry, result: Result<String, String>) -> Outcome {
        Outcome {
            host: entry.host.clone(),
            servers: vec![entry.name.clone()],
            result: result.map(|line| vec![line]),
        }
    }

    /// `HOST (s1, s2)`, for the summary and the error.
    fn named(&self) -> String {
        format!("{} ({})", self.host, self.servers.join(", "))
    }
}

/// The hosts of `outcomes`, each once, in order of first appearance.
fn distinct_hosts<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Vec<&'a str> {
    let mut hosts: Vec<&str> = Vec::new();
    for outcome in outcomes {
        if !hosts.contains(&outcome.host.as_str()) {
            hosts.push(&outcome.host);
        }
    }
    hosts
}

/// A line of a report, and where it goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// What was done: standard output.
    Done(String),
    /// Why something failed: error output (seen also when the report is
    /// redirected to a file).
    Failed(String),
}

/// The lines [`print`] writes before its summary: `HOST: line` per line of
/// a success, `HOST: FAILED (SERVERS): reason` per failure, a reason's
/// further lines indented under it.
pub fn lines(outcomes: &[Outcome]) -> Vec<Line> {
    let mut lines = Vec::new();
    for outcome in outcomes {
        match &outcome.result {
            Ok(done) => lines.extend(
                done.iter()
                    .map(|l| Line::Done(format!("{}: {l}", outcome.host))),
            ),
            Err(reason) => {
                let mut reason_lines = reason.trim_end().lines();
                let first = reason_lines.next().unwrap_or("(no reason given)");
                lines.push(Line::Failed(format!(
                    "{}: FAILED ({}): {first}",
                    outcome.host,
                    outcome.servers.join(", ")
                )));
                lines.extend(reason_lines.map(|l| Line::Failed(format!("    {l}"))));
            }
        }
    }
    lines
}

/// The summary line: how many hosts succeeded, and which failed.
pub fn summary(command: &str, outcomes: &[Outcome]) -> String {
    let hosts = distinct_hosts(outcomes.iter());
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let failed_hosts = distinct_hosts(failed.iter().copied());
    let servers: usize = outcomes.iter().map(|o| o.servers.len()).sum();
    let mut line = format!(
        "sfs {command}: {} of {} host(s) ok ({servers} server(s))",
        hosts.len() - failed_hosts.len(),
        hosts.len()
    );
    if !failed.is_empty() {
        let named: Vec<String> = failed.iter().map(|o| o.named()).collect();
        line.push_str(&format!("; failed: {}", named.join(", ")));
    }
    line
}

/// Prints [`lines`] (failures on error output) and the [`summary`] on
/// standard output; fails, naming each failed host and its servers, when
/// any outcome failed.
pub fn print(command: &str, outcomes: &[Outcome]) -> Result<()> {
    for line in lines(outcomes) {
        match line {
            Line::Done(line) => outln!("{line}")?,
            Line::Failed(line) => eprintln!("{line}"),
        }
    }
    outln!("{}", summary(command, outcomes))?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(Outcome::named)
        .collect();
    if !failed.is_empty() {
        let hosts = distinct_hosts(outcomes.iter().filter(|o| o.result.is_err())).len();
        bail!("{command} failed on {hosts} host(s): {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(host: &str, server: &str, result: Result<&str, &str>) -> Outcome {
        Outcome {
            host: host.into(),
            servers: vec![server.into()],
            result: result.map(|l| vec![l.to_string()]).map_err(str::to_string),
        }
    }

    #[test]
    fn lines_name_the_host_and_a_failure_its_servers() {
        let outcomes = [
            outcome("n1", "s1", Ok("server s1 ready")),
            outcome("n2", "s2", Err("ssh: connection refused\nsecond line")),
        ];
        assert_eq!(
            lines(&outcomes),
            [
                Line::Done("n1: server s1 ready".into()),
                Line::Failed("n2: FAILED (s2): ssh: connection refused".into()),
                Line::Failed("    second line".into())
            ]
        );
        assert_eq!(
            summary("start", &outcomes),
            "sfs start: 1 of 2 host(s) ok (2 server(s)); failed: n2 (s2)"
        );
    }

    #[test]
    fn a_host_with_one_failed_server_of_two_counts_as_failed() {
        let outcomes = [
            outcome("n1", "a", Ok("stopped")),
            outcome("n1", "b", Err("timeout")),
        ];
        assert_eq!(
            summary("stop", &outcomes),
            "sfs stop: 0 of 1 host(s) ok (2 server(s)); failed: n1 (b)"
        );
    }
}
