//! RG012: shell-form commands that do not pass SIGTERM on.

use crate::model::{Container, program_name};
use crate::yaml::Node;

use super::{Cx, Place};

impl<'a> Cx<'_, 'a> {
    /// RG012: a shell that won't pass SIGTERM on.
    pub(super) fn shell_form(&mut self, c: &Container<'a>, p: &Place<'_>) {
        if c.shim.is_some() {
            return;
        }
        let Some((script, node)) = shell_script(c) else {
            return;
        };
        if script.contains("trap ") {
            return;
        }
        let commands = split_commands(&script);
        let execs = |i: usize| {
            commands
                .get(i)
                .is_some_and(|(cmd, _)| cmd.split_whitespace().next() == Some("exec"))
        };
        let n = commands.len();
        let Some((last, joined)) = commands.last() else {
            return;
        };
        // `exec ./server || true`: what follows an `exec` runs only if it failed.
        if n < 2 || execs(n - 1) || (*joined && execs(n - 2)) {
            return;
        }
        self.report(
            "RG012",
            p,
            node.start,
            format!(
                "container '{}' runs its app from a shell script that does not `exec` it ('{last}'): SIGTERM stops at the shell",
                c.name
            ),
        );
    }
}

/// The script of a container run as `sh -c SCRIPT`, with the node holding it.
fn shell_script<'a>(c: &Container<'a>) -> Option<(String, &'a Node)> {
    let script = shell_argv_script(&c.argv)?;
    let node = c
        .node
        .get("command")
        .filter(|n| !n.items().is_empty())
        .or(c.node.get("args"))?;
    Some((script, node))
}

pub(super) fn shell_argv_script(argv: &[String]) -> Option<String> {
    let shell = program_name(argv.first()?);
    if !matches!(shell, "sh" | "bash" | "ash" | "dash" | "zsh" | "ksh") {
        return None;
    }
    let flag = argv[1..]
        .iter()
        .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))?;
    argv.get(flag + 2).cloned()
}

/// The simple commands of a shell script, split at `;`, `&&`, `||`, `|`, `&` and newlines
/// outside quotes (redirections such as `2>&1`, `&>` and `>|` are not separators), each
/// with whether `&&` or `||` joins it to the one before. Comments and blank parts are left
/// out.
pub(super) fn split_commands(script: &str) -> Vec<(String, bool)> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let mut joined = false;
    let mut quote = None;
    let mut chars = script.chars().peekable();
    let mut previous = ' ';
    let mut push = |current: &mut String, joined: bool| {
        let cmd = current.trim();
        if !cmd.is_empty() && !cmd.starts_with('#') {
            commands.push((cmd.to_owned(), joined));
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '&' | '|') if previous == '>' || chars.peek() == Some(&'>') => {}
            (None, '&' | '|') if chars.peek() == Some(&c) => {
                chars.next();
                push(&mut current, joined);
                joined = true;
                previous = c;
                continue;
            }
            (None, '\n' | ';' | '&' | '|') => {
                push(&mut current, joined);
                joined = false;
                previous = c;
                continue;
            }
            _ => {}
        }
        current.push(c);
        previous = c;
    }
    push(&mut current, joined);
    commands
}
