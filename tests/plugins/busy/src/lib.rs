//! A fixed amount of CPU work per `on_request` (`{ "iterations": N }`): a
//! well-behaved but heavy plugin, for CPU-time deadlines.
use weir_sdk::{Plugin, Request, RequestAction};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    iterations: u64,
}

#[derive(Default)]
struct Busy {
    iterations: u64,
    acc: u64,
}

#[weir_sdk::plugin]
impl Plugin for Busy {
    type Config = Config;
    type Ctx = ();

    fn configure(&mut self, config: Config) -> Result<(), String> {
        self.iterations = config.iterations;
        Ok(())
    }

    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        for i in 0..self.iterations {
            self.acc = std::hint::black_box(self.acc.wrapping_mul(31).wrapping_add(i));
        }
        RequestAction::Continue
    }
}
