//! Data centers: the IDC map (CIDR rules, longest prefix wins) and failover drills (one data
//! center evacuated at a time, every step recorded with who and when). Pure code, over the rules
//! and drill [`super::MetadataState`] lends it for one command.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use meridian_proto::validate::validate_idc;

use super::brokers::BrokerGroup;
use super::error::{CommandError, require_person};

/// Records clients read as they are, defined in the admin contract.
pub use meridian_proto::admin::{Drill, DrillAction, DrillStep, IdcRule};

/// Drill steps kept; older ones are dropped.
pub const DRILL_HISTORY_LEN: usize = 256;

/// Parses a CIDR such as `10.1.0.0/16` or `fd00::/8` with std's address parser. Host bits must be
/// zero: `10.1.2.3/16` is refused with the network it probably meant.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), CommandError> {
    let invalid = |why: String| CommandError::Invalid {
        message: format!("IDC rule {cidr:?} is invalid: {why}"),
    };
    let Some((address, prefix)) = cidr.trim().split_once('/') else {
        return Err(invalid(
            "write it as ADDRESS/PREFIX, e.g. 10.1.0.0/16 or fd00::/8".into(),
        ));
    };
    let network: IpAddr = address
        .parse()
        .map_err(|_| invalid(format!("{address:?} is not an IPv4 or IPv6 address")))?;
    let width: u8 = if network.is_ipv4() { 32 } else { 128 };
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|prefix_len| *prefix_len <= width)
        .ok_or_else(|| invalid(format!("prefix {prefix:?} must be a number from 0 to {width}")))?;
    let bits = match network {
        IpAddr::V4(network) => u128::from(network.to_bits()),
        IpAddr::V6(network) => network.to_bits(),
    };
    let host_bits = u32::from(width - prefix_len);
    let network_bits = bits
        .checked_shr(host_bits)
        .unwrap_or(0)
        .checked_shl(host_bits)
        .unwrap_or(0);
    if network_bits != bits {
        let meant = match network {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from_bits(network_bits as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from_bits(network_bits)),
        };
        return Err(invalid(format!(
            "host bits are set; did you mean {meant}/{prefix_len}?"
        )));
    }
    Ok((network, prefix_len))
}

/// Maps `cidr` to data center `idc`, replacing the IDC of an existing rule for the same CIDR.
/// Returns the rule as set and the rules of other data centers whose addresses it shares.
pub(super) fn set_rule(
    rules: &mut Vec<IdcRule>,
    cidr: String,
    idc: String,
) -> Result<(IdcRule, Vec<IdcRule>), CommandError> {
    let (network, prefix_len) = parse_cidr(&cidr)?;
    let idc = idc.trim().to_owned();
    if idc.is_empty() {
        return Err(CommandError::Invalid {
            message: format!("IDC rule for {cidr:?} names no data center: give the IDC name"),
        });
    }
    validate_idc(&idc)?;
    let rule = IdcRule {
        network,
        prefix_len,
        idc,
    };
    let overlaps: Vec<IdcRule> = rules
        .iter()
        .filter(|other| other.overlaps(&rule) && other.idc != rule.idc)
        .filter(|other| !(other.network == network && other.prefix_len == prefix_len))
        .cloned()
        .collect();
    match rules
        .iter_mut()
        .find(|existing| existing.network == network && existing.prefix_len == prefix_len)
    {
        Some(existing) => existing.idc.clone_from(&rule.idc),
        None => rules.push(rule.clone()),
    }
    Ok((rule, overlaps))
}

/// Removes the rule for `cidr`.
pub(super) fn remove_rule(rules: &mut Vec<IdcRule>, cidr: String) -> Result<(), CommandError> {
    let (network, prefix_len) = parse_cidr(&cidr)?;
    let before = rules.len();
    rules.retain(|rule| !(rule.network == network && rule.prefix_len == prefix_len));
    if rules.len() == before {
        return Err(CommandError::IdcRuleNotFound {
            cidr: format!("{network}/{prefix_len}"),
        });
    }
    Ok(())
}

/// The rule an address falls under: the longest matching prefix; among rules of the same length,
/// the one added first. IPv4-mapped IPv6 addresses match IPv4 rules.
pub fn rule_for(rules: &[IdcRule], address: IpAddr) -> Option<&IdcRule> {
    let address = address.to_canonical();
    let mut best: Option<&IdcRule> = None;
    for rule in rules.iter().filter(|rule| rule.contains(address)) {
        if best.is_none_or(|best| rule.prefix_len > best.prefix_len) {
            best = Some(rule);
        }
    }
    best
}

/// Every data center the cluster knows, of its brokers and its IDC rules, sorted.
pub(super) fn known_idcs(groups: &BTreeMap<String, BrokerGroup>, rules: &[IdcRule]) -> BTreeSet<String> {
    groups
        .values()
        .flat_map(|group| group.members.values().map(|member| member.idc.clone()))
        .chain(rules.iter().map(|rule| rule.idc.clone()))
        .filter(|idc| !idc.is_empty())
        .collect()
}

/// The drill's rules, on the record the admin contract defines.
pub(super) trait DrillSteps {
    /// Starts a drill (see the implementation).
    fn evacuate(
        &mut self,
        now_ms: u64,
        idc: String,
        by: String,
        reason: Option<String>,
        groups: &BTreeMap<String, BrokerGroup>,
        rules: &[IdcRule],
    ) -> Result<(), CommandError>;
    /// Ends the drill (see the implementation).
    fn restore(&mut self, now_ms: u64, by: String, reason: Option<String>) -> Result<(), CommandError>;
    /// Records one step, dropping the oldest beyond [`DRILL_HISTORY_LEN`].
    fn record_step(&mut self, at_ms: u64, action: DrillAction, idc: String, by: String, reason: Option<String>);
}

impl DrillSteps for Drill {
    /// Starts a drill: moves all production and consumption out of `idc`, which the cluster must
    /// know, while a broker group elsewhere keeps taking writes.
    fn evacuate(
        &mut self,
        now_ms: u64,
        idc: String,
        by: String,
        reason: Option<String>,
        groups: &BTreeMap<String, BrokerGroup>,
        rules: &[IdcRule],
    ) -> Result<(), CommandError> {
        validate_idc(&idc)?;
        require_person("by", &by)?;
        match &self.evacuated {
            Some(evacuated) if *evacuated == idc => {
                return Err(CommandError::Drill {
                    message: format!(
                        "data center {idc:?} is already evacuated: `meridian drill restore` ends the drill"
                    ),
                });
            }
            Some(evacuated) => {
                return Err(CommandError::Drill {
                    message: format!(
                        "data center {evacuated:?} is evacuated: evacuating {idc:?} too would leave no data center serving; run `meridian drill restore` first"
                    ),
                });
            }
            None => {}
        }
        let known = known_idcs(groups, rules);
        if !known.contains(&idc) {
            return Err(CommandError::Drill {
                message: format!(
                    "no broker or IDC rule is in data center {idc:?}; the cluster knows {}",
                    if known.is_empty() {
                        "no data centers (brokers register theirs)".to_owned()
                    } else {
                        known
                            .iter()
                            .map(|idc| format!("{idc:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            });
        }
        let elsewhere: Vec<&str> = groups
            .values()
            .filter(|group| group.master.is_some() && group.idc() != idc)
            .map(|group| group.name.as_str())
            .collect();
        if elsewhere.is_empty() {
            return Err(CommandError::Drill {
                message: format!(
                    "evacuating {idc:?} would leave no broker group taking writes: no group has a master outside {idc:?} (see `meridian cluster status`)"
                ),
            });
        }
        self.evacuated = Some(idc.clone());
        self.record_step(now_ms, DrillAction::Evacuate, idc, by, reason);
        Ok(())
    }

    /// Ends the drill: both data centers serve again.
    fn restore(&mut self, now_ms: u64, by: String, reason: Option<String>) -> Result<(), CommandError> {
        require_person("by", &by)?;
        let Some(idc) = self.evacuated.take() else {
            return Err(CommandError::Drill {
                message:
                    "no data center is evacuated: nothing to restore (`meridian drill status` shows the drill history)"
                        .to_owned(),
            });
        };
        self.record_step(now_ms, DrillAction::Restore, idc, by, reason);
        Ok(())
    }

    fn record_step(&mut self, at_ms: u64, action: DrillAction, idc: String, by: String, reason: Option<String>) {
        self.steps.push(DrillStep {
            at_ms,
            action,
            idc,
            by,
            reason,
        });
        let excess = self.steps.len().saturating_sub(DRILL_HISTORY_LEN);
        self.steps.drain(..excess);
    }
}
