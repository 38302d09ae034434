//! Allocates 1 MiB blocks without bound in `on_request`: the instance's memory
//! limit must stop it (allocation failure aborts, which traps).
use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Bomb {
    hoard: Vec<Vec<u8>>,
}

#[weir_sdk::plugin]
impl Plugin for Bomb {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        loop {
            self.hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}
