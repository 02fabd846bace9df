//! `lockcheck model`: model-checks lock algorithms (stateright actor systems) exhaustively
//! and prints states, states/s, each property's verdict and the shortest counterexample of
//! each violation as a numbered trace.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use lockcheck_model::systems::{self, CheckOptions, Options, Outcome, Progress, System, Verdict};
use lockcheck_report::documents::{Document, ModelDocument};

/// Arguments of `lockcheck model`.
#[derive(clap::Args)]
pub struct Args {
    /// The system to check (see --list); none = every system, with a summary table.
    system: Option<String>,
    /// List the systems with what they model and what is expected of them.
    #[arg(long)]
    list: bool,
    /// Client actors.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Keys (client i locks key i % keys).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Stop exploring at this depth (the search is then incomplete: no "holds" verdicts).
    #[arg(long)]
    depth: Option<usize>,
    /// For a flawed system: stop once its expected violations are found (the rest of its
    /// properties are then unknown). For state spaces too large to exhaust.
    #[arg(long)]
    until_expected: bool,
    /// Explore every state, without reductions (client and instance symmetry, garbage in
    /// flight, clients taking their replies at once): for comparison, the verdicts must be
    /// the same, the state count larger.
    #[arg(long)]
    no_reduction: bool,
    /// Checker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Serve stateright's Explorer on this address (e.g. 127.0.0.1:3000) instead of checking.
    #[arg(long, value_name = "ADDR")]
    explore: Option<String>,
    /// Write the outcomes as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.list {
        for system in systems::SYSTEMS {
            let expectation = if system.correct {
                "expected: every property holds".to_string()
            } else {
                format!("expected violations: {}", system.expected.join("; "))
            };
            println!("{:<24} {}\n{:<24} {expectation}\n", system.name, system.summary, "");
        }
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    let options = Options { clients: args.clients, keys: args.keys };
    let selected: Vec<&'static System> = match &args.system {
        Some(name) => vec![systems::find(name).with_context(|| {
            let names: Vec<_> = systems::SYSTEMS.iter().map(|s| s.name).collect();
            format!("no system {name:?}; known: {}", names.join(", "))
        })?],
        None => systems::SYSTEMS.iter().collect(),
    };
    if let Some(address) = &args.explore {
        let [system] = selected.as_slice() else { anyhow::bail!("--explore needs one SYSTEM") };
        eprintln!("serving stateright's Explorer for {} on http://{address}/", system.name);
        system.explore(&options, address);
    }
    let mut outcomes = Vec::new();
    let mut as_expected = true;
    for system in &selected {
        let check = CheckOptions {
            threads: args.threads.unwrap_or(CheckOptions::default().threads),
            max_depth: args.depth,
            until_violated: if args.until_expected { system.expected.to_vec() } else { Vec::new() },
            reduce: !args.no_reduction,
            take_replies_at_once: !args.no_reduction,
        };
        let outcome = system.check(&options, &check, &mut |p: Progress| {
            eprint!(
                "\r{}: {} unique states ({} generated), {:.0} states/s, {:.1}s   ",
                system.name,
                p.unique_states,
                p.states,
                p.unique_states as f64 / p.elapsed.as_secs_f64().max(1e-9),
                p.elapsed.as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        });
        eprint!("\r{:80}\r", "");
        let ok = system.as_expected(&outcome) && (outcome.complete || !system.correct);
        as_expected &= ok;
        if selected.len() == 1 {
            print_outcome(system, &outcome, ok);
        }
        outcomes.push((system, outcome, ok));
    }
    if selected.len() > 1 {
        print_table(&outcomes);
    }
    if let Some(path) = &args.json {
        ModelDocument { outcomes: outcomes.iter().map(|(_, o, _)| o.clone()).collect() }.write(path)?;
    }
    Ok(if as_expected { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_outcome(system: &System, outcome: &Outcome, ok: bool) {
    println!("{} — {}", system.name, system.summary);
    println!("{}\n", system.doc);
    println!(
        "{} clients, {} key(s): {} unique states{}{} ({} generated), max depth {}, {:.2}s, {:.0} states/s{}",
        outcome.clients,
        outcome.keys,
        outcome.unique_states,
        match (outcome.reduced, outcome.symmetry, outcome.server_symmetry) {
            (true, true, true) => " up to client and instance symmetry and garbage in flight",
            (true, true, false) => " up to client symmetry and garbage in flight",
            (true, false, _) => " up to garbage in flight",
            (false, ..) => "",
        },
        if outcome.replies_taken_at_once { ", clients taking their replies at once" } else { "" },
        outcome.states,
        outcome.max_depth,
        outcome.seconds,
        outcome.states_per_second,
        if outcome.complete { ", exhaustive" } else { ", INCOMPLETE" }
    );
    for property in &outcome.properties {
        let verdict = match &property.verdict {
            Verdict::Holds => "holds",
            Verdict::Violated { .. } => "VIOLATED",
            Verdict::Unknown => "unknown (search incomplete)",
        };
        // The property of P1-P10 it checks, where it checks one.
        let checks = property.property.map(|p| format!("[{}] ", p.code())).unwrap_or_default();
        println!("  {checks:<6}{:<55} {verdict}", property.name);
    }
    for property in &outcome.properties {
        if let Verdict::Violated { trace } = &property.verdict {
            println!("\nCounterexample for \"{}\" ({} steps):", property.name, trace.len());
            for line in trace {
                println!("{line}");
            }
        }
    }
    println!(
        "\n{}",
        if ok {
            "as expected".to_string()
        } else if system.correct {
            "UNEXPECTED: a correct system violates a property, or the search did not finish".to_string()
        } else {
            format!("UNEXPECTED: an expected violation was not found ({})", system.expected.join("; "))
        }
    );
}

fn print_table(outcomes: &[(&&System, Outcome, bool)]) {
    println!("{:<24} {:>10} {:>10} {:>8} {:>6}  violated", "system", "states", "states/s", "seconds", "ok");
    for (system, outcome, ok) in outcomes {
        let violated = outcome.violated();
        println!(
            "{:<24} {:>10} {:>10.0} {:>8.2} {:>6}  {}",
            system.name,
            outcome.unique_states,
            outcome.states_per_second,
            outcome.seconds,
            if *ok { "yes" } else { "NO" },
            if violated.is_empty() { "-".to_string() } else { violated.join("; ") }
        );
    }
}
