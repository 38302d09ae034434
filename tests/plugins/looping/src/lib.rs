//! Loops forever in `on_request`: the epoch deadline must stop it.
use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Looping {
    spins: u64,
}

#[weir_sdk::plugin]
impl Plugin for Looping {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        loop {
            self.spins = std::hint::black_box(self.spins.wrapping_add(1));
        }
    }
}
