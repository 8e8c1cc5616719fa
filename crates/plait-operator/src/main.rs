//! `plait-operator`: the Kubernetes operator binary.

fn main() {
    print!("{}", plait_operator::crds_yaml());
}
