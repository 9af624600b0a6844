//! The agent's metric table: names to the small ids used on the wire.
//!
//! Ids are handed out in order of first sight and never reused while the agent runs,
//! so a batch waiting in the spool means the same thing on any later connection.

use std::collections::HashMap;

use ganglion_proto::msg::MetricMeta;

use crate::collect::Reading;

#[derive(Debug, Default)]
pub struct Registry {
    ids: HashMap<String, u32>,
    metas: Vec<MetricMeta>,
}

impl Registry {
    /// Every entry, for a hello.
    pub fn metas(&self) -> &[MetricMeta] {
        &self.metas
    }

    /// Whether `name` has an id.
    pub fn contains(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    /// The ids of a source's metrics: those named `<source>_…`.
    pub fn ids_of_source<'a>(&'a self, source: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.metas
            .iter()
            .filter(move |m| m.name.strip_prefix(source).is_some_and(|rest| rest.starts_with('_')))
            .map(|m| m.id)
    }

    /// Maps readings to `(id, value)` pairs; entries seen for the first time are
    /// appended to `defs` so the batch that first uses them also describes them.
    pub fn encode(&mut self, readings: &[Reading], defs: &mut Vec<MetricMeta>) -> Vec<(u32, f64)> {
        let mut values = Vec::with_capacity(readings.len());
        for r in readings {
            if !r.value.is_finite() {
                continue;
            }
            let id = match self.ids.get(r.name.as_ref()) {
                Some(id) => *id,
                None => {
                    let id = u32::try_from(self.metas.len()).unwrap_or(u32::MAX);
                    let meta = MetricMeta {
                        id,
                        name: r.name.clone().into_owned(),
                        unit: r.desc.unit.clone().into_owned(),
                        kind: r.desc.kind,
                        group: r.desc.group.clone().into_owned(),
                        description: r.desc.description.clone().into_owned(),
                    };
                    self.ids.insert(meta.name.clone(), id);
                    defs.push(meta.clone());
                    self.metas.push(meta);
                    id
                }
            };
            values.push((id, wire_value(r.value)));
        }
        values
    }
}

/// A reading as it is sent: integers as they are, anything else rounded to single
/// precision (about seven significant digits, finer than any rate or share the agent
/// measures), which the wire then carries in 5 bytes instead of 9.
fn wire_value(v: f64) -> f64 {
    if v.fract() == 0.0 || v.abs() > f64::from(f32::MAX) {
        v
    } else {
        f64::from(v as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sources_ids_are_its_prefixed_names_only() {
        let mut r = Registry::default();
        let reading = |name: &'static str| crate::collect::gauge(name, "", "g", "", 1.0);
        let names = ["exec_a_x", "exec_ab_x", "exec_a_up", "exec_a", "apache_up", "load_one"];
        r.encode(&names.map(reading), &mut Vec::new());
        assert_eq!(r.ids_of_source("exec_a").collect::<Vec<_>>(), [0, 2]);
        assert_eq!(r.ids_of_source("apache").collect::<Vec<_>>(), [4]);
        assert_eq!(r.ids_of_source("mysql").count(), 0);
    }

    #[test]
    fn rounds_fractions_to_single_precision_and_keeps_integers() {
        assert_eq!(wire_value(16_384_000.0), 16_384_000.0);
        assert_eq!(wire_value(1.0e15), 1.0e15);
        let v = wire_value(12.345_678_912_3);
        assert_eq!(f64::from(v as f32), v);
        assert!((v - 12.345_678_912_3).abs() < 1e-5);
        assert_eq!(wire_value(1e300), 1e300);
    }
}
