//! What the decision benchmarks share: the data snapshot of
//! `examples/data/` with the shipped config's providers.

use std::sync::Arc;

use switchyard::openmix::DataSnapshot;

/// The example data (probes, Fusion and Sonar feeds) as one snapshot.
pub fn example_data() -> Arc<DataSnapshot> {
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect(p)).expect(p)
    };
    let config = switchyard::config::Config::load(None, &Default::default()).expect("defaults");
    Arc::new(DataSnapshot {
        version: 1,
        probes: DataSnapshot::probes_from_json(&read("examples/data/probes.json")).expect("probes"),
        fusion: DataSnapshot::feed_from_json(&read("examples/data/fusion.json"), "fusion")
            .expect("fusion"),
        sonar: DataSnapshot::feed_from_json(&read("examples/data/sonar.json"), "sonar")
            .expect("sonar"),
        providers: config.providers,
        ..Default::default()
    })
}
