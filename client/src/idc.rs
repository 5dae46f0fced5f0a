//! The data center of a producer or consumer, decided by [`meridian_proto::idc`]'s rules with the
//! nameservers' IDC map as the last source.

use meridian_proto::idc::{DetectedIdc, IdcSettings, LocalIdc};

use crate::route::RouteSource;

/// Decides this client's data center from `settings`, asking `source` for the IDC map (and the
/// data centers the cluster knows, to warn about unknown names). Logs what it found as `who`.
pub(crate) async fn detect(source: &dyn RouteSource, settings: &IdcSettings, who: &str) -> DetectedIdc {
    let local = LocalIdc::read(settings);
    let (map, known) = match source.idc_lookup(settings.ip).await {
        Some((ip, answer)) => {
            let map = (!answer.idc.is_empty()).then_some((ip, answer.cidr, answer.idc));
            (map, answer.known_idcs)
        }
        None => (None, Vec::new()),
    };
    let mut detected = local.decide(map, &known);
    if detected.idc.is_empty() && !source.has_idc_map() {
        // A lone broker serves from one place: no data center to prefer, nothing to fix.
        detected
            .warnings
            .retain(|warning| !warning.starts_with("no data center is known"));
    }
    detected.log(who);
    detected
}
