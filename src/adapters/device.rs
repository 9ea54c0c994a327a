//! One entry of `devices:`: its id, exactly one adapter, and its points.

use std::collections::BTreeMap;

use super::AdapterConfig;
use crate::config::decode::{at_path, MapReader, Spanned};
use crate::config::template::id_problem;
use crate::normalize::config::{decode_point, PointConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub adapter: AdapterConfig,
    /// Keyed by quantity; a quantity the adapter produces but that is not listed gets defaults.
    pub points: BTreeMap<String, PointConfig>,
}

pub fn decode_device(id: Spanned<&str>, dev: &mut MapReader) -> Option<DeviceConfig> {
    let id_ok = match id_problem(id.value) {
        None => true,
        Some(p) => {
            let msg = at_path("devices", &p.replace("valid id", "valid device id"));
            dev.errors().push(id.pos, msg);
            false
        }
    };

    let mut adapter: Option<AdapterConfig> = None;
    let mut chosen: Option<&str> = None;
    for &kind in AdapterConfig::KINDS {
        if !dev.has(kind) {
            continue;
        }
        if let Some(first) = chosen {
            dev.key_error(
                kind,
                format!(
                    "device `{}` already has adapter `{first}`; a device has exactly one",
                    id.value
                ),
            );
            continue;
        }
        chosen = Some(kind);
        if let Some(mut section) = dev.map(kind) {
            adapter = AdapterConfig::decode(kind, &mut section);
        }
    }
    if chosen.is_none() {
        let msg = at_path(
            dev.path(),
            &format!(
                "no adapter configured; add one of: {}",
                AdapterConfig::KINDS.join(", ")
            ),
        );
        let pos = dev.pos();
        dev.errors().push(pos, msg);
    }

    let quantities = adapter.as_ref().map(AdapterConfig::quantities);
    let mut points = BTreeMap::new();
    let mut points_ok = true;
    if let Some(mut pm) = dev.map("points") {
        pm.for_each_map(|quantity, p| {
            if let Some(qs) = &quantities {
                if !qs.iter().any(|(q, _)| *q == quantity.value) {
                    let produced: Vec<&str> = qs.iter().map(|(q, _)| *q).collect();
                    let msg = at_path(
                        p.path(),
                        &format!(
                            "device `{}` has no quantity `{}` (it produces: {})",
                            id.value,
                            quantity.value,
                            produced.join(", ")
                        ),
                    );
                    p.errors().push(quantity.pos, msg);
                    points_ok = false;
                }
            }
            match decode_point(p) {
                Some(point) => {
                    points.insert(quantity.value.to_string(), point);
                }
                None => points_ok = false,
            }
        });
    }

    (id_ok && points_ok).then_some(())?;
    Some(DeviceConfig {
        id: id.value.to_string(),
        adapter: adapter?,
        points,
    })
}
