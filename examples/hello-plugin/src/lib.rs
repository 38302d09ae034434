//! A Weir plugin written from scratch: it adds a greeting header to every
//! response (configurable per route) and reports how many it greeted.
//!
//! Build with: `cargo build -p weir-example-hello-plugin --target wasm32-unknown-unknown --profile plugin`
//! and copy `target/wasm32-unknown-unknown/plugin/weir_example_hello_plugin.wasm`
//! to `plugins/hello.wasm`; `examples/quickstart/run.sh` does both.

use weir_sdk::{Plugin, Request, Response, ResponseAction};

/// The route's settings: `plugins = [{ name = "hello", config = { greeting = "hi" } }]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello from a Weir plugin".into()
}

#[derive(Default)]
struct Hello {
    greeting: String,
    greeted: u64,
}

#[weir_sdk::plugin]
impl Plugin for Hello {
    type Config = Config;
    type Ctx = ();

    fn configure(&mut self, config: Config) -> Result<(), String> {
        if config.greeting.is_empty() || config.greeting.len() > 200 {
            return Err("greeting must be 1 to 200 characters".into());
        }
        self.greeting = config.greeting;
        Ok(())
    }

    fn on_response(&mut self, _: &mut (), _: &Request, resp: &mut Response) -> ResponseAction {
        self.greeted += 1;
        let _ = resp.set_header("x-greeting", &self.greeting);
        ResponseAction::Pass
    }

    fn status(&self) -> String {
        format!(r#"{{"greeted":{}}}"#, self.greeted)
    }
}
