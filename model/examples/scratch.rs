use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use stateright::Model;
use lockcheck_model::systems::{self, NodeState, LeaseTable};
use lockcheck_model::systems::multi::{Combine, MultiInstance};

fn fp<T: Hash>(t: &T) -> u64 { let mut h = std::collections::hash_map::DefaultHasher::new(); t.hash(&mut h); h.finish() }

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args[1].as_str();
    let depth: usize = args[2].parse().unwrap();
    let model = systems::debug_model(which);
    let mut seen = HashSet::new();
    let mut frontier = model.init_states();
    for s in &frontier { seen.insert(fp(s)); }
    let mut actions = Vec::new();
    for d in 0..depth {
        let mut next = Vec::new();
        for s in &frontier {
            model.actions(s, &mut actions);
            for a in actions.drain(..) {
                if let Some(n) = model.next_state(s, a) {
                    if Model::within_boundary(&model, &n) && seen.insert(fp(&n)) { next.push(n); }
                }
            }
        }
        // stats
        let mut maxf = 0; let mut maxnet = 0;
        let mut example = None;
        for s in &next {
            for a in &s.actor_states { if let NodeState::Server(t) = &**a { let t: &LeaseTable = t; for sl in t.slots.values() { if sl.last_fence > maxf { maxf = sl.last_fence; example = Some(s.clone()); } } } }
            maxnet = maxnet.max(s.network.len());
        }
        println!("depth {} new {} total {} maxfence {} maxnet {}", d+1, next.len(), seen.len(), maxf, maxnet);
        if d + 1 == depth { if let Some(e) = example { println!("{e:#?}"); } }
        frontier = next;
        let _ = (Combine::Majority, MultiInstance{combine: Combine::Majority, ttl: false});
    }
}
