//! How topics and consumer groups print: one listing table, one description head and one history
//! table for both, since both go through the same approval (requested, approved or rejected, by
//! whom, when, why). A leaf module.

use meridian_proto::admin::{Approval, Decision, format_time_ms};

/// Prints a listing: one row per item (name, its approval, owner, and the `last` column's text),
/// under a header naming the item `kind` (`TOPIC`, `GROUP`).
pub fn print_list<'a>(
    kind: &str,
    last: &str,
    rows: impl Iterator<Item = (&'a String, &'a Approval, &'a String, String)>,
) {
    println!(
        "{:<32} {:<10} {:<16} {:<24} {last}",
        kind, "STATUS", "OWNER", "REQUESTED BY"
    );
    for (name, approval, owner, last) in rows {
        println!(
            "{:<32} {:<10} {:<16} {:<24} {}",
            name,
            approval.status.to_string(),
            owner,
            approval.requested_by,
            last
        );
    }
}

/// Prints the head of a `describe`: the name, its status, owner, description, and who requested
/// and decided it, when and why. `kind` is `topic` or `group`.
pub fn print_approval_head(kind: &str, name: &str, approval: &Approval, owner: &str, description: &str) {
    println!("{kind:<13}{name}");
    println!("status       {}", approval.status);
    println!("owner        {owner}");
    if !description.is_empty() {
        println!("description  {description}");
    }
    println!(
        "requested    by {} at {}",
        approval.requested_by,
        format_time_ms(approval.requested_at_ms)
    );
    if let (Some(by), Some(at)) = (&approval.decided_by, approval.decided_at_ms) {
        println!(
            "decided      by {by} at {}{}",
            format_time_ms(at),
            approval
                .decision_reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        );
    }
}

/// Prints a topic's or group's history, oldest first.
pub fn print_history(history: &[Decision]) {
    println!("{:<22} {:<10} {:<20} WHY / WHAT", "WHEN", "ACTION", "BY");
    for decision in history {
        let mut why = decision.reason.clone().unwrap_or_default();
        if let Some(detail) = &decision.detail {
            if !why.is_empty() {
                why.push_str("; ");
            }
            why.push_str(detail);
        }
        println!(
            "{:<22} {:<10} {:<20} {}",
            format_time_ms(decision.at_ms),
            decision.action.to_string(),
            decision.by,
            why
        );
    }
}
