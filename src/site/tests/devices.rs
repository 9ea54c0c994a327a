//! `devices:`: one adapter each, and points only for quantities the adapter produces.

use super::*;

#[test]
fn quantity_not_produced_names_the_device_and_what_it_produces() {
    let text = "\
site: s
gateway: g
devices:
  coldroom-1:
    sim: {kind: temperature}
    points:
      temprature: {unit: degC}
      temperature: {unit: degF}
";
    let errs = errors(text);
    assert_eq!(
            errs,
            vec!["site.yaml:7:7: devices.coldroom-1.points.temprature: device `coldroom-1` has no quantity `temprature` (it produces: temperature)"]
        );
}

#[test]
fn adapters_are_exactly_one_per_device() {
    let text = "\
site: s
gateway: g
devices:
  d1:
    points: {}
  d2:
    simm: {kind: level}
  d3:
    sim:
  d4:
    sim: {kind: temp, mean: 3}
  d5:
    sim: {kind: level, mean: 3}
";
    let errs = errors(text);
    // The list grows with every adapter; it is checked to start with `sim`.
    let kinds = AdapterConfig::KINDS.join(", ");
    assert!(kinds.starts_with("sim"), "{kinds}");
    assert_eq!(
            errs,
            vec![
                format!("site.yaml:4:3: devices.d1: no adapter configured; add one of: {kinds}"),
                format!("site.yaml:6:3: devices.d2: no adapter configured; add one of: {kinds}"),
                "site.yaml:7:5: devices.d2: unknown key `simm`; did you mean `sim`?".into(),
                "site.yaml:9:5: devices.d3.sim: missing required key `kind`".into(),
                "site.yaml:11:17: devices.d4.sim.kind: `temp` is not one of: temperature, level".into(),
                "site.yaml:13:24: devices.d5.sim: unknown key `mean` (valid keys: kind, interval, min, max, fill_time, drain_time, noise)".into(),
            ]
        );
}
